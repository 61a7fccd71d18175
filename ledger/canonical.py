"""Canonical msgpack, as DESIGN.md "Statements" defines it.

Canonical bytes are exactly what `msgpack.packb(obj, use_bin_type=True)` emits once every map has its
keys in ascending UTF-8 byte order: smallest widths and headers, `bin` for bytes, `str` for text, unique
`str` map keys, and no floats, nil, booleans or extension types. Decoding accepts only bytes that
re-encode to themselves, which rules out every other encoding of the same value.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ledger.errors import EncodingInvalid

Value = int | str | bytes | list["Value"] | dict[str, "Value"]

# Statements nest three deep (body → units → pair); a cap keeps hostile nesting from exhausting the
# Python stack (a RecursionError is not an EncodingInvalid) long before msgpack's own limit.
MAX_DEPTH = 32
_PLAIN = frozenset({int, str, bytes})  # exact types (bool is a subclass of int, not `int`)


def _check(obj: Any, depth: int = 0) -> Any:
    """Rebuild `obj` with sorted maps, refusing types outside the canonical subset."""
    if depth > MAX_DEPTH:
        raise EncodingInvalid(f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, bool | float | msgpack.ExtType) or obj is None:  # ExtType is a tuple: test it first
        raise EncodingInvalid(f"{type(obj).__name__} is not allowed in canonical msgpack")
    if isinstance(obj, int | str | bytes):
        return obj
    if isinstance(obj, list | tuple):
        if depth < MAX_DEPTH - 1:  # plain items and pairs of them (the units' [serial, prev]) need no call
            return [item if type(item) in _PLAIN or (type(item) is list and len(item) == 2 and type(item[0])
                                                     in _PLAIN and type(item[1]) in _PLAIN)
                    else _check(item, depth + 1) for item in obj]
        return [_check(item, depth + 1) for item in obj]
    if isinstance(obj, dict):
        plain = True
        for key in obj:
            if not isinstance(key, str):
                raise EncodingInvalid("map keys must be text")
            plain = plain and type(key) is str
        # for exact str keys, code point order is UTF-8 byte order (RFC 3629 §1)
        keys = sorted(obj) if plain else sorted(obj, key=lambda k: k.encode("utf-8"))
        if depth < MAX_DEPTH:
            return {key: value if type(value := obj[key]) in _PLAIN else _check(value, depth + 1)
                    for key in keys}
        return {key: _check(obj[key], depth + 1) for key in keys}
    raise EncodingInvalid(f"{type(obj).__name__} is not allowed in canonical msgpack")


def pack(obj: Any) -> bytes:
    """The canonical encoding of `obj`; raises `EncodingInvalid` for values outside the subset."""
    try:
        return msgpack.packb(_check(obj), use_bin_type=True)  # type: ignore[no-any-return]
    except (OverflowError, ValueError) as e:
        raise EncodingInvalid(f"cannot encode: {e}") from e


def unpack(data: bytes) -> Any:
    """Decode canonical bytes; raises `EncodingInvalid` for anything that is not exactly canonical."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, timestamp=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            UnicodeDecodeError) as e:
        raise EncodingInvalid(f"not msgpack: {e or type(e).__name__}") from e
    if pack(obj) != data:
        raise EncodingInvalid("not canonical msgpack (key order, integer width or header size)")
    return obj
