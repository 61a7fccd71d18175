"""The log as C2SP tlog-tiles (c2sp.org/tlog-tiles): hash tiles and entry bundles, kept current in memory.

A `TiledLog` holds, per tile level, the hashes of every *full* subtree of 256^level leaves (level 0: the
leaf hashes, RFC 9162 §2.1.1), extended incrementally from the store's new log events: serving a tile is a
slice, never a read of the whole log. A level-l tile N of width W is the W hashes of level l from N·256;
it exists once the level holds N·256 + W hashes (full: W = 256). Entry bundles are read from the store per
range of 256 statements, each wire form after its big-endian uint16 length, and kept in a bounded cache
(they never change). Perfect-subtree hashes for proofs are shared by every `merkle.ProofSource` built here,
so a proof at a new tree size costs O(log n) lookups, not a pass over the log.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import msgpack

from ledger import merkle
from ledger.errors import LogIndexInvalid
from ledger.statement import Statement
from ledger.store import Store

TILE_WIDTH = 256  # c2sp.org/tlog-tiles: a full tile holds 256 hashes (8,192 bytes)
TILE_HEIGHT = 8  # log2(TILE_WIDTH): the levels of the Merkle tree one tile spans
MAX_LEVEL = 63  # c2sp.org/tlog-tiles: <L> is 0…63
MAX_ENTRY_SIZE = 0xFFFF  # c2sp.org/tlog-tiles: entries are uint16 length-prefixed
HASH_SIZE = merkle.HASH_SIZE
BUNDLE_CACHE = 512  # entry bundles kept in memory (a full one of ~300-byte statements: ~80 KB)

_GROUP = re.compile(r"x\d{3}")
_LAST = re.compile(r"\d{3}")
_LEVEL = re.compile(r"0|[1-9]\d?")
_WIDTH = re.compile(r"[1-9]\d{0,2}")


# --- paths --------------------------------------------------------------------------------------------


def encode_index(n: int) -> str:
    """c2sp.org/tlog-tiles <N>: 3-digit groups, all but the last prefixed `x` (1234067 → x001/x234/067)."""
    if n < 0:
        raise ValueError("a tile index is not negative")
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(level: int | None, n: int, width: int = TILE_WIDTH) -> str:
    """The path of a hash tile (level 0…63) or, for `level` None, an entry bundle; `.p/W` when partial."""
    head = "tile/entries" if level is None else f"tile/{level}"
    tail = "" if width == TILE_WIDTH else f".p/{width}"
    return f"{head}/{encode_index(n)}{tail}"


def parse_tile_path(path: str) -> tuple[int | None, int, int] | None:
    """(level or None for entries, N, width) of `tile/…` in its one canonical spelling, else None."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        return None
    if parts[1] == "entries":
        level: int | None = None
    elif _LEVEL.fullmatch(parts[1]) and int(parts[1]) <= MAX_LEVEL:
        level = int(parts[1])
    else:
        return None
    rest = parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _WIDTH.fullmatch(rest[-1]) or int(rest[-1]) >= TILE_WIDTH:
            return None
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2][:-2]]
    if not rest or not _LAST.fullmatch(rest[-1]) or not all(_GROUP.fullmatch(g) for g in rest[:-1]):
        return None
    n = int("".join([g[1:] for g in rest[:-1]] + [rest[-1]]))
    if encode_index(n).split("/") != rest:  # no leading x000 groups: one path per tile
        return None
    return level, n, width


def width_at(level: int, size: int) -> int:
    """c2sp.org/tlog-tiles: the width of the partial tile at `level` for a tree of `size`."""
    return int(size // TILE_WIDTH**level) % TILE_WIDTH


# --- the tree -----------------------------------------------------------------------------------------


def _subtree_root(hashes: bytes) -> bytes:
    """MTH of a perfect tree whose bottom level is `hashes` (a power of two of them, concatenated)."""
    level = [hashes[i:i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]
    sha = hashlib.sha256
    while len(level) > 1:
        level = [sha(merkle.NODE_PREFIX + level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0]


class TiledLog:
    """The store's log as tiles and Merkle proofs, brought up to date by `refresh` (thread-safe)."""

    def __init__(self) -> None:
        self.levels: list[bytearray] = [bytearray()]  # level l: hashes of full 256^l-leaf subtrees
        self.leaves = merkle.Leaves(self.levels[0])
        self.admin: dict[bytes, int] = {}  # statement hash → index, for statements without units
        self.admin_entries: list[tuple[int, bytes]] = []  # those statements, (index, wire), in log order
        self._subtrees: dict[tuple[int, int], bytes] = {}  # shared by every ProofSource of this log
        self._lock = threading.Lock()
        self._bundles: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    @property
    def size(self) -> int:
        return int(len(self.levels[0]) // HASH_SIZE)

    def refresh(self, store: Store) -> int:
        """Read the log events beyond what is held; returns the size now held."""
        with self._lock:
            start = self.size
            new = bytearray()
            index = start
            for event in store.log(start):
                if event.index != index:
                    raise LogIndexInvalid(f"the stored log jumps from index {index - 1} to {event.index}",
                                          index)
                new += merkle.leaf_hash(event.wire)
                kind_units = _units_of(event.wire)
                if kind_units is not None and not kind_units[1]:
                    self.admin[kind_units[0]] = index
                    self.admin_entries.append((index, event.wire))
                index += 1
            if new:
                self.append_leaves(new)
            return self.size

    def extend(self, start: int, statements: Sequence[Statement]) -> bool:
        """Add `statements`, just appended at `start`, …, without reading them back; False (nothing done)
        unless the log held ends at `start`."""
        with self._lock:
            if start != self.size:
                return False
            new = bytearray()
            for index, statement in enumerate(statements, start):
                new += merkle.leaf_hash(statement.wire)
                if not statement.units:
                    self.admin[statement.hash] = index
                    self.admin_entries.append((index, statement.wire))
            self.append_leaves(new)
            return True

    def append_leaves(self, hashes: bytes | bytearray) -> None:
        """Add leaf hashes (32 bytes each, concatenated) and the full subtrees they complete."""
        self.levels[0] += hashes
        level = 0
        while True:
            below = self.levels[level]
            if level + 1 == len(self.levels):
                if len(below) < TILE_WIDTH * HASH_SIZE:
                    return
                self.levels.append(bytearray())
            above = self.levels[level + 1]
            done = len(above) // HASH_SIZE
            full = len(below) // (TILE_WIDTH * HASH_SIZE)
            if done == full:
                return
            for n in range(done, full):
                start = n * TILE_WIDTH * HASH_SIZE
                above += _subtree_root(bytes(below[start:start + TILE_WIDTH * HASH_SIZE]))
            level += 1

    def tile(self, level: int, n: int, width: int) -> bytes | None:
        """The hash tile, or None where the log held does not determine it."""
        if level >= len(self.levels):
            return None
        data = self.levels[level]
        start, stop = n * TILE_WIDTH, n * TILE_WIDTH + width
        if stop * HASH_SIZE > len(data):
            return None
        return bytes(data[start * HASH_SIZE:stop * HASH_SIZE])

    def bundle(self, store: Store, n: int, width: int) -> bytes | None:
        """The entry bundle, or None where the log held does not reach it."""
        start, stop = n * TILE_WIDTH, n * TILE_WIDTH + width
        if stop > self.size:
            return None
        key = (n, width)
        cached = self._bundles.get(key)
        if cached is not None:
            self._bundles.move_to_end(key)
            return cached
        parts = []
        for event in store.log(start, stop):
            parts.append(len(event.wire).to_bytes(2, "big") + event.wire)
        if len(parts) != width:
            raise LogIndexInvalid(f"the stored log has {len(parts)} statements in [{start}, {stop})", start)
        data = b"".join(parts)
        with self._lock:
            self._bundles[key] = data
            while len(self._bundles) > BUNDLE_CACHE:
                self._bundles.popitem(last=False)
        return data

    def admin_below(self, size: int) -> list[tuple[int, bytes]]:
        """The statements without units (administrative ones) at indices below `size`, (index, wire)."""
        with self._lock:
            return self.admin_entries[:bisect.bisect_left(self.admin_entries, (size, b""))]

    def tree(self, size: int) -> merkle.ProofSource:
        """Proofs and the root at `size` (≤ the size held)."""
        return merkle.ProofSource(self.leaves, size, cache=self._subtrees)


def _units_of(wire: bytes) -> tuple[bytes, bool] | None:
    """(statement hash, whether it has units) at a glance; None for what does not decode (verify's job)."""
    try:
        body = msgpack.unpackb(wire)[0]
        units = msgpack.unpackb(body).get("units")
    except Exception:
        return None
    return hashlib.sha256(body).digest(), bool(units)
