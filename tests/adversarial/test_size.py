"""DESIGN.md "Statements", Size: a wire form is at most 65,535 bytes, else `encoding`, old statements too.

A statement one byte over fails on append, import and verify (database and bundle); `record` with more
units than fit splits them into several statements with the same data in one transaction and says so,
except `duty-paid`, which it refuses (exit 2) naming how many units fit.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgpack
import pytest

from ledger import append, statement
from ledger.errors import BadInput, EncodingInvalid, IntegrityError
from ledger.statement import MAX_WIRE_BYTES, ZERO_HASH, signed_message
from ledger.store import Store
from ledger.transfer import import_bundle
from tests.adversarial.test_forgery import _remove_raw, _write_raw
from tests.adversarial.test_tamper import (
    ORIGIN,
    Built,
    _url,
    assert_fails,
    build_ledger,
    bundle_of,
    failed,
    verify_bytes,
    verify_url,
)
from tests.cli.test_bad_input import fingerprint, one_line
from tests.conftest import Ledger

FAB = {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": "L1"}
FAB_OPTIONS = ["--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1"]


def _raw(key: object, units: list[tuple[str, bytes]], data: dict[str, object], *, at: int,
         kind: str = "fabricated") -> bytes:
    """A validly signed wire form of any size: what another client can sign, past every writer's check."""
    body = statement.encode_body(origin=ORIGIN, kind=kind, at=at, signer=key.key_id,  # type: ignore[attr-defined]
                                 units=units, data=data)
    return msgpack.packb([body, key.sign(signed_message(body))], use_bin_type=True)  # type: ignore[attr-defined]


def _padded(built: Built, wire_size: int, serial: str = "PAD-1") -> bytes:
    """A `fabricated` of one new unit whose wire form is exactly `wire_size` bytes (padding its `site`)."""
    key = built.keys["tsmc"]
    at = append.now_us()
    base = len(_raw(key, [(serial, ZERO_HASH)], {**FAB, "site": ""}, at=at))
    for pad in range(wire_size - base - 3, wire_size - base + 1):  # str headers grow by 2 past 255 bytes
        wire = _raw(key, [(serial, ZERO_HASH)], {**FAB, "site": "x" * pad}, at=at)
        if len(wire) == wire_size:
            return wire
    raise AssertionError(f"no padding gives {wire_size} bytes")


@pytest.fixture
def built(tmp_path: Path) -> Built:
    return build_ledger(_url("sqlite", tmp_path, "size"), groups=1, steps=1)


def test_exactly_the_limit_decodes_and_one_byte_more_is_encoding(built: Built) -> None:
    at_limit, over = _padded(built, MAX_WIRE_BYTES), _padded(built, MAX_WIRE_BYTES + 1)
    assert statement.decode(at_limit).wire == at_limit
    with pytest.raises(EncodingInvalid, match="65536 bytes is larger than 65535"):
        statement.decode(over)


def test_append_takes_exactly_the_limit_and_refuses_one_byte_more(built: Built) -> None:
    key = built.keys["tsmc"]
    with Store(built.url) as store:
        size = store.size()
        site = _padded(built, MAX_WIRE_BYTES)
        data = statement.decode(site).data
        batch = append.Batch(store)
        with pytest.raises(BadInput, match="65,536 bytes"):
            append.sign_statement(key, origin=ORIGIN, kind="fabricated", at=append.now_us(),
                                  units=[("PAD-2", ZERO_HASH)], data={**data, "site": data["site"] + "x"})
        batch.add(append.sign_statement(key, origin=ORIGIN, kind="fabricated", at=append.now_us(),
                                        units=[("PAD-2", ZERO_HASH)], data=data))
        batch.commit()
        assert store.size() == size + 1
        assert len(next(iter(store.log(size))).wire) == MAX_WIRE_BYTES
    assert verify_url(built.url).intact


def test_an_oversized_statement_fails_verify_in_a_bundle_and_in_the_database(built: Built) -> None:
    over = _padded(built, MAX_WIRE_BYTES + 1)
    report = verify_bytes(bundle_of([*built.wires, over]))
    assert failed(report)[0] == ("encoding", len(built.wires)), failed(report)
    with Store(built.url) as store:
        index = _write_raw(built, store, over)
    try:
        report = verify_url(built.url)
        assert_fails(report, "encoding", index)
        assert failed(report)[0] == ("encoding", index), failed(report)
    finally:
        _remove_raw(built, index)
    assert verify_url(built.url).intact


def test_import_refuses_an_oversized_statement(built: Built, tmp_path: Path) -> None:
    path = tmp_path / "big.bundle"
    path.write_bytes(bundle_of([*built.wires, _padded(built, MAX_WIRE_BYTES + 1)]))
    target = _url("sqlite", tmp_path, "copy")
    with pytest.raises(IntegrityError) as raised:
        import_bundle(target, path)
    assert raised.value.check == "encoding"
    assert not Path(target).exists()  # verified before anything is created


# --- record: splitting, and duty-paid refused --------------------------------------------------------------


def _serials_file(tmp_path: Path, count: int, name: str = "serials.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"SN{n:011d}\n" for n in range(count)))  # 13 characters, as DESIGN counts
    return path


def test_record_splits_what_does_not_fit_into_one_transaction(ledger: Ledger, tmp_path: Path) -> None:
    count = 3_000
    serials = _serials_file(tmp_path, count)
    with Store(ledger.db, readonly=True) as store:
        size = store.size()
    result = ledger.cli("record", "fabricated", "--key", ledger.key("tsmc"), "--serials-file", str(serials),
                        *FAB_OPTIONS, ok=True)
    assert "3000 units as 3 statements" in result.stdout and "one transaction" in result.stdout, result.stdout
    with Store(ledger.db, readonly=True) as store:
        wires = [event.wire for event in store.log(size)]
    assert len(wires) == 3
    decoded = [statement.decode(w) for w in wires]
    assert all(len(w) <= MAX_WIRE_BYTES for w in wires)
    assert [s for st in decoded for s in st.serials] == [f"SN{n:011d}" for n in range(count)]
    assert all(dict(st.data) == FAB and st.kind == "fabricated" for st in decoded)
    # the next step of all of them, split the same way; then each unit's chain reads back
    ledger.cli("record", "shipped-to-us", "--key", ledger.key("kerry"), "--serials-file", str(serials),
               "--port-of-entry", "DFW", "--waybill", "W1", ok=True)
    for serial in ("SN00000000000", f"SN{count - 1:011d}"):
        steps = json.loads(ledger.cli("history", serial, "--json", ok=True).stdout)["steps"]
        assert [s["kind"] for s in steps] == ["fabricated", "shipped_to_us"]
    assert ledger.cli("verify").exit_code in (0, 3)


def test_record_duty_paid_that_does_not_fit_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    serials = _serials_file(tmp_path, 2_000)
    before = fingerprint(ledger.db)
    result = ledger.cli("record", "duty-paid", "--key", ledger.key("cbp"), "--serials-file", str(serials),
                        "--entry", "E1", "--entered-value", "40000000.00", "--duty", "10000000.00")
    line = one_line(result, 2, "2,000 units do not fit", "fit", "money")
    fit = int(line.split(": ")[-1].split(" fit")[0].replace(",", ""))
    assert 1_000 < fit < 2_000, line
    assert fingerprint(ledger.db) == before
