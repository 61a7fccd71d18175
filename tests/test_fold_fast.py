"""The fold's per-kind preparation: a case the command-line compliance tests do not reach."""

from __future__ import annotations

from ledger import keys
from tests.test_rules import SECOND, T0, Book, book, register, sign

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
