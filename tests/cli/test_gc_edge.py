"""The cycle collector is the command's business, never the library's: `commands._gc` pauses it around
a whole-log fold; the library folds a log without touching it."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from commands import _gc
from ledger import demo, replay, verify, views
from ledger.store import Store

NOW = 1_780_000_000_000_000  # 2026-05-28, the demo's clock


def test_the_library_folds_a_whole_log_without_touching_the_collector(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = demo.run(tmp_path / "demo", demo.plan(24, NOW), now_us=NOW)
    store = Store(str(result.db))
    try:
        for name in ("disable", "enable", "freeze", "unfreeze", "set_threshold"):
            monkeypatch.setattr(gc, name, _refuse)
        report = verify.verify_store(store, verify.Options(as_of=NOW, now=NOW, workers=1))
        assert report.intact
        assert replay.replay(store, now_us=NOW, workers=1).state.size == report.log_size
        assert views.rebuild(store, NOW, workers=1).size == report.log_size
    finally:
        monkeypatch.undo()
        store.close()


def _refuse(*_args: object) -> None:
    raise AssertionError("the library changed the cycle collector's state")


class _Record:
    """Tracked by the cycle collector, as the fold's unit records are."""

    def __init__(self) -> None:
        self.me: object = None


def _young() -> set[int]:
    return {id(o) for generation in (0, 1) for o in gc.get_objects(generation=generation)}


def test_what_a_fold_kept_is_not_scanned_again_by_the_young_collections() -> None:
    enabled = gc.isenabled()
    with _gc.collector_paused():
        assert not gc.isenabled()
        kept = [_Record() for _ in range(1000)]
    assert gc.isenabled() == enabled
    young = _young()
    assert not any(id(record) in young for record in kept)
    assert gc.get_freeze_count() == 0


def test_a_cycle_made_during_a_fold_is_still_collected() -> None:
    with _gc.collector_paused():
        record = _Record()
        record.me = record
    alive = weakref.ref(record)
    del record
    assert alive() is not None  # a cycle: only the collector can free it
    gc.collect()
    assert alive() is None


def test_a_callers_frozen_objects_stay_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with _gc.collector_paused():
            _Record()
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
