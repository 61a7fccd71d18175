"""Canonical msgpack, statement bodies, key ids, signatures, hashes, the wire form (DESIGN.md "Statements").

Known answers are assembled here byte by byte, independently of `ledger.canonical`; every other encoding
of the same value is a probe that must be refused. Hypothesis supplies the round trips ("encode → decode →
encode gives the same bytes") and the rejections ("any other encoding, any single-byte change, fails").
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger import canonical, keys, statement
from ledger.errors import EncodingInvalid, SignatureInvalid
from ledger.statement import SIGNATURE_PREFIX, ZERO_HASH

# RFC 8032 §7.1, TEST 1: the secret key and its public key
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
KEY = keys.from_seed(RFC8032_SEED)
ORIGIN = "custody.test/statement"


# --- a msgpack writer of our own: every width and order, canonical or not ------------------------------


def _uint(value: int, width: int | None) -> bytes:
    """A non-negative integer at `width` bytes (0: fixint), or the smallest width if None."""
    if width is None:
        width = 0 if value < 128 else 1 if value < 2**8 else 2 if value < 2**16 else 4 if value < 2**32 else 8
    if width == 0:
        assert value < 128
        return bytes([value])
    tag = {1: 0xCC, 2: 0xCD, 4: 0xCE, 8: 0xCF}[width]
    return bytes([tag]) + value.to_bytes(width, "big")


def _sint(value: int, width: int | None) -> bytes:
    """A negative integer at `width` bytes (0: negative fixint), or the smallest if None."""
    if width is None:
        width = (
            0
            if value >= -32
            else 1
            if value >= -(2**7)
            else 2
            if value >= -(2**15)
            else 4
            if value >= -(2**31)
            else 8
        )
    if width == 0:
        assert value >= -32
        return struct.pack(">b", value)
    tag = {1: 0xD0, 2: 0xD1, 4: 0xD2, 8: 0xD3}[width]
    return bytes([tag]) + value.to_bytes(width, "big", signed=True)


def _header(
    size: int, fix_base: int | None, fix_limit: int, tags: dict[int, int], width: int | None
) -> bytes:
    if width is None:
        width = (
            0 if fix_base is not None and size < fix_limit else min(w for w in tags if size < 2 ** (8 * w))
        )
    if width == 0:
        assert fix_base is not None and size < fix_limit
        return bytes([fix_base + size])
    return bytes([tags[width]]) + size.to_bytes(width, "big")


def encode(obj: Any, widths: dict[str, int | None] | None = None, order: str = "sorted") -> bytes:
    """msgpack of `obj`; `widths` forces header widths ("int", "str", "bin", "array", "map"), `order`
    ("sorted", "reversed", "given") the map key order. With no arguments: DESIGN's canonical form."""
    w = widths or {}

    def go(o: Any) -> bytes:
        if isinstance(o, bool) or o is None:
            return {True: b"\xc3", False: b"\xc2", None: b"\xc0"}[o]
        if isinstance(o, int):
            return _uint(o, w.get("int")) if o >= 0 else _sint(o, w.get("int"))
        if isinstance(o, float):
            return b"\xcb" + struct.pack(">d", o)
        if isinstance(o, str):
            raw = o.encode("utf-8")
            return _header(len(raw), 0xA0, 32, {1: 0xD9, 2: 0xDA, 4: 0xDB}, w.get("str")) + raw
        if isinstance(o, bytes):
            return _header(len(o), None, 0, {1: 0xC4, 2: 0xC5, 4: 0xC6}, w.get("bin")) + o
        if isinstance(o, list | tuple):
            return _header(len(o), 0x90, 16, {2: 0xDC, 4: 0xDD}, w.get("array")) + b"".join(go(i) for i in o)
        if isinstance(o, dict):
            keys_ = list(o)
            if order == "sorted":
                keys_.sort(key=lambda k: k.encode("utf-8"))
            elif order == "reversed":
                keys_.sort(key=lambda k: k.encode("utf-8"), reverse=True)
            head = _header(len(o), 0x80, 16, {2: 0xDE, 4: 0xDF}, w.get("map"))
            return head + b"".join(go(k) + go(o[k]) for k in keys_)
        if isinstance(o, msgpack.ExtType):
            return encode_ext(o.code, o.data)
        raise TypeError(type(o))

    return go(obj)


def encode_ext(code: int, data: bytes) -> bytes:
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if len(data) in fixed:
        return bytes([fixed[len(data)], code]) + data
    return bytes([0xC7, len(data), code]) + data


# --- canonical msgpack: known answers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (2**32 - 1, "ceffffffff"),
        (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-(2**15), "d18000"),
        (-(2**15) - 1, "d2ffff7fff"),
        (-(2**31) - 1, "d3ffffffff7fffffff"),
        (-(2**63), "d38000000000000000"),
        ("", "a0"),
        ("a" * 31, "bf" + "61" * 31),
        ("a" * 32, "d920" + "61" * 32),
        ("é", "a2c3a9"),
        (b"", "c400"),
        (b"\x00" * 256, "c50100" + "00" * 256),
        ([], "90"),
        ([0] * 15, "9f" + "00" * 15),
        ([0] * 16, "dc0010" + "00" * 16),
        ({}, "80"),
        ({"b": 1, "a": 2}, "82a16102a16201"),
        ({"z": 0, "é": 0, "a": 0}, "83a16100a17a00a2c3a900"),  # UTF-8 byte order: "z" (7a) before "é" (c3 a9)
        ({"aa": 0, "a": 0, "b": 0}, "83a16100a2616100a16200"),  # a prefix sorts first
    ],
)
def test_canonical_known_answers(value: Any, expected: str) -> None:
    assert canonical.pack(value).hex() == expected
    assert encode(value).hex() == expected  # our writer agrees, so it can make the probes below
    assert canonical.unpack(bytes.fromhex(expected)) == value


def test_tuples_pack_as_lists() -> None:
    assert canonical.pack(("a", (1, 2))) == canonical.pack(["a", [1, 2]])


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        1.5,
        0.0,
        float("nan"),
        {1: "int key"},
        {b"k": 1},
        {"nested": [None]},
        set(),
        object(),
        2**64,
        -(2**63) - 1,
        msgpack.ExtType(1, b"x"),
    ],
)
def test_pack_refuses_values_outside_the_subset(value: Any) -> None:
    with pytest.raises(EncodingInvalid):
        canonical.pack(value)


# --- canonical msgpack: every other encoding is refused ------------------------------------------------


NON_CANONICAL = {
    "uint8 for a fixint": "cc05",
    "uint16 for a uint8": "cd00ff",
    "uint32 for a uint16": "ce0000ffff",
    "uint64 for a uint32": "cf00000000ffffffff",
    "int8 for a negative fixint": "d0ff",
    "int16 for an int8": "d1ff80",
    "int8 for a non-negative value": "d005",
    "int64 for a non-negative value": "d30000000000000005",
    "str8 for a fixstr": "d90161",
    "str16 for a str8": "da0020" + "61" * 32,
    "bin16 for a bin8": "c50001" + "00",
    "bin32 for a bin8": "c600000001" + "00",
    "array16 for a fixarray": "dc000100",
    "array32 for a fixarray": "dd0000000100",
    "map16 for a fixmap": "de0001a16100",
    "map32 for a fixmap": "df00000001a16100",
    "unsorted map": "82a16201a16102",
    "duplicate map key": "82a16101a16102",
    "float32": "ca3f800000",
    "float64": "cb3ff0000000000000",
    "nil": "c0",
    "true": "c3",
    "false": "c2",
    "fixext1": "d40100",
    "fixext4": "d601deadbeef",
    "ext8": "c7030161 6263".replace(" ", ""),
    "timestamp32": "d6ff00000000",
    "integer map key": "810100",
    "bin map key": "81c4016100",
    "array map key": "819000",
    "invalid UTF-8 in str": "a2c328",
    "surrogate in str": "a3eda080",
    "trailing byte": "0000",
    "truncated str": "a261",
    "truncated map": "82a16100",
    "empty input": "",
    "reserved byte c1": "c1",
    "nil inside a list": "9101c0",
    "float inside a map": "81a161cb3ff0000000000000",
}


@pytest.mark.parametrize("name", sorted(NON_CANONICAL))
def test_unpack_refuses_every_other_encoding(name: str) -> None:
    with pytest.raises(EncodingInvalid):
        canonical.unpack(bytes.fromhex(NON_CANONICAL[name]))


@pytest.mark.parametrize("depth", [canonical.MAX_DEPTH + 1, 200, 500, 999, 1000, 5000, 100_000])
def test_deep_nesting_is_refused_cleanly(depth: int) -> None:
    """Nesting deep enough to exhaust Python's stack must still be an encoding failure, not a crash."""
    with pytest.raises(EncodingInvalid):
        canonical.unpack(b"\x91" * depth + b"\x00")
    with pytest.raises(EncodingInvalid):
        canonical.unpack(b"\x81\xa1a" * depth + b"\x00")


def test_nesting_within_the_limit_is_fine() -> None:
    value: Any = 0
    for _ in range(canonical.MAX_DEPTH):
        value = [value]
    assert canonical.unpack(canonical.pack(value)) == value


# --- canonical msgpack: properties ---------------------------------------------------------------------

_ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-40, 300),
    st.sampled_from([127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -32, -33, -128, -129]),
)
_leaves = st.one_of(_ints, st.text(max_size=40), st.binary(max_size=40))
VALUES = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(VALUES)
def test_round_trip(value: Any) -> None:
    packed = canonical.pack(value)
    assert packed == encode(value)
    decoded = canonical.unpack(packed)
    assert decoded == value
    assert canonical.pack(decoded) == packed


WIDTH_CHOICES = {
    "int": [None, 1, 2, 4, 8],
    "str": [None, 1, 2, 4],
    "bin": [None, 1, 2, 4],
    "array": [None, 2, 4],
    "map": [None, 2, 4],
}


def _fits(value: Any, widths: dict[str, int | None]) -> bool:
    """Whether every integer and length in `value` can be written at the forced widths."""

    def ok(o: Any) -> bool:
        if isinstance(o, int):
            w = widths.get("int")
            if w is None:
                return True
            return o < 2 ** (8 * w) if o >= 0 else o >= -(2 ** (8 * w - 1))
        if isinstance(o, str | bytes):
            w = widths.get("str" if isinstance(o, str) else "bin")
            return w is None or len(o.encode() if isinstance(o, str) else o) < 2 ** (8 * w)
        if isinstance(o, list):
            return all(ok(i) for i in o)
        if isinstance(o, dict):
            return all(ok(k) and ok(v) for k, v in o.items())
        return True

    return ok(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    VALUES,
    st.fixed_dictionaries({k: st.sampled_from(v) for k, v in WIDTH_CHOICES.items()}),
    st.sampled_from(["sorted", "reversed", "given"]),
)
def test_any_other_encoding_of_the_same_value_is_refused(
    value: Any, widths: dict[str, int | None], order: str
) -> None:
    assume(_fits(value, widths))
    other = encode(value, widths, order)
    if other == canonical.pack(value):
        assert canonical.unpack(other) == value
    else:
        with pytest.raises(EncodingInvalid):
            canonical.unpack(other)


@settings(max_examples=150, deadline=None)
@given(VALUES, st.data())
def test_any_single_byte_change_is_refused_or_another_canonical_value(
    value: Any, data: st.DataObject
) -> None:
    packed = canonical.pack(value)
    position = data.draw(st.integers(0, len(packed) - 1))
    mask = data.draw(st.integers(1, 255))
    changed = bytearray(packed)
    changed[position] ^= mask
    try:
        decoded = canonical.unpack(bytes(changed))
    except EncodingInvalid:
        return
    assert canonical.pack(decoded) == bytes(changed) and decoded != value


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_only_to_canonical_values(data: bytes) -> None:
    try:
        value = canonical.unpack(data)
    except EncodingInvalid:
        return
    assert canonical.pack(value) == data


# --- key ids, hashes, signatures ------------------------------------------------------------------------


def test_key_id_is_the_sha256_of_the_raw_public_key() -> None:
    assert KEY.public == RFC8032_PUBLIC
    assert statement.key_id(RFC8032_PUBLIC) == hashlib.sha256(RFC8032_PUBLIC).hexdigest()
    assert KEY.key_id == "21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9"


def _fabricated(
    units: list[tuple[str, bytes]] | None = None, at: int = 1_767_225_600_000_000, **data: Any
) -> statement.Statement:
    fields = {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": "L1", **data}
    units = units if units is not None else [("SN-1", ZERO_HASH)]
    body = statement.encode_body(
        origin=ORIGIN, kind="fabricated", at=at, signer=KEY.key_id, units=units, data=fields
    )
    return statement.assemble(body, KEY.sign(SIGNATURE_PREFIX + body))


def test_body_wire_hash_and_signature_known_answer() -> None:
    """The body assembled by hand from DESIGN.md; the signature is RFC 8032's deterministic one."""
    s = _fabricated()
    by_hand = (
        b"\x87"
        + b"\xa2at"
        + b"\xcf"
        + (1_767_225_600_000_000).to_bytes(8, "big")
        + b"\xa4data"
        + b"\x83"
        + b"\xa3lot"
        + b"\xa2L1"
        + b"\xa5model"
        + b"\xafH200-SXM5-141GB"
        + b"\xa4site"
        + b"\xa6Fab 18"
        + b"\xa4kind"
        + b"\xaafabricated"
        + b"\xa6origin"
        + b"\xb6"
        + ORIGIN.encode()
        + b"\xa6signer"
        + b"\xd9\x40"
        + KEY.key_id.encode()
        + b"\xa5units"
        + b"\x91\x92"
        + b"\xa4SN-1"
        + b"\xc4\x20"
        + bytes(32)
        + b"\xa1v"
        + b"\x01"
    )
    assert s.body == by_hand
    assert s.hash == hashlib.sha256(by_hand).digest()
    assert len(by_hand) < 256
    assert s.wire == b"\x92\xc4" + bytes([len(by_hand)]) + by_hand + b"\xc4\x40" + s.signature
    assert s.signature == KEY.sign(b"custody-ledger/v1\n" + by_hand)
    statement.verify_signature(s, KEY.public)
    assert (s.origin, s.kind, s.signer, s.units, dict(s.data)) == (
        ORIGIN,
        "fabricated",
        KEY.key_id,
        (("SN-1", ZERO_HASH),),
        {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": "L1"},
    )


def test_signature_is_domain_separated() -> None:
    s = _fabricated()
    bare = statement.assemble(s.body, KEY.sign(s.body))  # signed without the prefix
    with pytest.raises(SignatureInvalid):
        statement.verify_signature(bare, KEY.public)


def test_signature_under_another_key_fails() -> None:
    s = _fabricated()
    with pytest.raises(SignatureInvalid) as raised:
        statement.verify_signature(s, keys.from_seed(bytes(32)).public, index=7)
    assert raised.value.check == "signature" and raised.value.index == 7


def test_signature_with_s_plus_l_fails() -> None:
    s = _fabricated()
    order = 2**252 + 27742317777372353535851937790883648493
    big_s = int.from_bytes(s.signature[32:], "little") + order
    malleated = statement.assemble(s.body, s.signature[:32] + big_s.to_bytes(32, "little"))
    with pytest.raises(SignatureInvalid):
        statement.verify_signature(malleated, KEY.public)


# --- statement bodies: each field, each kind -----------------------------------------------------------


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "origin": ORIGIN,
        "kind": "fabricated",
        "at": 1_767_225_600_000_000,
        "signer": KEY.key_id,
        "units": [["SN-1", ZERO_HASH]],
        "data": {"model": "M", "site": "S", "lot": "L"},
    }
    for key, value in changes.items():
        if value is _DROP:
            del body[key]
        else:
            body[key] = value
    return body


_DROP = object()
GOOD_DATA: dict[str, dict[str, Any]] = {
    "fabricated": {"model": "M", "site": "S", "lot": "L"},
    "shipped_to_us": {"port_of_entry": "DFW", "waybill": "W"},
    "inspected": {"result": "pass", "site": "S", "country": "US", "report": "R"},
    "duty_paid": {"entry": "E", "entered_value": 100, "duty": 25},
    "re_exported": {"consignee": "alibaba", "license": "L", "destination": "CN"},
    "received": {"site": "S"},
    "located": {"site": "S", "country": "CN", "method": "network-latency"},
    "destroyed": {"method": "shredded", "site": "S", "certificate": "C"},
    "withdrawn": {"reason": "R", "destination": "US"},
    "us_volume_reported": {"model": "M", "from": 10, "until": 20, "us_units": 0},
    "ledger_opened": {"authorities": [RFC8032_PUBLIC], "operator": RFC8032_PUBLIC, "policy": "name = 'p'"},
    "participant_registered": {
        "id": "tsmc",
        "name": "TSMC",
        "country": "TW",
        "roles": ["fab"],
        "key": RFC8032_PUBLIC,
    },
    "key_revoked": {"key": RFC8032_PUBLIC, "effective": 0, "reason": ""},
    "customer_approved": {"id": "alibaba", "cap": 0, "license": "L"},
    "customer_suspended": {"id": "alibaba", "reason": "R"},
    "policy_issued": {"policy": ""},
}


def _good(kind: str) -> dict[str, Any]:
    units = (
        []
        if kind in statement.UNITLESS_KINDS
        else [["SN-1", ZERO_HASH if kind == "fabricated" else b"\x01" * 32]]
    )
    return _body(kind=kind, units=units, data=dict(GOOD_DATA[kind]))


@pytest.mark.parametrize("kind", statement.KINDS)
def test_every_kind_decodes(kind: str) -> None:
    fields = statement.decode_body(canonical.pack(_good(kind)))
    assert fields[1] == kind


@pytest.mark.parametrize("fields", [{"hts": "9903.79.01"}, {"importer": "NVIDIA Corp."},
                                    {"origin_country": "TW"},
                                    {"hts": "9903.79.01", "importer": "I", "origin_country": "TW"}])
def test_optional_duty_paid_fields(fields: dict[str, str]) -> None:
    body = _good("duty_paid")
    body["data"].update(fields)
    wire = canonical.pack(body)
    assert statement.decode_body(wire)[5] == {**GOOD_DATA["duty_paid"], **fields}
    assert statement.well_formed(wire) == statement.decode_body(wire)


@pytest.mark.parametrize(("field", "value"), [("hts", 1), ("importer", b"I"), ("origin_country", "tw"),
                                              ("origin_country", "TWN")])
def test_optional_duty_paid_fields_are_checked(field: str, value: Any) -> None:
    body = _good("duty_paid")
    body["data"][field] = value
    with pytest.raises(EncodingInvalid, match=field):
        statement.decode_body(canonical.pack(body))


@pytest.mark.parametrize("kind", statement.UNITLESS_KINDS)
def test_unitless_kinds_with_units_fail_encoding(kind: str) -> None:
    body = _good(kind)
    body["units"] = [["SN-1", b"\x01" * 32]]
    with pytest.raises(EncodingInvalid, match="no units"):
        statement.decode_body(canonical.pack(body))
    assert statement.well_formed(canonical.pack(body)) is None


@pytest.mark.parametrize("kind", [*statement.CUSTODY_STEPS])
def test_custody_steps_without_units_fail_encoding(kind: str) -> None:
    body = _good(kind)
    body["units"] = []
    with pytest.raises(EncodingInvalid, match="covers no units"):
        statement.decode_body(canonical.pack(body))


@pytest.mark.parametrize(("start", "until"), [(10, 10), (10, 9), (0, 0)])
def test_volume_period_must_not_be_empty(start: int, until: int) -> None:
    body = _good("us_volume_reported")
    body["data"].update({"from": start, "until": until})
    wire = canonical.pack(body)
    with pytest.raises(EncodingInvalid, match="until is not after from"):
        statement.decode_body(wire)
    assert statement.well_formed(wire) is None  # the fast path sends it to the reference path


def test_kind_roles() -> None:
    assert statement.KIND_ROLES["located"] == {"customer"}
    assert statement.KIND_ROLES["destroyed"] == {"fab", "inspector", "exporter", "customer"}
    assert statement.KIND_ROLES["withdrawn"] == {"exporter"}
    assert statement.KIND_ROLES["us_volume_reported"] == {"exporter"}
    assert set(statement.KIND_ROLES) == set(statement.CUSTODY_STEPS) | set(statement.DECLARATIONS)


def test_optional_valid_until() -> None:
    body = _good("customer_approved")
    body["data"]["valid_until"] = 5
    assert statement.decode_body(canonical.pack(body))[5]["valid_until"] == 5


BAD_FIELDS: dict[str, list[tuple[str, Any]]] = {  # kind: [(field, bad value)]
    "fabricated": [("model", 1), ("site", b"S"), ("lot", ["L"])],
    "shipped_to_us": [("port_of_entry", 0), ("waybill", {})],
    "inspected": [
        ("result", "maybe"),
        ("result", "PASS"),
        ("country", "us"),
        ("country", "USA"),
        ("country", "U"),
        ("report", 1),
    ],
    "duty_paid": [("entered_value", -1), ("entered_value", "100"), ("duty", -25), ("entry", 5)],
    "re_exported": [
        ("consignee", "bad id!"),
        ("consignee", ""),
        ("consignee", "x" * 65),
        ("destination", "cn"),
    ],
    "received": [("site", 0)],
    "located": [("site", 0), ("country", "cn"), ("country", "CHN"), ("method", b"m")],
    "destroyed": [("method", 1), ("site", 0), ("certificate", [])],
    "withdrawn": [("reason", 0), ("destination", "us"), ("destination", "")],
    "us_volume_reported": [("model", 1), ("from", -1), ("until", "2026"), ("us_units", -1), ("us_units", "5"),
                           ("until", 10), ("until", 9)],
    "ledger_opened": [
        ("authorities", []),
        ("authorities", [b"\x01" * 31]),
        ("authorities", [RFC8032_PUBLIC, RFC8032_PUBLIC]),
        ("authorities", RFC8032_PUBLIC),
        ("operator", b"\x01" * 33),
        ("policy", b""),
    ],
    "participant_registered": [
        ("roles", []),
        ("roles", ["fab", "fab"]),
        ("roles", ["authority"]),
        ("roles", "fab"),
        ("key", "00" * 32),
        ("id", "a b"),
        ("name", 1),
        ("country", "T"),
    ],
    "key_revoked": [("effective", -1), ("effective", "2026"), ("key", b""), ("reason", 0)],
    "customer_approved": [("cap", -1), ("cap", "5"), ("valid_until", -5), ("valid_until", "x"), ("id", "")],
    "customer_suspended": [("reason", 0), ("id", "é")],
    "policy_issued": [("policy", 0)],
}


@pytest.mark.parametrize(
    ("kind", "field", "value"), [(k, f, v) for k, bad in BAD_FIELDS.items() for f, v in bad]
)
def test_wrong_field_type_or_value(kind: str, field: str, value: Any) -> None:
    body = _good(kind)
    body["data"][field] = value
    with pytest.raises(EncodingInvalid, match=field):
        statement.decode_body(canonical.pack(body))


@pytest.mark.parametrize("kind", statement.KINDS)
def test_missing_and_unknown_fields(kind: str) -> None:
    for field in GOOD_DATA[kind]:
        body = _good(kind)
        del body["data"][field]
        with pytest.raises(EncodingInvalid, match="missing"):
            statement.decode_body(canonical.pack(body))
    body = _good(kind)
    body["data"]["extra"] = "x"
    with pytest.raises(EncodingInvalid, match="unknown field"):
        statement.decode_body(canonical.pack(body))


BAD_BODIES: dict[str, dict[str, Any]] = {
    "no v": {"v": _DROP},
    "v 2": {"v": 2},
    "v 0": {"v": 0},
    "v text": {"v": "1"},
    "no origin": {"origin": _DROP},
    "empty origin": {"origin": ""},
    "origin bytes": {"origin": b"o"},
    "unknown kind": {"kind": "stolen"},
    "kind bytes": {"kind": b"fabricated"},
    "no kind": {"kind": _DROP},
    "negative at": {"at": -1},
    "at text": {"at": "2026-01-01"},
    "no at": {"at": _DROP},
    "signer upper hex": {"signer": KEY.key_id.upper()},
    "signer short": {"signer": KEY.key_id[:63]},
    "signer raw key": {"signer": RFC8032_PUBLIC},
    "no signer": {"signer": _DROP},
    "units not a list": {"units": {"SN-1": ZERO_HASH}},
    "no units on a step": {"units": []},
    "unit not a pair": {"units": [["SN-1"]]},
    "unit a triple": {"units": [["SN-1", ZERO_HASH, 0]]},
    "serial with a space": {"units": [["SN 1", ZERO_HASH]]},
    "empty serial": {"units": [["", ZERO_HASH]]},
    "serial of 65": {"units": [["S" * 65, ZERO_HASH]]},
    "serial bytes": {"units": [[b"SN-1", ZERO_HASH]]},
    "serial with a slash": {"units": [["a/b", ZERO_HASH]]},
    "prev of 31 bytes": {"units": [["SN-1", bytes(31)]]},
    "prev as hex": {"units": [["SN-1", "00" * 32]]},
    "repeated serial": {"units": [["SN-1", ZERO_HASH], ["SN-1", ZERO_HASH]]},
    "data not a map": {"data": [["model", "M"]]},
    "no data": {"data": _DROP},
    "extra body key": {"note": "x"},
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies(name: str) -> None:
    with pytest.raises(EncodingInvalid):
        statement.decode_body(canonical.pack(_body(**BAD_BODIES[name])))


def test_units_on_an_administrative_kind() -> None:
    body = _good("customer_suspended")
    body["units"] = [["SN-1", ZERO_HASH]]
    with pytest.raises(EncodingInvalid, match="no units"):
        statement.decode_body(canonical.pack(body))


def test_units_keep_the_signers_order() -> None:
    units = [("Z9", ZERO_HASH), ("A1", ZERO_HASH), ("M5", ZERO_HASH)]
    assert _fabricated(units).units == tuple(units)


def test_encode_body_refuses_what_decode_would() -> None:
    with pytest.raises(EncodingInvalid):
        statement.encode_body(
            origin=ORIGIN, kind="fabricated", at=1, signer=KEY.key_id, units=[], data=GOOD_DATA["fabricated"]
        )
    with pytest.raises(EncodingInvalid):
        statement.encode_body(
            origin=ORIGIN,
            kind="duty_paid",
            at=1,
            signer=KEY.key_id,
            units=[("A", b"\x01" * 32)],
            data={"entry": "E", "entered_value": 1.0, "duty": 0},
        )


# --- the wire form -------------------------------------------------------------------------------------


def _wire_probes() -> dict[str, bytes]:
    s = _fabricated()
    body, sig = s.body, s.signature
    return {
        "array16 header": b"\xdc\x00\x02" + s.wire[1:],
        "bin32 body header": b"\x92\xc6" + len(body).to_bytes(4, "big") + body + b"\xc4\x40" + sig,
        "bin16 signature header": b"\x92" + s.wire[1:-66] + b"\xc5\x00\x40" + sig,
        "body as str": b"\x92\xda" + len(body).to_bytes(2, "big") + body + b"\xc4\x40" + sig,
        "three elements": b"\x93" + s.wire[1:] + b"\x00",
        "one element": b"\x91" + s.wire[1:-66],
        "signature of 63 bytes": msgpack.packb([body, sig[:63]], use_bin_type=True),
        "signature of 65 bytes": msgpack.packb([body, sig + b"\x00"], use_bin_type=True),
        "trailing byte": s.wire + b"\x00",
        "truncated": s.wire[:-1],
        "a map": msgpack.packb({"body": body, "signature": sig}, use_bin_type=True),
        "empty": b"",
        "body not canonical": msgpack.packb(
            [encode(msgpack.unpackb(body), order="reversed"), sig], use_bin_type=True
        ),
    }


@pytest.mark.parametrize("name", sorted(_wire_probes()))
def test_wire_probes_are_refused(name: str) -> None:
    with pytest.raises(EncodingInvalid):
        statement.decode(_wire_probes()[name])


SERIALS = st.lists(
    st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), min_size=1, max_size=5, unique=True
)


@settings(max_examples=150, deadline=None)
@given(SERIALS, st.text(max_size=30), st.integers(0, 2**64 - 1))
def test_statement_round_trip(serials: list[str], site: str, at: int) -> None:
    s = _fabricated([(x, ZERO_HASH) for x in serials], at=at, site=site)
    again = statement.decode(s.wire)
    assert again == s
    assert msgpack.packb([again.body, again.signature], use_bin_type=True) == s.wire
    assert (
        statement.encode_body(
            origin=again.origin,
            kind=again.kind,
            at=again.at,
            signer=again.signer,
            units=again.units,
            data=again.data,
        )
        == s.body
    )
    statement.verify_signature(again, KEY.public)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_single_byte_change_of_a_wire_form_is_caught(data: st.DataObject) -> None:
    s = _fabricated([("SN-1", ZERO_HASH), ("SN-2", ZERO_HASH)])
    position = data.draw(st.integers(0, len(s.wire) - 1))
    mask = data.draw(st.integers(1, 255))
    changed = bytearray(s.wire)
    changed[position] ^= mask
    try:
        forged = statement.decode(bytes(changed))
    except EncodingInvalid:
        return
    with pytest.raises(SignatureInvalid):
        statement.verify_signature(forged, KEY.public)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_an_encoding_failure_or_a_statement(data: bytes) -> None:
    try:
        s = statement.decode(data)
    except EncodingInvalid as e:
        assert e.check == "encoding"
        return
    assert s.wire == data  # pragma: no cover - hypothesis does not find valid statements by chance
