"""The fold's per-kind preparation and the records the rules hand it: what the command-line
compliance tests do not reach."""

from __future__ import annotations

from pathlib import Path

from ledger import demo, fold, keys, rules
from ledger.state import State
from ledger.statement import ZERO_HASH, decode
from ledger.store import Store
from tests.unit.test_rules import KERRY, SECOND, T0, TSMC, Book, book, register, sign

NOW = 1_780_000_000_000_000  # 2026-05-28, the demo's clock

__all__ = ["book"]  # the fixture, shared with the rules tests

NEWCO = keys.from_seed(bytes([42]) * 32)


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


def _folded(store: Store, *, records_from_rules: bool) -> State:
    state = State(origin=store.origin)
    for event in store.log(0):
        statement = decode(event.wire)
        records = rules.check(state, statement, event.index, 2**62)
        fold.apply(state, event.index, statement, records if records_from_rules else None)
    return state


def test_the_records_the_rules_looked_up_fold_exactly_as_a_lookup_would(tmp_path: Path) -> None:
    """`rules.check` hands the fold the units' records; the demo's ledger (every finding code, boards,
    shipments) folds to the same state with them as without."""
    result = demo.run(tmp_path / "demo", demo.plan(120, NOW), now_us=NOW)
    store = Store(str(result.db), readonly=True)
    try:
        given, looked_up = _folded(store, records_from_rules=True), _folded(store, records_from_rules=False)
    finally:
        store.close()
    assert given.units == looked_up.units and len(given.units) == 120
    assert given.findings == looked_up.findings and {f.code for f in given.findings} >= {
        "SKIPPED_INSPECTION", "UNDERPAID_DUTY", "DIVERSION", "CAP_EXCEEDED"}
    assert (given.customers, given.duty, given.signed) == (looked_up.customers, looked_up.duty, looked_up.signed)


def test_the_rules_return_the_records_of_a_later_steps_units_only(book: Book) -> None:
    fabricated = sign(TSMC, "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"}, [("Z1", ZERO_HASH)],
                      at=T0 + 50 * SECOND)
    assert rules.check(book.state, fabricated, book.size, T0 + 60 * SECOND) is None
    book.add(fabricated)
    shipped = sign(KERRY, "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"},
                   [("Z1", book.head("Z1")), ("A", book.head("A"))], at=T0 + 60 * SECOND)
    assert rules.check(book.state, shipped, book.size, T0 + 60 * SECOND) == [book.state.units["Z1"],
                                                                           book.state.units["A"]]
