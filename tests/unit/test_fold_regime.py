"""Properties of the fold over random histories that use issue 17's kinds (terminal steps, locations,
declarations, policies with and without the optional keys): the same state through the views, replay and
verify; a terminal unit is never OVERDUE nor ATTESTATION_OVERDUE; AFTER_TERMINAL at most once per unit,
never beside OUT_OF_ORDER at the same statement."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import append, fold, replay, views
from ledger import verify as verification
from tests.cli.test_replay import admin_ops, played, snapshot, step_ops

FAR = 2**50  # a report time long after every statement: everything that can be overdue is

regime_steps = st.tuples(st.just("step"), st.sampled_from(["located", "destroyed", "withdrawn"]),
                         st.lists(st.sampled_from(("P1", "P2", "P3")), min_size=1, max_size=3, unique=True),
                         st.integers(0, 2))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(step_ops, step_ops, regime_steps, admin_ops), min_size=4, max_size=24))
def test_views_replay_and_verify_fold_to_one_state(ops: list[tuple[Any, ...]]) -> None:
    with played(ops) as scenario:
        now = append.now_us()
        views_state = views.load_full(scenario.store)
        expected = snapshot(views_state)
        assert expected == scenario.snapshots[-1]
        assert snapshot(views.current(scenario.store, now)) == expected
        assert snapshot(replay.replay(scenario.store, now_us=now, workers=1).state) == expected
        report = verification.verify_store(scenario.store, verification.Options(now=now, as_of=now))
        assert report.intact
        assert snapshot(report.state) == expected
        _check_terminal(views_state)


def _check_terminal(state: Any) -> None:
    timed = fold.timed(state, FAR)
    ended = {serial for serial, unit in state.units.items() if unit.terminal is not None}
    assert not [f for f in timed if f.serial in ended]  # a terminal unit is never (attestation-)overdue
    after = Counter(f.serial for f in state.findings if f.code == "AFTER_TERMINAL")
    assert all(n == 1 for n in after.values())  # once per unit
    assert set(after) <= ended
    at_statement = {(f.serial, f.index) for f in state.findings if f.code == "AFTER_TERMINAL"}
    assert not [f for f in state.findings if f.code == "OUT_OF_ORDER" and (f.serial, f.index) in at_statement]
    for unit in state.units.values():  # counted under the terminal step in `report units`
        if unit.terminal is not None:
            assert unit.terminal in ("destroyed", "withdrawn")
