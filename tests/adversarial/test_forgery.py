"""Forgery: statements that someone without the right key, role or standing tries to get into the ledger.

Each forgery is tried at append (through a `Batch`, the writer's one door, and through the CLI where the
CLI can express it) and in verification (a database administrator writing it straight into the stored
log with `Store.write`, bypassing every check, or a bundle carrying it). Append must refuse it and write
nothing; `verify` must fail naming the check and the index. The business rule among them (a `received`
signed by a customer other than the consignee) is evidence, not forgery: recorded with
`--allow-violation`, flagged `DIVERSION`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nacl.signing import VerifyKey

from ledger import append, errors, statement
from ledger.errors import IntegrityError
from ledger.keys import PrivateKey
from ledger.statement import signed_message
from ledger.store import Store
from ledger.store.codec import stored_log_event, stored_unit_link
from tests.adversarial.test_tamper import (
    MEDIUM,
    ORIGIN,
    STEP_SECONDS,
    T0,
    Built,
    EventTable,
    _url,
    assert_fails,
    build_ledger,
    bundle_of,
    failed,
    sign_note,
    verify_bytes,
    verify_url,
)
from tests.conftest import PG_ENV, Ledger

ED25519_L = 2**252 + 27742317777372353535851937790883648493  # RFC 8032 §5.1: the group order


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    return str(request.param)


@pytest.fixture
def built(store_kind: str, tmp_path: Path) -> Built:
    """28 statements: genesis, registrations 1–7, approvals 8–9, shipments 10–15, 16–21, 22–27."""
    return build_ledger(_url(store_kind, tmp_path, "forgery"), **MEDIUM)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The same ledger, made once per store for the tests that leave it as they found it."""
    if request.param == "postgres" and not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    return build_ledger(_url(str(request.param), tmp_path_factory.mktemp("shared"), "shared"), **MEDIUM)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The ledger for bundle tests: bundles do not depend on the store they came from."""
    return build_ledger(str(tmp_path_factory.mktemp("offline") / "offline.db"), **MEDIUM)  # type: ignore[arg-type]


@pytest.fixture
def store(built: Built) -> Iterator[Store]:
    with Store(built.url) as opened:
        yield opened


@pytest.fixture
def shared_store(shared: Built) -> Iterator[Store]:
    with Store(shared.url) as opened:
        yield opened


def _heads(store: Store, serials: list[str]) -> list[tuple[str, bytes]]:
    return append.Batch(store).heads(serials)


AT = T0 + 100 * STEP_SECONDS  # after everything build_ledger wrote


def _step(
    store: Store,
    key: PrivateKey,
    kind: str = "received",
    serials: tuple[str, ...] = ("U0002-0",),
    origin: str = ORIGIN,
    at: int = AT,
    **data: Any,
) -> statement.Statement:
    fields = {
        "received": {"site": "Hangzhou"},
        "fabricated": {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
        "shipped_to_us": {"port_of_entry": "DFW", "waybill": "W"},
        "customer_approved": {"id": "alibaba", "cap": 5, "license": "L"},
    }[kind]
    units = [] if kind == "customer_approved" else _heads(store, list(serials))
    if kind == "fabricated":
        units = [(s, statement.ZERO_HASH) for s in serials]
    return append.sign_statement(key, origin=origin, kind=kind, at=at, units=units, data={**fields, **data})


def _malleate(signature: bytes) -> bytes:
    """S + L: the same signature's other encoding, which RFC 8032 §5.1.7 and libsodium reject."""
    s = int.from_bytes(signature[32:], "little") + ED25519_L
    return signature[:32] + s.to_bytes(32, "little")


def _resign(body: bytes, key: PrivateKey) -> bytes:
    """A correctly signed wire form around `body`, whatever `body` is."""
    return msgpack.packb([body, key.sign(signed_message(body))], use_bin_type=True)  # type: ignore[no-any-return]


def _body_fields(st: statement.Statement) -> dict[str, Any]:
    return msgpack.unpackb(st.body, raw=False)  # type: ignore[no-any-return]


def _noncanonical(kind: str, st: statement.Statement, key: PrivateKey) -> bytes:
    """The statement's body encoded another way, and validly signed: the signature does not save it."""
    fields = _body_fields(st)
    if kind == "unsorted map":
        body = msgpack.packb(dict(reversed(list(fields.items()))), use_bin_type=True)
    elif kind == "non-minimal integer":
        body = st.body.replace(b"\xa1v\x01", b"\xa1v\xcc\x01")  # v = 1 as uint8
    elif kind == "float":
        body = msgpack.packb({**fields, "at": float(fields["at"])}, use_bin_type=True)
    elif kind == "extension type":
        body = msgpack.packb({**fields, "data": {"site": msgpack.ExtType(5, b"Hangzhou")}}, use_bin_type=True)
    elif kind == "bin for text":
        body = msgpack.packb({**fields, "data": {"site": b"Hangzhou"}}, use_bin_type=True)
    else:  # pragma: no cover
        raise AssertionError(kind)
    assert body != st.body
    return _resign(body, key)


NONCANONICAL = ["unsorted map", "non-minimal integer", "float", "extension type", "bin for text"]


# --- the forgeries, each a wire form and the check it must fail ----------------------------------------


def _forgeries(built: Built, store: Store) -> dict[str, tuple[bytes, str]]:
    ks = built.keys
    out: dict[str, tuple[bytes, str]] = {
        "unregistered key": (_step(store, ks["rogue"]).wire, "signer"),
        "key without the role": (_step(store, ks["kerry"]).wire, "role"),
        "participant signing an administrative statement": (
            _step(store, ks["alibaba"], "customer_approved").wire,
            "role",
        ),
        "another ledger's origin": (_step(store, ks["alibaba"], origin="custody.test/other").wire, "origin"),
        "replayed statement (stale prev)": (built.wires[27], "chain"),
        "fork of a unit (its previous head as prev)": (_fork(built, store), "chain"),
        "second fabricated": (_step(store, ks["tsmc"], "fabricated", ("U0001-1",)).wire, "chain"),
        "a step of a unit that has no chain": (
            _step(store, ks["kerry"], "shipped_to_us", ("GHOST",)).wire,
            "chain",
        ),
        "at before the unit's previous at": (_step(store, ks["alibaba"], at=T0).wire, "time"),
        "at in the future": (_step(store, ks["alibaba"], at=append.now_us() + 3600 * 10**6).wire, "time"),
    }
    genuine = _step(store, ks["alibaba"])
    out["malleated signature (S + L)"] = (
        msgpack.packb([genuine.body, _malleate(genuine.signature)], use_bin_type=True),
        "signature",
    )
    out["signature of another body"] = (
        msgpack.packb([genuine.body, built.wires[27][-64:]], use_bin_type=True),
        "signature",
    )
    for kind in NONCANONICAL:
        out[f"non-canonical body: {kind}"] = (_noncanonical(kind, genuine, ks["alibaba"]), "encoding")
    out["non-canonical wire: bin16 body header"] = (
        b"\x92\xc5" + len(genuine.body).to_bytes(2, "big") + genuine.body + b"\xc4\x40" + genuine.signature,
        "encoding",
    )
    return out


def _fork(built: Built, store: Store) -> bytes:
    """A `received` for U0002-0 that links to the unit's `re_exported`'s predecessor: a fork."""
    prev = statement.decode(built.wires[25]).units[0][1]  # 25's prev: the hash of 24
    return append.sign_statement(
        built.keys["alibaba"],
        origin=ORIGIN,
        kind="received",
        at=AT,
        units=[("U0002-0", prev)],
        data={"site": "Hangzhou"},
    ).wire


FORGERIES = [
    "unregistered key",
    "key without the role",
    "participant signing an administrative statement",
    "another ledger's origin",
    "replayed statement (stale prev)",
    "fork of a unit (its previous head as prev)",
    "second fabricated",
    "a step of a unit that has no chain",
    "at before the unit's previous at",
    "at in the future",
    "malleated signature (S + L)",
    "signature of another body",
    *[f"non-canonical body: {k}" for k in NONCANONICAL],
    "non-canonical wire: bin16 body header",
]


def test_the_genuine_statement_the_forgeries_start_from_is_accepted(built: Built, store: Store) -> None:
    genuine = _step(store, built.keys["alibaba"])
    VerifyKey(built.keys["alibaba"].public).verify(signed_message(genuine.body), genuine.signature)
    batch = append.Batch(store)
    batch.add(genuine)
    batch.commit()
    assert verify_url(built.url).intact


def test_the_malleated_signature_is_the_same_signature_mod_l(built: Built, store: Store) -> None:
    genuine = _step(store, built.keys["alibaba"])
    forged = _malleate(genuine.signature)
    assert forged != genuine.signature
    assert int.from_bytes(forged[32:], "little") % ED25519_L == int.from_bytes(
        genuine.signature[32:], "little"
    )


@pytest.mark.parametrize("name", FORGERIES)
def test_forgery_is_refused_at_append(shared: Built, shared_store: Store, name: str) -> None:
    built, store = shared, shared_store
    wire, check = _forgeries(built, store)[name]
    size = store.size()
    batch = append.Batch(store)
    with pytest.raises(IntegrityError) as raised:
        batch.add(statement.decode(wire))  # decoding is the first gate: non-canonical bytes stop there
        batch.commit()
    assert raised.value.check == check, str(raised.value)
    assert raised.value.index in (None, size)
    assert store.size() == size
    assert verify_url(built.url).intact


def _write_raw(built: Built, store: Store, wire: bytes) -> int:
    """What a database administrator can do: store a statement (and its unit links) with no check at all."""
    index = store.size()
    head = store.head()
    assert head is not None
    now = datetime.now(UTC)
    events = [stored_log_event(ORIGIN, index, wire, list(head.range), now)]
    try:
        st = statement.decode(wire)
    except IntegrityError:
        st = None
    if st is not None:
        for serial, _ in st.units:
            links = len(store.unit_links(serial))
            events.append(stored_unit_link(ORIGIN, serial, links + 1, index, st.hash, st.at, now))
    store.write(events)
    return index


def _remove_raw(built: Built, index: int) -> None:
    """Take back what `_write_raw` stored at `index`: its log event and its unit links."""
    table = EventTable(built.url)
    try:
        for row in table.log():
            if row.version == index + 1:
                table.delete(row)
        for link in table.links():
            if link.decoded["index"] == index:
                table.delete(link)
    finally:
        table.close()


@pytest.mark.parametrize("name", FORGERIES)
def test_forgery_written_into_the_database_fails_verify(
    shared: Built, shared_store: Store, name: str
) -> None:
    built, store = shared, shared_store
    wire, check = _forgeries(built, store)[name]
    index = _write_raw(built, store, wire)
    try:
        report = verify_url(built.url)
        assert_fails(report, check, index)
        assert failed(report)[0] == (check, index), failed(report)
    finally:
        _remove_raw(built, index)
    assert verify_url(built.url).intact


@pytest.mark.parametrize("name", FORGERIES)
def test_forgery_in_a_bundle_fails_verify(offline: Built, name: str) -> None:
    with Store(offline.url, readonly=True) as store:
        wire, check = _forgeries(offline, store)[name]
    report = verify_bytes(bundle_of([*offline.wires, wire], offline.checkpoints))
    assert failed(report)[0] == (check, len(offline.wires)), failed(report)


def test_forgery_in_the_middle_of_a_bundle(offline: Built) -> None:
    """Inserted before genuine statements, a forgery is named and the statements after it still verify."""
    built = offline
    with Store(offline.url, readonly=True) as store:
        wire, _ = _forgeries(built, store)["unregistered key"]
    wires = [*built.wires[:12], wire, *built.wires[12:]]
    report = verify_bytes(bundle_of(wires))
    assert failed(report)[0] == ("signer", 12)


# --- revocation ---------------------------------------------------------------------------------------


def _revoke(store: Store, built: Built, name: str, effective: int, at: int) -> int:
    batch = append.Batch(store)
    batch.add(
        append.sign_statement(
            built.keys["authority"],
            origin=ORIGIN,
            kind="key_revoked",
            at=at,
            units=(),
            data={"key": built.keys[name].public, "effective": effective, "reason": "compromised"},
        )
    )
    batch.commit()
    return batch.size - 1


def test_revoked_key_is_refused_after_its_revocation_is_logged(built: Built, store: Store) -> None:
    _revoke(store, built, "alibaba", effective=AT, at=AT)
    late = _step(store, built.keys["alibaba"], at=AT + 1)
    with pytest.raises(errors.KeyRevoked):
        append.Batch(store).add(late)
    index = _write_raw(built, store, late.wire)
    assert failed(verify_url(built.url))[0] == ("revocation", index)


def test_revoked_authority_key_is_refused(built: Built, store: Store) -> None:
    _revoke(store, built, "authority", effective=AT, at=AT)
    approval = _step(store, built.keys["authority"], "customer_approved", at=AT + 1)
    with pytest.raises(errors.KeyRevoked):
        append.Batch(store).add(approval)


def test_statements_signed_after_the_effective_time_are_flagged(built: Built, store: Store) -> None:
    """Logged before the revocation, so valid; but signed at or after `effective`: flagged once per unit, at
    its own index, for review (DESIGN.md `SIGNED_AFTER_REVOCATION`)."""
    # 27 is alibaba's `received` of U0002-0/1 at T0 + 28 s; 15 its `received` of U0000-* at T0 + 16 s.
    received_at = statement.decode(built.wires[27]).at
    _revoke(store, built, "alibaba", effective=received_at, at=AT)
    report = verify_url(built.url)
    assert report.intact and not report.compliant
    flagged = [(f.serial, f.index) for f in report.findings if f.code == "SIGNED_AFTER_REVOCATION"]
    assert sorted(flagged) == [("U0002-0", 27), ("U0002-1", 27)]


def test_an_administrative_statement_signed_after_revocation_is_flagged_without_a_serial(
    built: Built, store: Store
) -> None:
    approval_at = statement.decode(built.wires[8]).at
    _revoke(store, built, "authority", effective=approval_at, at=AT)
    report = verify_url(built.url)
    flagged = {(f.serial, f.index) for f in report.findings if f.code == "SIGNED_AFTER_REVOCATION"}
    assert (None, 8) in flagged and (None, 9) in flagged


# --- genesis, checkpoints: forgeries of authority and of the log operator ------------------------------


def test_a_ledger_opened_by_another_authority_fails_trust(tmp_path: Path) -> None:
    genuine = build_ledger(str(tmp_path / "genuine.db"), groups=1)
    impostor = build_ledger(str(tmp_path / "impostor.db"), groups=1)  # same shape, other keys
    trusted = [genuine.keys["authority"].public]
    assert verify_bytes(bundle_of(genuine.wires), trusted=trusted).intact
    report = verify_bytes(bundle_of(impostor.wires), trusted=trusted)
    assert failed(report)[0] == ("genesis_trust", 0)


def test_a_checkpoint_signed_by_someone_else_than_the_operator(built: Built) -> None:
    note = sign_note(built.keys["rogue"], built.wires, 20)
    report = verify_bytes(bundle_of(built.wires, [note]))
    assert_fails(report, "checkpoint_signature", None)


def test_a_checkpoint_the_operator_signed_for_a_fork(built: Built, tmp_path: Path) -> None:
    """The operator shows one auditor a log and another a different one: the first auditor's checkpoint
    proves the second log does not extend it."""
    fork = build_ledger(str(tmp_path / "fork.db"), groups=3, per_group=1, signers=built.keys)
    assert fork.wires[:10] == built.wires[:10] and fork.wires[10] != built.wires[10]
    seen = sign_note(built.keys["operator"], built.wires, 20)
    assert verify_bytes(bundle_of(built.wires), checkpoints=[("seen.txt", seen)]).intact
    report = verify_bytes(bundle_of(fork.wires), checkpoints=[("seen.txt", seen)])
    assert_fails(report, "checkpoint_consistency", None)


def test_a_rollback_below_an_auditors_checkpoint(built: Built) -> None:
    seen = sign_note(built.keys["operator"], built.wires, 25)
    report = verify_bytes(bundle_of(built.wires[:22]), checkpoints=[("seen.txt", seen)])
    assert_fails(report, "checkpoint_consistency", None)


# --- through the command line -------------------------------------------------------------------------


def _refused(result: Any, check: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and check in lines[0], lines
    assert "Traceback" not in result.stderr


def _size(ledger: Ledger) -> int:
    return int(json.loads(ledger.cli("verify", "--json").stdout)["log_size"])


def test_cli_refuses_an_unregistered_key(ledger: Ledger) -> None:
    ledger.record(
        "fabricated", "tsmc", ["F1"], "--model", "H200-SXM5-141GB", "--site", "S", "--lot", "L", ok=True
    )
    size = _size(ledger)
    _refused(
        ledger.record("shipped-to-us", "rogue", ["F1"], "--port-of-entry", "DFW", "--waybill", "W"), "signer"
    )
    assert _size(ledger) == size


def test_cli_refuses_a_key_without_the_role(ledger: Ledger) -> None:
    size = _size(ledger)
    _refused(
        ledger.record(
            "fabricated", "kerry", ["F2"], "--model", "H200-SXM5-141GB", "--site", "S", "--lot", "L"
        ),
        "role",
    )
    _refused(
        ledger.cli(
            "customer", "approve", "tsmc", "--cap", "1", "--license", "L", "--key", ledger.key("tsmc")
        ),
        "role",
    )
    assert _size(ledger) == size


def test_cli_refuses_a_revoked_key_and_flags_its_late_work(ledger: Ledger) -> None:
    ledger.full_flow(["R1"], at="2026-02-01T00:00:00Z")
    ledger.record(
        "fabricated",
        "tsmc",
        ["R2"],
        "--model",
        "H200-SXM5-141GB",
        "--site",
        "S",
        "--lot",
        "L",
        "--at",
        "2026-03-01T12:00:00Z",
        ok=True,
    )
    ledger.cli(
        "participant",
        "revoke-key",
        ledger.pub("tsmc"),
        "--at",
        "2026-03-01T00:00:00Z",
        "--reason",
        "stolen",
        "--key",
        ledger.key("authority"),
        ok=True,
    )
    size = _size(ledger)
    _refused(
        ledger.record(
            "fabricated", "tsmc", ["R3"], "--model", "H200-SXM5-141GB", "--site", "S", "--lot", "L"
        ),
        "revocation",
    )
    assert _size(ledger) == size
    result = ledger.cli("verify", "--json")
    assert result.exit_code == 3, result.stderr
    document = json.loads(result.stdout)
    flagged = [f for f in document["findings"] if f["code"] == "SIGNED_AFTER_REVOCATION"]
    assert [f["serial"] for f in flagged] == ["R2"]


def test_cli_diversion_is_refused_then_recorded_as_evidence(ledger: Ledger) -> None:
    """A `received` signed by a customer that is not the consignee: the pre-check refuses it (exit 1,
    nothing written); `--allow-violation` records it, and verify flags DIVERSION (exit 3, intact)."""
    serials = ["V1", "V2"]
    ledger.full_flow(["V0"])
    ledger.record(
        "fabricated", "tsmc", serials, "--model", "H200-SXM5-141GB", "--site", "S", "--lot", "L", ok=True
    )
    ledger.record("shipped-to-us", "kerry", serials, "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    ledger.record(
        "inspected",
        "uslab",
        serials,
        "--result",
        "pass",
        "--site",
        "Lab",
        "--country",
        "US",
        "--report",
        "R",
        ok=True,
    )
    ledger.record(
        "duty-paid",
        "cbp",
        serials,
        "--entry",
        "E-V",
        "--entered-value",
        "40000.00",
        "--duty",
        "10000.00",
        ok=True,
    )
    ledger.record(
        "re-exported",
        "nvidia",
        serials,
        "--consignee",
        "alibaba",
        "--license",
        "LIC-1",
        "--destination",
        "CN",
        ok=True,
    )
    size = _size(ledger)
    refused = ledger.record("received", "bytedance", serials, "--site", "Beijing")
    assert refused.exit_code == 1 and "DIVERSION" in refused.stderr and refused.stdout == ""
    assert _size(ledger) == size
    recorded = ledger.record("received", "bytedance", serials, "--site", "Beijing", "--allow-violation")
    assert recorded.exit_code == 0, recorded.stderr
    result = ledger.cli("verify", "--json")
    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["intact"] is True and document["compliant"] is False
    diverted = sorted((f["serial"], f["index"]) for f in document["findings"] if f["code"] == "DIVERSION")
    assert diverted == [("V1", size), ("V2", size)]
