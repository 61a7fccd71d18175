"""The fast body decoder (msgspec) accepts exactly what the reference path accepts, with the same fields.

`statement.well_formed` may say None for anything (the reference path then decides); it must never accept
a body the reference path (`canonical.unpack`, then the field checks) refuses, nor return other fields.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_statement import GOOD_DATA, WIDTH_CHOICES, _body, _fits, _good, encode

from ledger import canonical, statement
from ledger.errors import EncodingInvalid


def reference(body: bytes) -> statement.Fields | None:
    try:
        return statement._fields(canonical.unpack(body))
    except EncodingInvalid:
        return None


def agrees(body: bytes) -> statement.Fields | None:
    """The fast path's answer, checked against the reference path's."""
    fast = statement.well_formed(body)
    if fast is not None:
        assert reference(body) == fast
    return fast


@pytest.mark.parametrize("kind", statement.KINDS)
def test_every_kind_takes_the_fast_path(kind: str) -> None:
    body = canonical.pack(_good(kind))
    assert agrees(body) is not None


def test_the_optional_field_takes_the_fast_path() -> None:
    body = _good("customer_approved")
    body["data"]["valid_until"] = 7
    assert agrees(canonical.pack(body)) == reference(canonical.pack(body))


# Every value a field could take, of every type msgpack has: the fast path must refuse the wrong ones.
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=70), st.binary(max_size=40), st.sampled_from(["pass", "fail", "fab", "US", "tw"]),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    st.lists(st.sampled_from(statement.ROLES), max_size=3),
    st.just("SN-1\n"), st.just(b"\x00" * 32),
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(statement.KINDS), st.data())
def test_any_field_value_agrees(kind: str, data: st.DataObject) -> None:
    body = _good(kind)
    where = data.draw(st.sampled_from(["data", "body", "unit"]))
    value = data.draw(ANY_VALUE)
    if where == "data":
        body["data"][data.draw(st.sampled_from([*GOOD_DATA[kind], "valid_until", "extra"]))] = value
    elif where == "body":
        body[data.draw(st.sampled_from(["v", "origin", "kind", "at", "signer", "units", "extra"]))] = value
    else:
        body["units"] = [[value, b"\x01" * 32]] if data.draw(st.booleans()) else [["SN-1", value]]
    try:
        packed = encode(body)
    except TypeError:
        return
    agrees(packed)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    st.sampled_from(statement.KINDS),
    st.fixed_dictionaries({k: st.sampled_from(v) for k, v in WIDTH_CHOICES.items()}),
    st.sampled_from(["sorted", "reversed", "given"]),
)
def test_other_encodings_agree(kind: str, widths: dict[str, int | None], order: str) -> None:
    body = _good(kind)
    assume(_fits(body, widths))
    packed = encode(body, widths, order)
    assert (agrees(packed) is not None) == (packed == canonical.pack(body))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(statement.KINDS), st.data())
def test_byte_changes_agree(kind: str, data: st.DataObject) -> None:
    packed = bytearray(canonical.pack(_good(kind)))
    at = data.draw(st.integers(0, len(packed) - 1))
    change = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    if change == "flip":
        packed[at] ^= data.draw(st.integers(1, 255))
    elif change == "insert":
        packed.insert(at, data.draw(st.integers(0, 255)))
    else:
        del packed[at]
    agrees(bytes(packed))


@pytest.mark.parametrize(
    "changes",
    [
        {"v": True},
        {"v": 1.0},
        {"at": True},
        {"at": -1},
        {"signer": "A" * 64},
        {"signer": "a" * 64 + "\n"},
        {"origin": ""},
        {"units": [["SN-1\n", statement.ZERO_HASH]]},
        {"units": [["SN-1", statement.ZERO_HASH], ["SN-1", statement.ZERO_HASH]]},
        {"units": []},
        {"units": [["SN-1", statement.ZERO_HASH, b""]]},
        {"data": {"model": "M", "site": "S", "lot": "L", "extra": 1}},
        {"data": {"model": "M", "site": "S"}},
        {"data": {"model": "M", "site": "S", "lot": None}},
    ],
)
def test_known_bad_bodies_leave_the_fast_path(changes: dict[str, Any]) -> None:
    packed = encode(_body(**changes))
    assert statement.well_formed(packed) is None
    with pytest.raises(EncodingInvalid):
        statement.decode_body(packed)


def test_repeated_key_leaves_the_fast_path() -> None:
    packed = canonical.pack(_good("fabricated"))
    # the map's header says one more pair; the last pair repeats the key "v"
    repeated = bytes([packed[0] + 1]) + packed[1:] + b"\xa1v\x01"
    assert statement.well_formed(repeated) is None
    with pytest.raises(EncodingInvalid):
        statement.decode_body(repeated)


@pytest.mark.parametrize("kind", ["participant_registered", "ledger_opened"])
def test_repeated_roles_and_keys_leave_the_fast_path(kind: str) -> None:
    body = _good(kind)
    if kind == "participant_registered":
        body["data"]["roles"] = ["fab", "fab"]
    else:
        body["data"]["authorities"] = body["data"]["authorities"] * 2
    packed = canonical.pack(body)
    assert statement.well_formed(packed) is None
    with pytest.raises(EncodingInvalid):
        statement.decode_body(packed)
