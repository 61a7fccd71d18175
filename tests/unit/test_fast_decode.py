"""The fast body decoder (msgspec) accepts exactly what the reference path accepts, with the same fields.

`statement.well_formed` may say None for anything (the reference path then decides); it must never accept
a body the reference path (`canonical.unpack`, then the field checks) refuses, nor return other fields.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger import canonical, statement
from ledger.errors import EncodingInvalid
from tests.unit.test_statement import GOOD_DATA, WIDTH_CHOICES, _body, _fits, _good, encode


def reference(body: bytes) -> statement.Fields | None:
    try:
        return statement.Fields(*statement._fields(canonical.unpack(body)))
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


# --- the fast path's own mechanisms, each probed where it differs from the reference path's -------------
#
# The fast path decodes the whole body, data included, with one structure per kind (picked by the body's
# `kind`) and checks its canonical form with one re-encoding; it tests signer, country and id patterns
# without the reference path's regular expressions. Each probe below would be accepted if that mechanism
# were wrong.


def _with_data(kind: str, data: bytes) -> bytes:
    """A canonical body of `kind` but for its data, which is exactly the bytes `data`."""
    placeholder = "data-placeholder"
    packed = canonical.pack({**_good(kind), "data": placeholder})
    return packed.replace(canonical.pack(placeholder), data)


def _refused(packed: bytes) -> None:
    assert statement.well_formed(packed) is None
    with pytest.raises(EncodingInvalid):
        statement.decode_body(packed)


@pytest.mark.parametrize("kind", ["fabricated", "duty_paid", "participant_registered", "customer_approved"])
@pytest.mark.parametrize("widths, order", [
    ({}, "reversed"), ({"int": 8}, "sorted"), ({"str": 1}, "sorted"), ({"map": 2}, "sorted"), ({"bin": 2}, "sorted"),
    ({"array": 2}, "sorted"),
])
def test_non_canonical_data_in_a_canonical_body_leaves_the_fast_path(
        kind: str, widths: dict[str, int | None], order: str) -> None:
    data = dict(GOOD_DATA[kind])
    if kind == "customer_approved":
        data["valid_until"] = 9
    assert agrees(_with_data(kind, encode(data))) is not None  # the probe is sound: canonical data passes
    changed = encode(data, widths, order)
    if changed != encode(data):  # some widths do not apply to some kinds' data
        _refused(_with_data(kind, changed))


def test_repeated_data_key_leaves_the_fast_path() -> None:
    data = encode(GOOD_DATA["fabricated"])
    # the data map's header says one more pair; the last pair repeats the key "site"
    _refused(_with_data("fabricated", bytes([data[0] + 1]) + data[1:] + encode("site") + encode("S")))


def test_repeated_kind_leaves_the_fast_path() -> None:
    packed = canonical.pack(_good("shipped_to_us"))
    _refused(bytes([packed[0] + 1]) + packed[1:] + encode("kind") + encode("fabricated"))
    _refused(bytes([packed[0] + 1]) + packed[1:] + encode("kind") + encode("shipped_to_us"))


@pytest.mark.parametrize("kind, units", [
    ("ledger_opened", [["SN-1", statement.ZERO_HASH]]),
    ("fabricated", []),
    ("customer_approved", [["SN-1", statement.ZERO_HASH]]),
])
def test_units_count_by_kind(kind: str, units: list[Any]) -> None:
    _refused(canonical.pack({**_good(kind), "units": units}))


SIGNERS = [
    "A" * 64, "0" * 63, "0" * 65, "g" * 64, "é" * 64, "０" * 64, "ab " * 20 + "abcd", " " + "a" * 63,
    "a" * 63 + "\n", "\t" + "a" * 63, "ab" * 31 + " a",
]


@pytest.mark.parametrize("signer", SIGNERS)
def test_signers_that_are_not_key_ids_leave_the_fast_path(signer: str) -> None:
    _refused(canonical.pack({**_good("fabricated"), "signer": signer}))


COUNTRIES = ["us", "Us", "U", "USA", "", "ÄB", "ＵＳ", "U1", "U ", "US\n", "ǅA"]
IDS = ["", "a" * 65, "SN-1\n", "SN 1", "é", "SN①", "ＳＮ１", "ǅ", "SN/1", "Ⅻ", "٣"]


@pytest.mark.parametrize("country", COUNTRIES)
def test_countries_that_are_not_two_capitals_leave_the_fast_path(country: str) -> None:
    _refused(canonical.pack({**_good("inspected"), "data": {**GOOD_DATA["inspected"], "country": country}}))


@pytest.mark.parametrize("text", IDS)
def test_ids_outside_the_pattern_leave_the_fast_path(text: str) -> None:
    _refused(canonical.pack({**_good("re_exported"), "units": [[text, b"\x01" * 32]]}))
    _refused(canonical.pack({**_good("re_exported"), "data": {**GOOD_DATA["re_exported"], "consignee": text}}))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["signer", "country", "serial", "consignee"]),
       st.one_of(st.text(max_size=70), st.text(alphabet="0123456789abcdefABCDEF -._\n", min_size=60, max_size=66),
                 st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-", max_size=66)))
def test_pattern_fields_take_the_fast_path_exactly_when_the_reference_accepts(field: str, text: str) -> None:
    body = _good("re_exported")
    if field == "signer":
        body["signer"] = text
    elif field == "country":
        body["data"]["destination"] = text
    elif field == "serial":
        body["units"] = [[text, b"\x01" * 32]]
    else:
        body["data"]["consignee"] = text
    packed = canonical.pack(body)
    assert (agrees(packed) is not None) == (reference(packed) is not None)


def test_key_id_signers_take_the_fast_path() -> None:
    for signer in ("0" * 64, "f" * 64, "0123456789abcdef" * 4):
        assert agrees(canonical.pack({**_good("fabricated"), "signer": signer})) is not None
