"""The fold per kind, and its fast paths against the slow ones: what the command-line compliance tests do
not reach."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import append, driver, fold, keys, replay, views
from ledger.state import State
from ledger.statement import KINDS
from tests.cli.test_replay import admin_ops, played, snapshot, step_ops
from tests.unit.test_rules import SECOND, T0, Book, book, register, sign

__all__ = ["book"]  # the fixture, shared with the rules tests

NEWCO = keys.from_seed(bytes([42]) * 32)


def test_every_kind_has_its_own_fold() -> None:
    assert set(fold.FOLDS) == set(KINDS)
    assert len(set(fold.FOLDS.values())) == len(KINDS)


def test_received_by_a_participant_without_a_customer_record_creates_one(book: Book) -> None:
    book.add(register("newco", "customer", NEWCO))
    assert "newco" not in book.state.customers
    book.add(sign(NEWCO, "received", {"site": "S"}, [("A", book.head("A"))], at=T0 + 30 * SECOND))
    customer = book.state.customers["newco"]
    assert (customer.received, customer.approved, customer.consigned) == (1, False, 0)
    codes = [f.code for f in book.state.findings if f.serial == "A"]
    assert codes == ["NOT_ROUTED_VIA_US", "SKIPPED_INSPECTION", "SKIPPED_DUTY", "SKIPPED_EXPORT"]
    book.add(sign(NEWCO, "received", {"site": "S"}, [("A", book.head("A"))], at=T0 + 40 * SECOND))
    assert book.state.customers["newco"].received == 1  # a unit counts once
    assert book.state.units["A"].links == 3


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(step_ops, step_ops, step_ops, admin_ops), min_size=4, max_size=24))
def test_the_fast_paths_fold_to_what_the_slow_path_does(ops: list[tuple[Any, ...]]) -> None:
    """Three ways to one state: the writers' views (each writer folds onto the few rows its statement
    touches), the pipeline (signatures verified in worker processes, the rules skipping them), and the
    slow path: every statement decoded, checked (its signature too) and folded in one process, in order."""
    with played(ops) as scenario:
        now = append.now_us()
        slow = State(origin=scenario.store.origin)
        for _ in driver.admit_log(scenario.store, slow, driver.reader_clock(now)):
            pass
        expected = snapshot(slow)
        assert expected == scenario.snapshots[-1]  # the views
        assert snapshot(replay.replay(scenario.store, now_us=now, workers=2).state) == expected
        assert snapshot(views.load_full(scenario.store)) == expected
