"""Offline audit bundles: one msgpack stream that anyone can re-verify, DESIGN.md "Bundles".

A bundle is a sequence of msgpack objects, with nothing before, between or after them:

1. a header map with exactly the keys `format` (``"custody-bundle/1"``) and `origin` (the ledger's
   name), canonically encoded (DESIGN.md "Statements", `ledger.canonical`);
2. each statement's wire form, ``msgpack.packb([body, signature], use_bin_type=True)``, verbatim and in
   log order from index 0;
3. the checkpoints (C2SP signed notes), each a msgpack `str` holding the whole note text, ascending by
   tree size.

A file whose first object is not a map with `format` = ``"custody-bundle/1"`` is not a bundle at all
(`NotALedger`, exit 2). Every other defect (a header with other keys or non-canonical bytes, a truncated
object, bytes that are not msgpack, an object out of place) is a verification failure (`EncodingInvalid`,
check `encoding`, exit 1), carrying the log index of the statement it concerns, or None where it
concerns no statement (the header, the checkpoints).

Writing and reading both stream: memory stays bounded by one chunk plus one object whatever the number
of statements. The reader hands out each statement's exact bytes as they appear in the file, without
decoding or re-encoding them, so the caller (`statement.decode`) judges them; it raises a defect only
when it reaches it, so every statement before the defect can still be checked and reported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import msgpack

from ledger import canonical
from ledger.errors import EncodingInvalid, NotALedger

FORMAT = "custody-bundle/1"  # DESIGN.md "Bundles": the header's `format`
HEADER_KEYS = frozenset({"format", "origin"})  # DESIGN.md "Bundles": exactly these header keys
SIGNATURE_SIZE = 64  # Ed25519 (RFC 8032); DESIGN.md "Statements": the wire form ends `c4 40` + signature

CHUNK_SIZE = 1 << 20  # bytes read or written per call
MAX_OBJECT_SIZE = 64 << 20  # a larger statement or checkpoint is refused rather than buffered
MAX_HEADER_SIZE = 64 << 10  # decide "not a bundle" without reading far into an arbitrary file

# Leading bytes of msgpack's format families (msgpack spec, "Formats").
_FIXMAP, _MAP16, _MAP32 = range(0x80, 0x90), 0xDE, 0xDF
_FIXARRAY, _ARRAY16, _ARRAY32 = range(0x90, 0xA0), 0xDC, 0xDD
_FIXSTR, _STR8, _STR16, _STR32 = range(0xA0, 0xC0), 0xD9, 0xDA, 0xDB
_BIN8, _BIN16, _BIN32 = 0xC4, 0xC5, 0xC6
_PAIR_HEADERS = (b"\x92", b"\xdc\x00\x02", b"\xdd\x00\x00\x00\x02")  # every encoding of a 2-element array
_SIGNATURE_HEADER = bytes([_BIN8, SIGNATURE_SIZE])


# --- writing ------------------------------------------------------------------------------------------


def encode_header(origin: str) -> bytes:
    """The canonical header map of a bundle of the ledger named `origin`."""
    if not isinstance(origin, str) or not origin:
        raise EncodingInvalid("a bundle's origin must be non-empty text")
    return canonical.pack({"format": FORMAT, "origin": origin})


def _wire_defect(wire: bytes) -> str | None:
    """Why `wire` is not one canonical `[bin body, bin signature]` array, or None if it is.

    Only the framing is checked (not the body), which is what keeps the written stream readable.
    """
    if not isinstance(wire, bytes | bytearray | memoryview):
        return f"a wire form must be bytes, not {type(wire).__name__}"
    wire = bytes(wire)
    size = len(wire)
    if size < 3 + len(_SIGNATURE_HEADER) + SIGNATURE_SIZE or wire[0] != 0x92:
        return "wire form is not a [body, signature] array"
    tag = wire[1]
    if tag == _BIN8:
        header, body_size, smallest = 2, wire[2], True
    elif tag == _BIN16:
        header, body_size = 3, int.from_bytes(wire[2:4], "big")
        smallest = body_size > 0xFF
    elif tag == _BIN32:
        header, body_size = 5, int.from_bytes(wire[2:6], "big")
        smallest = body_size > 0xFFFF
    else:
        return "wire form's body is not bin"
    if 1 + header + body_size + len(_SIGNATURE_HEADER) + SIGNATURE_SIZE != size:
        return "wire form's length disagrees with its headers"
    if wire[size - SIGNATURE_SIZE - 2:size - SIGNATURE_SIZE] != _SIGNATURE_HEADER:
        return "wire form's signature is not a 64-byte bin"
    if not smallest:
        return "wire form's body header is not the smallest"
    return None


def write_bundle(out: BinaryIO, origin: str, wires: Iterable[bytes], checkpoints: Iterable[str]) -> int:
    """Write a bundle to `out` and return the number of statements written.

    `wires` are written verbatim in the order given (log order, from index 0); `checkpoints` (signed note
    texts) are consumed only after the last wire, in the order given, which must be ascending by tree size.
    A wire form whose framing is not canonical raises `EncodingInvalid` at its index, since the bundle
    would not read back; `out` then holds a partial bundle, so write to a temporary file and rename.
    """
    pending: list[bytes] = [encode_header(origin)]
    pending_size = len(pending[0])
    count = 0
    for wire in wires:
        defect = _wire_defect(wire)
        if defect is not None:
            raise EncodingInvalid(defect, index=count)
        pending.append(wire)
        pending_size += len(wire)
        count += 1
        if pending_size >= CHUNK_SIZE:
            out.write(b"".join(pending))
            pending.clear()
            pending_size = 0
    for text in checkpoints:
        if not isinstance(text, str):
            raise EncodingInvalid(f"a checkpoint must be text, not {type(text).__name__}")
        pending.append(msgpack.packb(text, use_bin_type=True))
    out.write(b"".join(pending))
    return count


# --- reading raw objects ------------------------------------------------------------------------------


class _Defect(Exception):
    """The byte stream stops being msgpack at `offset`; the reader turns it into the right public error."""

    def __init__(self, offset: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.offset = offset
        self.kind = kind  # "truncated", "malformed" or "too_large"
        self.detail = detail


class _RawObjects:
    """The top-level msgpack objects of a stream, as the exact bytes they occupy in it.

    `msgpack.Unpacker.skip` finds each object's end without building it; the raw bytes are sliced from
    a buffer that keeps only the unfinished object and the chunk being read.
    """

    def __init__(self, stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self._stream = stream
        self._chunk_size = chunk_size
        self._unpacker: Any = msgpack.Unpacker(max_buffer_size=MAX_OBJECT_SIZE + 2 * chunk_size)
        self._buffer = b""  # stream bytes from absolute offset `_base`
        self._base = 0
        self.offset = 0  # absolute offset of the next object: the end of the last one handed out
        self.limit = MAX_OBJECT_SIZE
        self.eof = False

    def head(self) -> bytes:
        """The bytes read but not yet handed out: the start of the next object."""
        return self._buffer[self.offset - self._base:]

    def peek(self, size: int) -> bytes:
        """Up to `size` bytes of the next object, reading as needed."""
        while len(self._buffer) - (self.offset - self._base) < size and self._fill():
            pass
        return self.head()[:size]

    def _fill(self) -> bool:
        """Read one more chunk; False at the end of the stream."""
        if self.eof:
            return False
        chunk = self._stream.read(self._chunk_size)
        if not chunk:
            self.eof = True
            return False
        kept = self.head()
        if len(kept) > self.limit:
            raise _Defect(self.offset, "too_large", f"an object larger than {self.limit} bytes")
        self._buffer = kept + chunk
        self._base = self.offset
        try:
            self._unpacker.feed(chunk)
        except msgpack.BufferFull as e:  # pragma: no cover - `limit` stops this first
            raise _Defect(self.offset, "too_large", f"an object larger than {self.limit} bytes") from e
        return True

    def objects(self) -> Iterator[bytes]:
        """Each complete object's bytes; raises `_Defect` where the stream is not msgpack."""
        skip = self._unpacker.skip
        tell = self._unpacker.tell
        while True:
            try:
                skip()
            except msgpack.OutOfData:
                if self._fill():
                    continue
                if self.head():
                    raise _Defect(self.offset, "truncated", "the stream ends inside an object") from None
                return
            except msgpack.StackError as e:
                raise _Defect(self.offset, "malformed", "objects nested too deeply") from e
            except ValueError as e:  # FormatError: a byte msgpack never uses
                raise _Defect(self.offset, "malformed", "bytes that are not msgpack") from e
            start, end = self.offset, tell()
            if end - start > self.limit:
                raise _Defect(start, "too_large", f"an object larger than {self.limit} bytes")
            self.offset = end
            base = self._base
            yield self._buffer[start - base:end - base]


def _iter_raw_objects(stream: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[tuple[int, bytes]]:
    """(byte offset, exact bytes) of each top-level msgpack object of `stream`; `_Defect` where it breaks."""
    raw_objects = _RawObjects(stream, chunk_size)
    offset = 0
    for raw in raw_objects.objects():
        yield offset, raw
        offset += len(raw)


def _is_str(first: int) -> bool:
    return first in _FIXSTR or first in (_STR8, _STR16, _STR32)


def _is_array(first: int) -> bool:
    return first in _FIXARRAY or first in (_ARRAY16, _ARRAY32)


def _is_map(first: int) -> bool:
    return first in _FIXMAP or first in (_MAP16, _MAP32)


def _is_pair(raw: bytes) -> bool:
    """Whether `raw` is a 2-element array, however its header is encoded."""
    return raw.startswith(_PAIR_HEADERS)


def _shape(raw: bytes) -> str:
    """What a misplaced object is, for messages."""
    first = raw[0]
    if first in _FIXARRAY:
        return f"an array of {first & 0x0F} elements"
    if first in (_ARRAY16, _ARRAY32):
        return f"an array of {int.from_bytes(raw[1:3 if first == _ARRAY16 else 5], 'big')} elements"
    return _describe(first)


def _describe(first: int) -> str:
    """The msgpack family of an object that starts with byte `first`, for messages."""
    if _is_map(first):
        return "a map"
    if _is_array(first):
        return "an array"
    if _is_str(first):
        return "a str"
    if first in (_BIN8, _BIN16, _BIN32):
        return "a bin"
    if first <= 0x7F or first >= 0xE0 or 0xCC <= first <= 0xD3:
        return "an integer"
    if first == 0xC0:
        return "nil"
    if first in (0xC2, 0xC3):
        return "a boolean"
    if first in (0xCA, 0xCB):
        return "a float"
    return "an extension type"


# --- the header ---------------------------------------------------------------------------------------


def _map_entries_offset(head: bytes) -> int | None:
    """Where the entries of the map that `head` starts with begin, or None if its header is cut."""
    first = head[0]
    size = 1 if first in _FIXMAP else 3 if first == _MAP16 else 5
    return size if len(head) >= size else None


def _partial_header_names_format(head: bytes) -> bool:
    """Whether the complete entries of a cut header map include `format` = FORMAT.

    Such a file is a bundle that was truncated (exit 1), not some other file (exit 2).
    """
    start = _map_entries_offset(head)
    if start is None:
        return False
    # A map's entries are encoded one after the other, so they read as a stream of keys and values.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                                max_buffer_size=max(len(head), 1))
    unpacker.feed(head[start:])
    items: list[Any] = []
    with contextlib.suppress(ValueError, TypeError, msgpack.UnpackException):
        for item in unpacker:  # stops at the cut; a malformed entry ends the list too
            items.append(item)
    return any(key == "format" and value == FORMAT for key, value in zip(items[0::2], items[1::2],
                                                                         strict=False))


def _check_header(raw: bytes, name: str) -> str:
    """The origin named by a complete header map; `NotALedger` or `EncodingInvalid` as DESIGN.md says."""
    try:
        pairs: list[tuple[Any, Any]] = msgpack.unpackb(
            raw, raw=False, strict_map_key=False, object_pairs_hook=list,
            unicode_errors="surrogateescape")
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise NotALedger(f"{name} is not a custody bundle (its header is not msgpack)") from e
    if not any(key == "format" and value == FORMAT for key, value in pairs):
        raise NotALedger(f"{name} is not a custody bundle (its header does not name {FORMAT!r})")
    keys = [key for key, _ in pairs]
    if (len(keys) != len(HEADER_KEYS) or not all(isinstance(key, str) for key in keys)
            or set(keys) != HEADER_KEYS):
        raise EncodingInvalid(f"bundle header has keys {keys!r:.120}, not exactly format and origin")
    origin = dict(pairs)["origin"]
    if not isinstance(origin, str) or not origin:
        raise EncodingInvalid("bundle header's origin is not non-empty text")
    try:
        origin.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodingInvalid("bundle header's origin is not UTF-8") from None
    if encode_header(origin) != raw:
        raise EncodingInvalid("bundle header is not canonical msgpack")
    return origin


def _stream_name(stream: BinaryIO) -> str:
    name = getattr(stream, "name", None)
    return name if isinstance(name, str) else "the input"


def open_bundle(stream: BinaryIO, *, name: str | None = None, chunk_size: int = CHUNK_SIZE) -> BundleReader:
    """Read and check a bundle's header from `stream` (opened in binary mode) and return its reader.

    Raises `NotALedger` when the first object is not a map naming FORMAT (an empty file, not msgpack,
    another format, a header cut before it names the format), and `EncodingInvalid` (index None) for a
    header that names it but has other keys, an origin that is not text, non-canonical bytes, or is cut.
    `name` (default: the stream's file name) is used in messages.
    """
    name = name if name is not None else _stream_name(stream)
    raw_objects = _RawObjects(stream, chunk_size)
    first = raw_objects.peek(1)
    if not first:
        raise NotALedger(f"{name} is not a custody bundle (it is empty)")
    if not _is_map(first[0]):
        raise NotALedger(f"{name} is not a custody bundle (it does not start with a header map)")
    raw_objects.limit = MAX_HEADER_SIZE
    objects = raw_objects.objects()
    try:
        header = next(objects)
    except _Defect as defect:
        if defect.kind != "malformed" and _partial_header_names_format(raw_objects.head()):
            what = "is truncated" if defect.kind == "truncated" else f"is larger than {MAX_HEADER_SIZE} bytes"
            raise EncodingInvalid(f"bundle header {what}") from None
        why = {"truncated": "is cut short", "too_large": "is too large"}.get(defect.kind, "is not msgpack")
        raise NotALedger(f"{name} is not a custody bundle (its header map {why})") from None
    raw_objects.limit = MAX_OBJECT_SIZE
    return BundleReader(_check_header(header, name), raw_objects, objects)


# --- the reader ---------------------------------------------------------------------------------------

_STATEMENTS, _CHECKPOINTS, _DONE = "statements", "checkpoints", "done"


class BundleReader:
    """Reads a bundle after its header: `statements()`, then `checkpoints()`, each once, streaming."""

    def __init__(self, origin: str, raw_objects: _RawObjects, objects: Iterator[bytes]) -> None:
        self.origin = origin
        self._raw_objects = raw_objects
        self._objects = objects
        self._phase = _STATEMENTS
        self._count = 0
        self._first_checkpoint: bytes | None = None
        self._error: EncodingInvalid | None = None

    @property
    def statement_count(self) -> int:
        """The number of statements read so far (all of them once `statements()` is exhausted)."""
        return self._count

    @property
    def bytes_read(self) -> int:
        """Offset of the end of the last object handed out, for progress against the file's size."""
        return self._raw_objects.offset

    def _fail(self, error: EncodingInvalid) -> EncodingInvalid:
        """Remember the defect: the stream cannot be read past it, so every later call raises it again."""
        self._error = error
        self._phase = _DONE
        return error

    def _index_at(self, first: int | None) -> int | None:
        """The log index a defect concerns: the next statement's, unless it lies among the checkpoints."""
        if first is not None and _is_array(first):
            return self._count
        if self._phase == _CHECKPOINTS or (first is not None and _is_str(first)):
            return None
        return self._count

    def _error_for(self, defect: _Defect) -> EncodingInvalid:
        """The public error for a stream defect, with the log index it concerns."""
        head = self._raw_objects.head()
        first = head[0] if head else None
        index = self._index_at(first)
        if defect.kind == "truncated":
            where = ("a checkpoint" if first is not None and _is_str(first)
                     else f"statement {index}" if index is not None else "an object")
            detail = f"bundle is truncated inside {where} (at byte {defect.offset})"
        else:
            detail = f"bundle has {defect.detail} at byte {defect.offset}"
        return self._fail(EncodingInvalid(detail, index=index))

    def _next_raw(self) -> bytes | None:
        """The next object's bytes, None at the end; a stream defect raises `EncodingInvalid`."""
        try:
            return next(self._objects)
        except StopIteration:
            return None
        except _Defect as defect:
            raise self._error_for(defect) from None

    def statements(self) -> Iterator[tuple[int, bytes]]:
        """(log index, exact wire bytes) of each statement, in file order from index 0.

        Any 2-element array is handed out as it is, canonical or not, for `statement.decode` to judge.
        Raises `EncodingInvalid` on reaching a defect (any other object before the checkpoints, a
        truncated or non-msgpack object), after every statement before it has been handed out.
        """
        objects = self._objects
        while self._phase == _STATEMENTS:
            try:
                raw = next(objects)
            except StopIteration:
                self._phase = _DONE
                return
            except _Defect as defect:
                raise self._error_for(defect) from None
            if _is_pair(raw):
                index = self._count
                self._count = index + 1
                yield index, raw
            elif _is_str(raw[0]):
                self._first_checkpoint = raw
                self._phase = _CHECKPOINTS
            else:
                raise self._fail(EncodingInvalid(
                    f"bundle has {_shape(raw)} where statement {self._count} or a checkpoint should be "
                    f"(at byte {self._raw_objects.offset - len(raw)})", index=self._count))
        if self._error is not None:
            raise self._error

    def checkpoints(self) -> Iterator[str]:
        """Each checkpoint's signed note text, in file order; any unread statements are skipped first.

        Raises `EncodingInvalid` (index None, or the index a misplaced statement would have) on reaching
        a defect: text that is not UTF-8 or has a non-canonical str header, a statement after a
        checkpoint, any other object, a truncated or non-msgpack object.
        """
        for _ in self.statements():
            pass
        ordinal = 0
        while self._phase == _CHECKPOINTS:
            raw = self._first_checkpoint
            self._first_checkpoint = None
            if raw is None:
                raw = self._next_raw()
                if raw is None:
                    self._phase = _DONE
                    return
            offset = self._raw_objects.offset - len(raw)
            if _is_str(raw[0]):
                yield self._checkpoint_text(raw, ordinal, offset)
                ordinal += 1
            elif _is_array(raw[0]):
                raise self._fail(EncodingInvalid(
                    f"bundle has a statement after its checkpoints (at byte {offset})", index=self._count))
            else:
                raise self._fail(EncodingInvalid(
                    f"bundle has {_describe(raw[0])} where a checkpoint should be (at byte {offset})"))
        if self._error is not None:
            raise self._error

    def _checkpoint_text(self, raw: bytes, ordinal: int, offset: int) -> str:
        try:
            text: str = msgpack.unpackb(raw, raw=False)
        except UnicodeDecodeError:
            raise self._fail(EncodingInvalid(
                f"bundle checkpoint {ordinal} is not UTF-8 text (at byte {offset})")) from None
        if msgpack.packb(text, use_bin_type=True) != raw:
            raise self._fail(EncodingInvalid(
                f"bundle checkpoint {ordinal} has a non-canonical str header (at byte {offset})"))
        return text
