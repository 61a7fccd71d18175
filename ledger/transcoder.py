"""A msgpack transcoder for `eventsourcing`: statements are bytes, and JSON has no bytes."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgpack
from eventsourcing.persistence import Transcoder

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
