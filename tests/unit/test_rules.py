"""Each hard rule of DESIGN.md, at the library level: `rules.check` raises the error naming the right check.

A small ledger is folded in memory (genesis, four registrations, an approval, two units fabricated), then
each probe is a statement that breaks exactly one rule. Every probe is paired with the valid statement it
was made from, which must pass; and a refused statement leaves the state as it was.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger import errors, fold, keys, rules
from ledger.errors import IntegrityError
from ledger.keys import PrivateKey
from ledger.policy import DEFAULT_POLICY_TEXT
from ledger.state import State
from ledger.statement import ZERO_HASH, Statement, assemble, encode_body, signed_message

ORIGIN = "custody.test/rules"
T0 = 1_767_225_600_000_000
SECOND = 1_000_000
NOW = T0 + 3600 * SECOND  # the appender's or verifier's clock in these tests

# Points of small order (RFC 8032 encodings): the identity, and a point of order 8.
IDENTITY = (1).to_bytes(32, "little")
ORDER_8 = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")


def _key(n: int) -> PrivateKey:
    return keys.from_seed(bytes([n]) * 32)


AUTHORITY, OPERATOR, TSMC, KERRY, ALIBABA, ROGUE, CO_AUTHORITY = (_key(i) for i in range(1, 8))


def sign(
    key: PrivateKey,
    kind: str,
    data: dict[str, Any],
    units: list[tuple[str, bytes]] | None = None,
    at: int = T0 + 100 * SECOND,
    origin: str = ORIGIN,
    signer: str | None = None,
) -> Statement:
    body = encode_body(
        origin=origin, kind=kind, at=at, signer=signer or key.key_id, units=units or [], data=data
    )
    return assemble(body, key.sign(signed_message(body)))


def genesis(
    authorities: list[bytes] | None = None,
    signer: PrivateKey = AUTHORITY,
    policy: str = DEFAULT_POLICY_TEXT,
    operator: bytes | None = None,
) -> Statement:
    return sign(
        signer,
        "ledger_opened",
        {
            "authorities": authorities or [AUTHORITY.public, CO_AUTHORITY.public],
            "operator": operator or OPERATOR.public,
            "policy": policy,
        },
        at=T0,
    )


def register(pid: str, role: str, key: PrivateKey | bytes, signer: PrivateKey = AUTHORITY) -> Statement:
    public = key if isinstance(key, bytes) else key.public
    return sign(
        signer,
        "participant_registered",
        {"id": pid, "name": pid, "country": "US", "roles": [role], "key": public},
        at=T0 + SECOND,
    )


class Book:
    """A ledger folded in memory, as `verify` folds it."""

    def __init__(self) -> None:
        self.state = State(origin=ORIGIN)
        self.size = 0

    def add(self, statement: Statement, now: int = NOW) -> None:
        rules.check(self.state, statement, self.size, now)
        fold.apply(self.state, self.size, statement)
        self.size += 1

    def check(self, statement: Statement, now: int = NOW, **kw: Any) -> None:
        rules.check(self.state, statement, self.size, now, **kw)

    def head(self, serial: str) -> bytes:
        return self.state.units[serial].head


@pytest.fixture
def book() -> Book:
    b = Book()
    b.add(genesis())
    b.add(register("tsmc", "fab", TSMC))
    b.add(register("kerry", "carrier", KERRY))
    b.add(register("alibaba", "customer", ALIBABA))
    b.add(sign(AUTHORITY, "customer_approved", {"id": "alibaba", "cap": 10, "license": "L"}))
    b.add(
        sign(
            TSMC,
            "fabricated",
            {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
            [("A", ZERO_HASH), ("B", ZERO_HASH)],
            at=T0 + 10 * SECOND,
        )
    )
    return b


def ship(
    book: Book,
    serials: list[str] | None = None,
    key: PrivateKey = KERRY,
    at: int = T0 + 20 * SECOND,
    prev: bytes | None = None,
    origin: str = ORIGIN,
) -> Statement:
    serials = serials or ["A"]
    units = [
        (s, prev if prev is not None else (book.head(s) if s in book.state.units else ZERO_HASH))
        for s in serials
    ]
    return sign(key, "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"}, units, at=at, origin=origin)


def _snapshot(state: State) -> Any:
    return (
        state.authority_row(),
        {s: u.to_row() for s, u in state.units.items()},
        {c: v.to_row() for c, v in state.customers.items()},
        list(state.findings),
        dict(state.signed),
    )


def _expect(book: Book, statement: Statement, error: type[IntegrityError], check: str, **kw: Any) -> None:
    before = _snapshot(book.state)
    with pytest.raises(error) as raised:
        book.check(statement, **kw)
    assert raised.value.check == check
    assert raised.value.index == book.size
    assert f"{check} at index {book.size}" in str(raised.value)
    assert _snapshot(book.state) == before  # a refused statement changes nothing


def test_the_valid_step_passes(book: Book) -> None:
    book.add(ship(book))
    assert book.state.units["A"].step == "shipped_to_us"


# --- origin -------------------------------------------------------------------------------------------


def test_origin(book: Book) -> None:
    _expect(book, ship(book, origin="custody.test/other"), errors.OriginMismatch, "origin")


# --- genesis_trust ------------------------------------------------------------------------------------


def test_index_0_must_be_ledger_opened() -> None:
    b = Book()
    with pytest.raises(errors.GenesisUntrusted):
        b.check(register("tsmc", "fab", TSMC))


def test_genesis_signed_by_a_key_not_among_its_authorities() -> None:
    b = Book()
    with pytest.raises(errors.GenesisUntrusted) as raised:
        b.check(genesis(signer=ROGUE))
    assert raised.value.index == 0


def test_genesis_signed_by_a_co_authority_is_fine() -> None:
    Book().check(genesis(signer=CO_AUTHORITY))


def test_a_second_ledger_opened(book: Book) -> None:
    _expect(book, genesis(), errors.GenesisUntrusted, "genesis_trust")


def test_trusted_genesis() -> None:
    Book().check(genesis(), trusted=[AUTHORITY.public, CO_AUTHORITY.public])


@pytest.mark.parametrize("trusted", [[ROGUE.public], [AUTHORITY.public], []])
def test_untrusted_genesis(trusted: list[bytes]) -> None:
    """With --trust, every genesis authority must be trusted (here CO_AUTHORITY is not, or neither)."""
    with pytest.raises(errors.GenesisUntrusted):
        Book().check(genesis(), trusted=trusted)


def test_genesis_with_a_small_order_operator() -> None:
    with pytest.raises(errors.SignerUnknown):
        Book().check(genesis(operator=IDENTITY))


def test_genesis_with_a_malformed_policy() -> None:
    with pytest.raises(errors.EncodingInvalid):
        Book().check(genesis(policy="duty_rate_bp = 'lots'"))


# --- signature ----------------------------------------------------------------------------------------


def test_signature(book: Book) -> None:
    good = ship(book)
    forged = assemble(good.body, ALIBABA.sign(signed_message(good.body)))  # the wrong key's signature
    _expect(book, forged, errors.SignatureInvalid, "signature")


def test_signature_check_can_be_left_to_a_worker(book: Book) -> None:
    good = ship(book)
    forged = assemble(good.body, bytes(64))
    book.check(forged, verified=KERRY.public)  # a worker vouched for the signer's key: every other rule passes
    with pytest.raises(errors.SignatureInvalid):
        book.check(forged, verified=ALIBABA.public)  # vouched for another key: verified here, and refused


def test_genesis_signature(book: Book) -> None:
    good = genesis()
    with pytest.raises(errors.SignatureInvalid):
        Book().check(assemble(good.body, bytes(64)))


# --- signer -------------------------------------------------------------------------------------------


def test_unregistered_signer(book: Book) -> None:
    _expect(book, ship(book, key=ROGUE), errors.SignerUnknown, "signer")


def test_the_operator_key_signs_no_statement(book: Book) -> None:
    _expect(book, ship(book, key=OPERATOR), errors.SignerUnknown, "signer")


def test_registering_a_small_order_key(book: Book) -> None:
    for bad in (IDENTITY, ORDER_8):
        _expect(book, register("evil", "fab", bad), errors.SignerUnknown, "signer")


def test_registering_another_participants_key(book: Book) -> None:
    _expect(book, register("kerry2", "carrier", TSMC), errors.SignerUnknown, "signer")


def test_registering_an_authority_key_to_a_participant(book: Book) -> None:
    _expect(book, register("evil", "fab", CO_AUTHORITY), errors.SignerUnknown, "signer")


def test_a_participant_may_add_a_key_and_change_roles(book: Book) -> None:
    book.add(register("kerry", "fab", ROGUE))  # a second key for kerry; roles replaced
    _expect(book, ship(book, key=KERRY), errors.RoleMissing, "role")


def test_revoking_an_unknown_key(book: Book) -> None:
    revoke = sign(AUTHORITY, "key_revoked", {"key": ROGUE.public, "effective": T0, "reason": ""})
    _expect(book, revoke, errors.SignerUnknown, "signer")


# --- role ---------------------------------------------------------------------------------------------


def test_participant_without_the_role(book: Book) -> None:
    _expect(book, ship(book, key=TSMC), errors.RoleMissing, "role")


def test_participant_signing_an_administrative_statement(book: Book) -> None:
    approve = sign(ALIBABA, "customer_approved", {"id": "alibaba", "cap": 1000, "license": "L"})
    _expect(book, approve, errors.RoleMissing, "role")


def test_authority_signing_a_step(book: Book) -> None:
    _expect(book, ship(book, key=AUTHORITY), errors.RoleMissing, "role")


# --- revocation ---------------------------------------------------------------------------------------


def _revoke(book: Book, key: PrivateKey, effective: int = T0) -> None:
    book.add(sign(AUTHORITY, "key_revoked", {"key": key.public, "effective": effective, "reason": "lost"}))


def test_revoked_key(book: Book) -> None:
    _revoke(book, KERRY)
    _expect(book, ship(book), errors.KeyRevoked, "revocation")


def test_revoked_key_is_refused_whatever_its_effective_time(book: Book) -> None:
    _revoke(book, KERRY, effective=NOW * 2)  # effective in the future: still refused once logged
    _expect(book, ship(book), errors.KeyRevoked, "revocation")


def test_revoked_authority_key(book: Book) -> None:
    _revoke(book, CO_AUTHORITY)
    approve = sign(CO_AUTHORITY, "customer_suspended", {"id": "alibaba", "reason": "r"})
    _expect(book, approve, errors.KeyRevoked, "revocation")


def test_revocation_acts_on_what_follows_only(book: Book) -> None:
    """Statements logged before the revocation stay valid; with `at` ≥ effective they are flagged."""
    book.add(ship(book, at=T0 + 50 * SECOND))
    _revoke(book, KERRY, effective=T0 + 40 * SECOND)
    flagged = [f for f in book.state.findings if f.code == "SIGNED_AFTER_REVOCATION"]
    assert [(f.serial, f.index) for f in flagged] == [("A", 6)]


# --- chain --------------------------------------------------------------------------------------------


def test_stale_prev(book: Book) -> None:
    first = ship(book)
    book.add(first)
    replay = sign(
        KERRY,
        "shipped_to_us",
        {"port_of_entry": "DFW", "waybill": "W2"},
        [("A", first.units[0][1])],
        at=T0 + 30 * SECOND,
    )  # links to A's previous head: a fork
    _expect(book, replay, errors.ChainBroken, "chain")


def test_replayed_statement(book: Book) -> None:
    first = ship(book)
    book.add(first)
    _expect(book, first, errors.ChainBroken, "chain")


def test_prev_of_an_unknown_hash(book: Book) -> None:
    _expect(book, ship(book, prev=b"\x07" * 32), errors.ChainBroken, "chain")


def test_step_of_a_unit_with_no_chain(book: Book) -> None:
    _expect(book, ship(book, serials=["NEW"]), errors.ChainBroken, "chain")


def test_second_fabricated(book: Book) -> None:
    again = sign(
        TSMC,
        "fabricated",
        {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
        [("A", ZERO_HASH)],
        at=T0 + 30 * SECOND,
    )
    _expect(book, again, errors.ChainBroken, "chain")


def test_fabricated_with_a_non_zero_prev(book: Book) -> None:
    odd = sign(
        TSMC,
        "fabricated",
        {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
        [("C", b"\x01" * 32)],
        at=T0 + 30 * SECOND,
    )
    _expect(book, odd, errors.ChainBroken, "chain")


def test_one_bad_unit_refuses_the_whole_statement(book: Book) -> None:
    """A and B in one statement; B's prev is stale: nothing of it is applied."""
    units = [("A", book.head("A")), ("B", b"\x02" * 32)]
    statement = sign(
        KERRY, "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"}, units, at=T0 + 20 * SECOND
    )
    _expect(book, statement, errors.ChainBroken, "chain")


# --- time ---------------------------------------------------------------------------------------------


def test_at_before_the_units_previous_at(book: Book) -> None:
    _expect(book, ship(book, at=T0 + 10 * SECOND - 1), errors.TimeInvalid, "time")


def test_at_equal_to_the_previous_at_is_fine(book: Book) -> None:
    book.check(ship(book, at=T0 + 10 * SECOND))


def test_at_more_than_five_minutes_ahead(book: Book) -> None:
    _expect(book, ship(book, at=NOW + rules.MAX_CLOCK_SKEW_US + 1), errors.TimeInvalid, "time")


def test_at_exactly_five_minutes_ahead_is_fine(book: Book) -> None:
    book.check(ship(book, at=NOW + rules.MAX_CLOCK_SKEW_US))


def test_future_administrative_statement(book: Book) -> None:
    late = sign(AUTHORITY, "customer_suspended", {"id": "alibaba", "reason": "r"}, at=NOW + 10**9)
    _expect(book, late, errors.TimeInvalid, "time")


# --- encoding (the rules' part: recorded policies) ------------------------------------------------------


def test_malformed_policy_issued(book: Book) -> None:
    bad = sign(AUTHORITY, "policy_issued", {"policy": "no_such_key = 1"})
    _expect(book, bad, errors.EncodingInvalid, "encoding")


def test_valid_policy_issued(book: Book) -> None:
    book.add(sign(AUTHORITY, "policy_issued", {"policy": DEFAULT_POLICY_TEXT.replace("2500", "3000")}))
    assert book.state.policy.duty_rate_bp == 3000


# --- the order of the checks: the first broken rule is the one named -------------------------------------


def test_origin_is_checked_before_the_signer(book: Book) -> None:
    _expect(book, ship(book, key=ROGUE, origin="custody.test/other"), errors.OriginMismatch, "origin")


def test_signer_is_checked_before_the_chain(book: Book) -> None:
    _expect(book, ship(book, key=ROGUE, prev=b"\x09" * 32), errors.SignerUnknown, "signer")


def test_check_names_match_design() -> None:
    assert {
        cls.check
        for cls in (
            errors.EncodingInvalid,
            errors.OriginMismatch,
            errors.GenesisUntrusted,
            errors.SignatureInvalid,
            errors.SignerUnknown,
            errors.RoleMissing,
            errors.KeyRevoked,
            errors.ChainBroken,
            errors.TimeInvalid,
            errors.LogIndexInvalid,
            errors.UnitLinksInvalid,
            errors.CheckpointSignatureInvalid,
            errors.RootMismatch,
            errors.CheckpointInconsistent,
            errors.CosignatureMissing,
        )
    } == {
        "encoding",
        "origin",
        "genesis_trust",
        "signature",
        "signer",
        "role",
        "revocation",
        "chain",
        "time",
        "log_index",
        "unit_links",
        "checkpoint_signature",
        "checkpoint_root",
        "checkpoint_consistency",
        "cosignature",
    }


def test_small_order_keys_are_detected() -> None:
    assert rules.is_small_order(IDENTITY) and rules.is_small_order(ORDER_8)
    assert not rules.is_small_order(AUTHORITY.public)
