"""The stored form of the ledger's events: one codec, shared by every backend.

Each event is an `eventsourcing` stored event: an aggregate id (uuid5 of the origin and a name, so ids
never depend on what the database holds), a version (1 is the aggregate's creation event), a topic and a
msgpack state. The topics are frozen here as strings: they are what old databases hold, so renaming or
moving the aggregate classes must never change them (`ledger.aggregates` registers its classes under
these topics with `eventsourcing.utils.register_topic`). Writers build stored events directly, as
`Application.save` would through the mapper, so a 1,000-unit shipment does not pay for 1,000 aggregate
objects; `ledger.application` reads them back as aggregates through the library's repository.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import msgpack
import msgspec
from eventsourcing.persistence import StoredEvent, Transcoder

# --- topics, as stored since the first release: never change these strings -------------------------

LOG_CLASS = "ledger.aggregates:Log"
LOG_OPENED = "ledger.aggregates:Log.Opened"  # the genesis statement: log version 1
LOG_APPENDED = "ledger.aggregates:Log.Appended"
UNIT_CLASS = "ledger.aggregates:Unit"
UNIT_FABRICATED = "ledger.aggregates:Unit.Fabricated"  # a unit's first chain link
UNIT_LINKED = "ledger.aggregates:Unit.Linked"
CHECKPOINTS_CLASS = "ledger.aggregates:Checkpoints"
CHECKPOINTS_FIRST = "ledger.aggregates:Checkpoints.First"
CHECKPOINTS_SIGNED = "ledger.aggregates:Checkpoints.Signed"

LOG_TOPICS = (LOG_OPENED, LOG_APPENDED)
UNIT_TOPICS = (UNIT_FABRICATED, UNIT_LINKED)
CHECKPOINT_TOPICS = (CHECKPOINTS_FIRST, CHECKPOINTS_SIGNED)
KNOWN_TOPICS = frozenset((*LOG_TOPICS, *UNIT_TOPICS, *CHECKPOINT_TOPICS))
_CLASS_TOPIC = {LOG_OPENED: LOG_CLASS, UNIT_FABRICATED: UNIT_CLASS, CHECKPOINTS_FIRST: CHECKPOINTS_CLASS}


# A statement without units ends its canonical body with `"units": [], "v": 1` (the keys sort last), and
# its wire form follows the body with the signature's `bin 8` header: these bytes are in every stored log
# event of an administrative statement or a declaration, which decide the authority a writer relies on. A
# step's event may hold them too (in a text field, say): candidates are decoded and told apart, never
# trusted for what they are.
WITHOUT_UNITS = b"\xa5units\x90\xa1v\x01\xc4\x40"


# --- aggregate ids: RFC 4122 §4.3 name-based (uuid5) ------------------------------------------------


def log_id(origin: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"custody:{origin}/log")


def unit_id(origin: str, serial: str) -> UUID:
    """DESIGN: a unit aggregate per chip, identified by uuid5 of origin and serial."""
    return uuid5(NAMESPACE_URL, f"custody:{origin}/unit/{serial}")


# RFC 4122 §4.3 name-based UUID (version 5): `unit_id` without the UUID object
_NAMESPACE_URL = NAMESPACE_URL.bytes


def unit_hex(origin: str, serial: str) -> str:
    """`unit_id(origin, serial).hex`, several times faster: readers hash ids by the thousand."""
    name = f"custody:{origin}/unit/{serial}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_URL + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def checkpoints_id(origin: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"custody:{origin}/checkpoints")


# --- the transcoder: msgpack, because statements are bytes and JSON has none ----------------------

_DATETIME = 1
_UUID = 2


@functools.lru_cache(maxsize=16)
def _datetime(obj: datetime, offset: timedelta | None) -> msgpack.ExtType:
    """A writer stamps every event of a batch with one time: encode it once, not once per unit-step.

    Keyed by the offset too: equal instants with other offsets have other ISO forms."""
    return msgpack.ExtType(_DATETIME, obj.isoformat().encode())


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return _datetime(obj, obj.utcoffset())
    if isinstance(obj, UUID):
        return msgpack.ExtType(_UUID, obj.bytes)
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"cannot transcode {type(obj).__name__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _DATETIME:
        return datetime.fromisoformat(data.decode())
    if code == _UUID:
        return UUID(bytes=data)
    return msgpack.ExtType(code, data)


class MsgpackTranscoder(Transcoder):
    """Event state as msgpack: bytes stay bytes, datetimes and UUIDs as extension types."""

    def encode(self, obj: Any) -> bytes:
        return msgpack.packb(obj, use_bin_type=True, default=_default)  # type: ignore[no-any-return]

    def decode(self, data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, ext_hook=_ext_hook, strict_map_key=False)


_TRANSCODER = MsgpackTranscoder()


# --- stored events, out ----------------------------------------------------------------------------


def _stored(originator: UUID, version: int, topics: tuple[str, str], state: dict[str, Any],
            now: datetime) -> StoredEvent:
    """A stored event as the mapper would make it; version 1 is the aggregate's creation event."""
    topic = topics[0] if version == 1 else topics[1]
    state["timestamp"] = now
    if version == 1:
        state["originator_topic"] = _CLASS_TOPIC[topic]
    return StoredEvent(originator_id=originator, originator_version=version, topic=topic,
                       state=_TRANSCODER.encode(state))


def stored_log_event(origin: str, index: int, wire: bytes, range_: list[bytes],
                     now: datetime) -> StoredEvent:
    """Statement `index` as log version `index + 1`, with the Merkle compact range after it."""
    return _stored(log_id(origin), index + 1, LOG_TOPICS, {"wire": wire, "range": range_}, now)


def stored_unit_link(origin: str, serial: str, version: int, index: int, hash_: bytes, at: int,
                     now: datetime) -> StoredEvent:
    """Link `version` (1-based) of a unit's chain: the unit's statement at log `index`."""
    return _stored(unit_id(origin, serial), version, UNIT_TOPICS,
                   {"serial": serial, "index": index, "hash": hash_, "at": at}, now)


def stored_checkpoint(origin: str, version: int, size: int, note: str, now: datetime) -> StoredEvent:
    return _stored(checkpoints_id(origin), version, CHECKPOINT_TOPICS, {"size": size, "note": note}, now)


# --- stored events, in -----------------------------------------------------------------------------


def decode_state(state: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = _TRANSCODER.decode(state)
    return decoded


def decoded(state: bytes) -> dict[str, Any]:
    """A stored event's state, or {} when it cannot be decoded (the callers' checks then fail)."""
    try:
        found = decode_state(state)
    except Exception:  # msgpack raises a handful of unrelated types for bad input
        return {}
    return found if isinstance(found, dict) else {}


def origin_of(wire: bytes) -> str | None:
    """The origin named by a stored statement, read leniently (verify checks it properly)."""
    try:
        body = msgpack.unpackb(msgpack.unpackb(wire)[0], raw=False)
        origin = body.get("origin")
        return origin if isinstance(origin, str) else None
    except Exception:
        return None


# --- view rows (not events): msgpack of the fold's row lists ----------------------------------------

_BLOB = msgspec.msgpack.Encoder().encode  # the same msgpack bytes as msgpack.packb, several times faster


def blob(value: Any) -> bytes:
    """A view row as stored: msgpack of the fold's row list."""
    return _BLOB(value)


def unblob(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
