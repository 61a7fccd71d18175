"""The stored events are `eventsourcing` events: the library's own repository reconstructs the aggregates.

Writers build stored events directly (`ledger.store.codec`) for speed; these tests read them back through
`Application.repository.get`, on both stores, and compare with what the ledger says.
"""

from __future__ import annotations

from ledger.aggregates import Checkpoints, Log, Unit
from ledger.application import LedgerApplication
from ledger.statement import decode
from ledger.store import Store
from ledger.store.codec import checkpoints_id, log_id, unit_id
from tests.conftest import ORIGIN, Ledger


def test_a_unit_reconstructs_through_the_library_repository(ledger: Ledger) -> None:
    ledger.full_flow(["AGG-1", "AGG-2"])
    ledger.full_flow(["AGG-3"])
    with Store(ledger.db, readonly=True) as store:
        application = LedgerApplication(store)
        unit = application.repository.get(unit_id(ORIGIN, "AGG-1"))
        assert isinstance(unit, Unit)
        assert unit.serial == "AGG-1" and unit.version == 6
        expected = [(link["index"], link["hash"]) for link in store.unit_links("AGG-1")]
        assert unit.links == expected
        statements = {event.index: decode(event.wire) for event in store.log()}
        assert [statements[index].hash for index, _ in unit.links] == [h for _, h in unit.links]
        assert [statements[index].kind for index, _ in unit.links] == [
            "fabricated", "shipped_to_us", "inspected", "duty_paid", "re_exported", "received"]
        other = application.repository.get(unit_id(ORIGIN, "AGG-2"))
        assert isinstance(other, Unit) and other.version == 6 and other.links == unit.links  # one statement each
        third = application.repository.get(unit_id(ORIGIN, "AGG-3"))
        assert isinstance(third, Unit) and third.serial == "AGG-3" and third.links[0][0] > unit.links[-1][0]


def test_the_log_and_checkpoints_reconstruct_too(ledger: Ledger) -> None:
    ledger.record("fabricated", "tsmc", ["AGG-3"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                  ok=True)
    ledger.cli("checkpoint", "--key", ledger.key("operator"), ok=True)
    with Store(ledger.db, readonly=True) as store:
        application = LedgerApplication(store)
        log = application.repository.get(log_id(ORIGIN))
        assert isinstance(log, Log)
        assert log.version == store.size()
        assert log.wires == [event.wire for event in store.log()]
        assert log.range == store.head().range  # type: ignore[union-attr]
        notes = application.repository.get(checkpoints_id(ORIGIN))
        assert isinstance(notes, Checkpoints)
        assert notes.notes == [note for _, _, note in store.checkpoints()]
