"""Signed statements: body fields per kind, canonical bodies, key ids, signatures, hashes, the wire form.

DESIGN.md "Statements" and "Statement kinds and their data". A `Statement` is built from its decoded
wire bytes and never re-encoded: the stored bytes are the evidence.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple, Union

import msgpack
import msgspec
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from ledger import canonical
from ledger.errors import EncodingInvalid, SignatureInvalid

VERSION = 1
SIGNATURE_PREFIX = b"custody-ledger/v1\n"  # DESIGN.md "Statements": domain separation for signatures
ZERO_HASH = bytes(32)  # the `prev` of a `fabricated` unit
BODY_KEYS = frozenset({"v", "origin", "kind", "at", "signer", "units", "data"})
# DESIGN.md "Statements", Size: a wire form fits a C2SP tlog-tiles entry bundle (a uint16 length prefix)
MAX_WIRE_BYTES = 65_535

ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
COUNTRY_PATTERN = re.compile(r"[A-Z]{2}")
KEY_ID_PATTERN = re.compile(r"[0-9a-f]{64}")

STEPS = ("fabricated", "shipped_to_us", "inspected", "duty_paid", "re_exported", "received")  # the flow
TERMINAL_STEPS = ("destroyed", "withdrawn")  # DESIGN.md: no stage; they end a unit's journey
CUSTODY_STEPS = (*STEPS, "located", *TERMINAL_STEPS)  # every kind that covers units
DECLARATIONS = ("us_volume_reported",)  # signed by a participant, no units
ADMIN_KINDS = ("ledger_opened", "participant_registered", "key_revoked", "customer_approved",
               "customer_suspended", "policy_issued")
UNITLESS_KINDS = DECLARATIONS + ADMIN_KINDS
KINDS = CUSTODY_STEPS + UNITLESS_KINDS
ROLES = ("fab", "carrier", "inspector", "customs", "exporter", "customer")
STEP_ROLE = dict(zip(STEPS, ROLES, strict=True))  # the one role of each flow step
# Who may sign each participant kind (DESIGN.md "Statement kinds"): the flow steps' one role, and the rest.
KIND_ROLES: dict[str, frozenset[str]] = {
    **{kind: frozenset({role}) for kind, role in STEP_ROLE.items()},
    "located": frozenset({"customer"}),
    "destroyed": frozenset({"fab", "inspector", "exporter", "customer"}),
    "withdrawn": frozenset({"exporter"}),
    "us_volume_reported": frozenset({"exporter"}),
}
_Raw = tuple[str, str, int, str, tuple[tuple[str, bytes], ...], dict[str, Any]]  # `Fields`, as a plain tuple


class Fields(NamedTuple):
    """What a well-formed body holds (`decode_body`): the fields a `Statement` is built from."""

    origin: str
    kind: str
    at: int
    signer: str
    units: tuple[tuple[str, bytes], ...]
    data: dict[str, Any]


# Field types: "str", "id", "country", "int", "time", "key", "keys", "roles", "result".
_REQUIRED: dict[str, dict[str, str]] = {
    "fabricated": {"model": "str", "site": "str", "lot": "str"},
    "shipped_to_us": {"port_of_entry": "str", "waybill": "str"},
    "inspected": {"result": "result", "site": "str", "country": "country", "report": "str"},
    "duty_paid": {"entry": "str", "entered_value": "int", "duty": "int"},
    "re_exported": {"consignee": "id", "license": "str", "destination": "country"},
    "received": {"site": "str"},
    "located": {"site": "str", "country": "country", "method": "str"},
    "destroyed": {"method": "str", "site": "str", "certificate": "str"},
    "withdrawn": {"reason": "str", "destination": "country"},
    "us_volume_reported": {"model": "str", "from": "time", "until": "time", "us_units": "int"},
    "ledger_opened": {"authorities": "keys", "operator": "key", "policy": "str"},
    "participant_registered": {"id": "id", "name": "str", "country": "country", "roles": "roles",
                               "key": "key"},
    "key_revoked": {"key": "key", "effective": "time", "reason": "str"},
    "customer_approved": {"id": "id", "cap": "int", "license": "str"},
    "customer_suspended": {"id": "id", "reason": "str"},
    "policy_issued": {"policy": "str"},
}
_OPTIONAL: dict[str, dict[str, str]] = {
    "customer_approved": {"valid_until": "time"},
    "duty_paid": {"hts": "str", "importer": "str", "origin_country": "country"},
}


_CUSTODY_STEPS = frozenset(CUSTODY_STEPS)
_ACROSS = frozenset({"us_volume_reported"})  # kinds with a rule between fields (_check_across)
_UNITLESS = frozenset(UNITLESS_KINDS)


def data_fields(kind: str) -> tuple[str, ...]:
    """The required `data` fields of `kind`, in DESIGN.md's table order."""
    return tuple(_REQUIRED[kind])


def optional_fields(kind: str) -> tuple[str, ...]:
    """The optional `data` fields of `kind`, in DESIGN.md's table order."""
    return tuple(_OPTIONAL.get(kind, {}))


def key_id(public_key: bytes) -> str:
    """DESIGN.md: lowercase hex SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()


def statement_hash(body: bytes) -> bytes:
    """DESIGN.md: SHA-256 of the canonical body; what `prev` links to."""
    return hashlib.sha256(body).digest()


def signed_message(body: bytes) -> bytes:
    return SIGNATURE_PREFIX + body


class Statement(msgspec.Struct, frozen=True, gc=False):
    """One decoded, well-formed statement with the exact bytes it came from.

    A frozen msgspec structure rather than a frozen dataclass: verification makes one per statement, and
    this one is built several times faster (no `object.__setattr__` per field). It holds no cycles, so
    the garbage collector need not track it.
    """

    wire: bytes
    body: bytes
    signature: bytes
    hash: bytes
    origin: str
    kind: str
    at: int
    signer: str
    units: tuple[tuple[str, bytes], ...]
    data: Mapping[str, Any]

    @property
    def serials(self) -> tuple[str, ...]:
        return tuple(serial for serial, _ in self.units)

    @property
    def is_step(self) -> bool:
        return bool(self.units) or self.kind in _CUSTODY_STEPS


def valid_id(text: object) -> bool:
    return isinstance(text, str) and ID_PATTERN.fullmatch(text) is not None


def _check_field(kind: str, name: str, kind_of: str, value: object) -> None:
    where = f"{kind}.{name}"
    ok: bool
    if kind_of == "str":
        ok = isinstance(value, str)
    elif kind_of == "id":
        ok = valid_id(value)
    elif kind_of == "country":
        ok = isinstance(value, str) and COUNTRY_PATTERN.fullmatch(value) is not None
    elif kind_of in ("int", "time"):
        ok = isinstance(value, int) and value >= 0
    elif kind_of == "key":
        ok = isinstance(value, bytes) and len(value) == 32
    elif kind_of == "keys":
        ok = (isinstance(value, list) and len(value) > 0
              and all(isinstance(k, bytes) and len(k) == 32 for k in value)
              and len(set(value)) == len(value))
    elif kind_of == "roles":
        ok = (isinstance(value, list) and len(value) > 0 and all(r in ROLES for r in value)
              and len(set(value)) == len(value))
    elif kind_of == "result":
        ok = value in ("pass", "fail")
    else:  # pragma: no cover - a typo in the tables above
        raise AssertionError(kind_of)
    if not ok:
        raise EncodingInvalid(f"{where} has the wrong type or value {value!r:.80}")


def check_data(kind: str, data: object) -> None:
    """Raise `EncodingInvalid` unless `data` has exactly the fields of DESIGN.md's table for `kind`."""
    if not isinstance(data, dict):
        raise EncodingInvalid(f"{kind}: data is not a map")
    required = _REQUIRED[kind]
    optional = _OPTIONAL.get(kind, {})
    for name in data:
        if name not in required and name not in optional:
            raise EncodingInvalid(f"{kind}: unknown field {name!r:.80}")
    for name, kind_of in required.items():
        if name not in data:
            raise EncodingInvalid(f"{kind}: missing field {name!r}")
        _check_field(kind, name, kind_of, data[name])
    for name, kind_of in optional.items():
        if name in data:
            _check_field(kind, name, kind_of, data[name])
    _check_across(kind, data)


def _check_across(kind: str, data: Mapping[str, Any]) -> None:
    """The rules between fields: a volume declaration's period must not be empty (DESIGN.md)."""
    if kind == "us_volume_reported" and data["until"] <= data["from"]:
        raise EncodingInvalid(f"{kind}: until is not after from")


def _check_units(kind: str, units: object) -> tuple[tuple[str, bytes], ...]:
    if not isinstance(units, list):
        raise EncodingInvalid("units is not a list")
    if kind in _UNITLESS:
        if units:
            raise EncodingInvalid(f"{kind} must have no units")
        return ()
    if not units:
        raise EncodingInvalid(f"{kind} covers no units")
    pairs: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for pair in units:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise EncodingInvalid("a unit is not a [serial, prev] pair")
        serial, prev = pair
        if not valid_id(serial):
            raise EncodingInvalid(f"malformed serial {serial!r:.80}")
        if not (isinstance(prev, bytes) and len(prev) == 32):
            raise EncodingInvalid(f"unit {serial}: prev is not 32 bytes")
        if serial in seen:
            raise EncodingInvalid(f"serial {serial} repeated in one statement")
        seen.add(serial)
        pairs.append((serial, prev))
    return tuple(pairs)


def _fields(body_obj: object) -> _Raw:
    if not isinstance(body_obj, dict):
        raise EncodingInvalid("body is not a map")
    if set(body_obj) != BODY_KEYS:
        extra = sorted(set(body_obj) - BODY_KEYS)
        missing = sorted(BODY_KEYS - set(body_obj))
        raise EncodingInvalid(f"body keys wrong (unknown {extra}, missing {missing})")
    if body_obj["v"] != VERSION or isinstance(body_obj["v"], bool):
        raise EncodingInvalid(f"unsupported version {body_obj['v']!r:.20}")
    origin, kind, at, signer = body_obj["origin"], body_obj["kind"], body_obj["at"], body_obj["signer"]
    if not isinstance(origin, str) or not origin:
        raise EncodingInvalid("origin is not text")
    if kind not in KINDS:
        raise EncodingInvalid(f"unknown kind {kind!r:.40}")
    if not isinstance(at, int) or at < 0:
        raise EncodingInvalid("at is not a non-negative integer")
    if not isinstance(signer, str) or KEY_ID_PATTERN.fullmatch(signer) is None:
        raise EncodingInvalid("signer is not a key id")
    units = _check_units(kind, body_obj["units"])
    data = body_obj["data"]
    check_data(kind, data)
    return origin, kind, at, signer, units, data


def decode_body(body: bytes) -> Fields:
    """Decode and check a canonical body; returns its `Fields`."""
    return Fields(*_decode_body(body))


def _decode_body(body: bytes) -> _Raw:
    """`decode_body` as a plain tuple: `decode` makes one per statement."""
    fields = _well_formed(body)
    if fields is not None:
        return fields
    return _fields(canonical.unpack(body))  # the reference path: it names what is wrong


# --- the fast path: what `_fields(canonical.unpack(body))` accepts, checked in C (msgspec) ----------------
#
# A body of DESIGN's shape holds two maps (the body and its data) and, everywhere else, values whose exact
# types the field tables fix. msgspec decodes the body, data included, in one pass into the structure of
# its kind (a union tagged by `kind`), which refuses every other type (a bool is not an int, a float is not
# an int, no nil, no extension) and every unknown or missing field; the patterns, uniqueness and per-kind
# rules are checked here with tests that accept exactly what the reference path's tests accept. Once the
# body re-encodes to itself, keys sorted (both maps: every field name is ASCII, so msgspec's sorted order
# is canonical order), smallest widths, no repeated key, the reference path would accept the body too and
# return the same fields. Anything else goes to the reference path, which raises the error it has always
# raised. msgspec's encoder and msgpack's agree on these types (tests/test_statement.py checks it).

_Hash = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
_Count = Annotated[int, msgspec.Meta(ge=0)]
_FIELD_TYPES: dict[str, Any] = {
    "str": str, "id": str, "country": str, "int": _Count, "time": _Count, "key": _Hash,
    "keys": Annotated[list[_Hash], msgspec.Meta(min_length=1)],
    "roles": Annotated[list[Literal[ROLES]], msgspec.Meta(min_length=1)],  # type: ignore[valid-type]
    "result": Literal["pass", "fail"],
}
_COUNTRIES = frozenset(a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _fast_id(text: str) -> bool:
    """`ID_PATTERN.fullmatch(text)`, without the regular expression for the usual, alphanumeric id: an
    ASCII string that `isalnum` is all [A-Za-z0-9], a subset of the pattern's characters."""
    return (text.isalnum() and text.isascii() and len(text) <= 64) or ID_PATTERN.fullmatch(text) is not None


def _unique(values: list[Any]) -> bool:
    return len(set(values)) == len(values)


def _present(value: object) -> bool:
    return True


_FIELD_TESTS: dict[str, Callable[[Any], bool]] = {  # what the types above leave to Python
    "id": _fast_id,
    "country": _COUNTRIES.__contains__,  # exactly what COUNTRY_PATTERN matches: the 676 pairs of A-Z
    "keys": _unique,
    "roles": _unique,
}


class _Kind(NamedTuple):
    """What the fast path knows of one kind besides its structure: its name; the tests left to Python,
    (field, test) for each data field with a pattern or uniqueness to check and each optional field
    (absent, it decodes as UNSET and is dropped); whether it is a step (units) or an admin kind."""

    kind: str
    tests: tuple[tuple[str, Callable[[Any], bool]], ...]
    step: bool


def _structure(kind: str) -> tuple[type[msgspec.Struct], _Kind]:
    """The structure of `kind`'s whole body, tagged by `kind`, and the rest of what the fast path knows.

    msgspec refuses a required field after an optional one, so DESIGN's optional fields must sort last."""
    required, optional = _REQUIRED[kind], _OPTIONAL.get(kind, {})
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name in sorted({**required, **optional}):
        if name in required:
            fields.append((name, _FIELD_TYPES[required[name]]))
        else:
            fields.append((name, _FIELD_TYPES[optional[name]] | msgspec.UnsetType, msgspec.UNSET))
    data = msgspec.defstruct(f"_{kind}", fields, forbid_unknown_fields=True, gc=False)
    step = kind not in _UNITLESS
    units = Annotated[tuple[tuple[str, _Hash], ...], msgspec.Meta(min_length=1) if step else msgspec.Meta(max_length=0)]
    body = msgspec.defstruct(f"_{kind}_body", [
        ("at", _Count),
        ("data", data),
        ("origin", Annotated[str, msgspec.Meta(min_length=1)]),
        ("signer", Annotated[str, msgspec.Meta(min_length=64, max_length=64)]),
        ("units", units),
        ("v", Literal[1]),
    ], tag_field="kind", tag=kind, forbid_unknown_fields=True, gc=False)
    tests = tuple((name, _FIELD_TESTS.get(kind_of, _present)) for name, kind_of in {**required, **optional}.items()
                  if kind_of in _FIELD_TESTS or name in optional)
    return body, _Kind(kind, tests, step)


_STRUCTURES = dict(_structure(kind) for kind in KINDS)
_BODY: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(Union[tuple(_STRUCTURES)])  # noqa: UP007 (computed)
_ENCODE = msgspec.msgpack.Encoder().encode
_ENCODE_SORTED = msgspec.msgpack.Encoder(order="sorted").encode  # `kind`, the tag, among the other keys
_asdict = msgspec.structs.asdict
_fromhex = bytes.fromhex
_id_fullmatch = ID_PATTERN.fullmatch


def well_formed(body: bytes) -> Fields | None:
    """The fields of `body` if the reference path (`canonical.unpack`, then the field checks) would
    accept it; None if it might not (the caller then asks the reference path, which says why)."""
    fields = _well_formed(body)
    return None if fields is None else Fields(*fields)


def _well_formed(body: bytes) -> _Raw | None:
    """`well_formed` as a plain tuple."""
    try:
        obj = _BODY.decode(body)
        signer = obj.signer
        # KEY_ID_PATTERN: `signer` has 64 characters (its type says so), `fromhex` reads hex digits and
        # whitespace only (else ValueError) and `hex` writes lowercase hex digits only, so `signer` equals
        # what `hex` gives back exactly when it is 64 lowercase hex digits.
        if _fromhex(signer).hex() != signer:
            return None
    except Exception:  # msgspec's errors, UnicodeDecodeError, ValueError: the reference path says why
        return None
    kind, tests, step = _STRUCTURES[type(obj)]
    data = _asdict(obj.data)
    for name, test in tests:
        value = data[name]
        if value is msgspec.UNSET:
            del data[name]
        elif not test(value):
            return None
    units = obj.units
    if step:
        for serial, _ in units:  # _fast_id, inline
            if not (serial.isalnum() and serial.isascii() and len(serial) <= 64) and _id_fullmatch(serial) is None:
                return None
        if len(units) > 1 and len({serial for serial, _ in units}) != len(units):
            return None
    if kind in _ACROSS and data["until"] <= data["from"]:  # _check_across, inline
        return None
    # The one encoding check, of the body and its data at once.
    if _ENCODE_SORTED(obj) != body:
        return None
    return obj.origin, kind, obj.at, signer, units, data


_WIRE = msgspec.msgpack.Decoder(tuple[bytes, Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]])


def _outer(wire: bytes) -> tuple[bytes, bytes]:
    """(body, signature) of a canonical wire form; the fast path first, the reference checks otherwise."""
    try:
        body, signature = _WIRE.decode(wire)
        if _ENCODE((body, signature)) == wire:
            return body, signature
    except Exception:  # msgspec's errors: the reference checks below say what is wrong
        pass
    try:
        outer = msgpack.unpackb(wire, raw=False, use_list=True, strict_map_key=True, timestamp=0)
    except Exception as e:  # msgpack raises a handful of unrelated types for bad input
        raise EncodingInvalid(f"wire form is not msgpack: {e}") from e
    if not (isinstance(outer, list) and len(outer) == 2
            and isinstance(outer[0], bytes) and isinstance(outer[1], bytes)):
        raise EncodingInvalid("wire form is not [body, signature]")
    body, signature = outer
    if len(signature) != 64:
        raise EncodingInvalid("signature is not 64 bytes")
    if msgpack.packb([body, signature], use_bin_type=True) != wire:
        raise EncodingInvalid("wire form is not canonical")
    return body, signature


_sha256 = hashlib.sha256


def decode(wire: bytes) -> Statement:
    """Decode a statement from its wire form, refusing anything that is not exactly canonical or is larger
    than `MAX_WIRE_BYTES`."""
    if len(wire) > MAX_WIRE_BYTES:
        raise EncodingInvalid(f"wire form of {len(wire)} bytes is larger than {MAX_WIRE_BYTES}")
    body, signature = _outer(wire)
    origin, kind, at, signer, units, data = _decode_body(body)
    return Statement(wire, body, signature, _sha256(body).digest(), origin, kind, at, signer, units, data)


def encode_body(*, origin: str, kind: str, at: int, signer: str,
                units: Sequence[tuple[str, bytes]], data: Mapping[str, Any]) -> bytes:
    """The canonical body of a new statement, checked as `decode_body` would check it."""
    body = canonical.pack({"v": VERSION, "origin": origin, "kind": kind, "at": at, "signer": signer,
                           "units": [[serial, prev] for serial, prev in units], "data": dict(data)})
    decode_body(body)
    return body


def wire_size(body_size: int) -> int:
    """The size of the wire form of a body of `body_size` bytes: `0x92`, the body's smallest `bin` header
    and the body, `c4 40` and the 64-byte signature."""
    header = 2 if body_size <= 0xFF else 3 if body_size <= 0xFFFF else 5
    return 1 + header + body_size + 2 + 64


def _unit_size(serial: str) -> int:
    """Bytes one `[serial, prev]` pair adds to a body: fixarray, str header and serial, `c4 20` and prev."""
    size = len(serial.encode("utf-8"))
    return 1 + (1 if size <= 31 else 2 if size <= 0xFF else 3) + size + 2 + 32


def _array_header(count: int) -> int:
    return 1 if count <= 15 else 3 if count <= 0xFFFF else 5


def split_units(*, origin: str, kind: str, signer: str, data: Mapping[str, Any],
                serials: Sequence[str]) -> list[list[str]]:
    """`serials` cut, in order, into the fewest runs whose statements (this origin, kind, signer and data)
    each fit `MAX_WIRE_BYTES`, whatever their `at` (counted at its widest). Empty if one unit alone does
    not fit."""
    empty = len(canonical.pack({"v": VERSION, "origin": origin, "kind": kind, "at": 2**64 - 1,
                                "signer": signer, "units": [], "data": dict(data)}))
    runs: list[list[str]] = []
    run: list[str] = []
    units_size = 0
    for serial in serials:
        size = _unit_size(serial)
        body = empty - 1 + _array_header(len(run) + 1) + units_size + size
        if run and wire_size(body) > MAX_WIRE_BYTES:
            runs.append(run)
            run, units_size = [], 0
            body = empty - 1 + _array_header(1) + size
        if wire_size(body) > MAX_WIRE_BYTES:
            return []
        run.append(serial)
        units_size += size
    if run:
        runs.append(run)
    return runs


def assemble(body: bytes, signature: bytes) -> Statement:
    """The statement whose wire form carries `body` and `signature`."""
    return decode(msgpack.packb([body, signature], use_bin_type=True))


def signature_valid(body: bytes, signature: bytes, public_key: bytes) -> bool:
    """Whether libsodium accepts `signature` on `body` (domain-separated) under `public_key`."""
    try:
        VerifyKey(public_key).verify(signed_message(body), signature)
    except (BadSignatureError, ValueError):
        return False
    return True


def verify_signature(statement: Statement, public_key: bytes, index: int | None = None) -> None:
    """Raise `SignatureInvalid` unless libsodium accepts the signature under `public_key`."""
    if not signature_valid(statement.body, statement.signature, public_key):
        raise SignatureInvalid(f"{statement.kind} signature does not verify", index)
