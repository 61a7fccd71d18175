"""The global log's Merkle tree: RFC 9162 §2.1 hashing, compact ranges, inclusion and consistency proofs.

Leaf hash = SHA-256(0x00 ‖ entry), node hash = SHA-256(0x01 ‖ left ‖ right), MTH of the empty tree =
SHA-256 of nothing (RFC 9162 §2.1.1). Proofs are generated as RFC 9162 §2.1.3.1 PATH and §2.1.4.1 PROOF /
SUBPROOF and verified with the §2.1.3.2 and §2.1.4.2 algorithms. Where the RFC is silent (sizes of 0,
equal sizes) the vectors in `../shared/vectors/merkle/` decide, as DESIGN.md "The global log" says:

- an inclusion proof needs 0 ≤ index < size, so nothing is ever included in the empty tree;
- a consistency proof between equal sizes (> 0) must be empty and proves root1 == root2;
- a consistency proof from size 0 is always refused: it proves nothing (the vectors refuse even 0 → 0),
  so a caller holding a checkpoint of size 0 compares its root with `EMPTY_ROOT` itself.

Verifiers raise `ProofInvalid` (its `index` is the leaf's log index for inclusion proofs); they never
return a bool. Generators raise `BadInput` for sizes or indices that have no proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import overload

from ledger.errors import BadInput, ProofInvalid

HASH_SIZE = 32  # RFC 9162 §2.1: SHA-256 output, the only hash algorithm the ledger uses
LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: MTH({d(0)}) = HASH(0x00 || d(0))
NODE_PREFIX = b"\x01"  # RFC 9162 §2.1.1: MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 9162 §2.1.1: MTH({}) = HASH()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1 hash of one log entry (for the ledger: a statement's wire form)."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1 hash of an interior node from its two children."""
    return _sha256(NODE_PREFIX + left + right).digest()


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes (RFC 9162 §2.1.1), in O(n) hashing and O(log n) memory."""
    return CompactRange.from_leaves(leaf_hashes).root()


def _hex(value: bytes) -> str:
    return value.hex()[:16] + "…" if len(value) > 8 else value.hex()


def _fold_right(hashes: Sequence[bytes]) -> bytes:
    """Merge perfect subtrees, largest (leftmost) first, into the root of their concatenation."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


# --- compact ranges -----------------------------------------------------------------------------------


class Leaves(Sequence[bytes]):
    """Leaf hashes held in one bytearray, 32 bytes each (no object per leaf); `data` may grow in place."""

    def __init__(self, data: bytearray | None = None) -> None:
        self.data = bytearray() if data is None else data

    def __len__(self) -> int:
        return len(self.data) // HASH_SIZE

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...

    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            return self.between(start, stop)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self.data[i * HASH_SIZE:(i + 1) * HASH_SIZE])

    def between(self, start: int, stop: int) -> list[bytes]:
        """The leaf hashes [start, stop)."""
        data = bytes(self.data[start * HASH_SIZE:stop * HASH_SIZE])
        return [data[k:k + HASH_SIZE] for k in range(0, len(data), HASH_SIZE)]


@dataclass(frozen=True, slots=True)
class CompactRange:
    """The compact range [0, size): one perfect-subtree hash per set bit of `size`, largest first.

    Enough to compute the root and to append, so a writer never rehashes the log (transparency-dev/merkle
    `compact/`). `hashes[i]` covers the leaves under the i-th highest set bit of `size`.
    """

    size: int
    hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise BadInput(f"compact range size must be a non-negative integer, not {self.size!r}")
        if len(self.hashes) != self.size.bit_count():
            raise BadInput(f"a compact range of size {self.size} has {self.size.bit_count()} hashes, "
                           f"not {len(self.hashes)}")
        for h in self.hashes:
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                raise BadInput(f"compact range hashes must be {HASH_SIZE} bytes")

    @classmethod
    def empty(cls) -> CompactRange:
        return cls(0, ())

    @classmethod
    def from_leaves(cls, leaf_hashes: Iterable[bytes]) -> CompactRange:
        """The compact range of a whole sequence of leaf hashes."""
        return cls(0, ()).extend(leaf_hashes)

    @classmethod
    def from_list(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild from `size` and `to_list()`; raises `BadInput` if they do not fit together."""
        return cls(size, tuple(hashes))

    def to_list(self) -> list[bytes]:
        return list(self.hashes)

    def append(self, leaf_hash: bytes) -> CompactRange:
        """The range with one more leaf: O(log n) hashing, merging equal-sized subtrees as they complete."""
        stack = list(self.hashes)
        _push(stack, self.size, _checked(leaf_hash, "leaf hash"))
        return CompactRange(self.size + 1, tuple(stack))

    def extend(self, leaf_hashes: Iterable[bytes]) -> CompactRange:
        """The range with every given leaf appended, in order.

        Level by level rather than leaf by leaf: each level's new nodes are hashed in pairs in one
        comprehension, after the range's own unpaired node of that level (if any) is put in front.
        """
        level = list(leaf_hashes)
        _check_all(level, "leaf hash")
        size = self.size + len(level)
        stack = list(self.hashes)  # the existing perfect subtrees, smallest (lowest level) last
        kept: list[bytes] = []  # the new range's subtrees below the untouched part of `stack`, lowest first
        position = self.size  # the index, within its level, of the first node of `level`
        while level:
            if position & 1:  # the range's unpaired node of this level pairs with the first new one
                level.insert(0, stack.pop())
                position -= 1
            if len(level) & 1:
                kept.append(level.pop())
            level = [_sha256(NODE_PREFIX + left + right).digest()
                     for left, right in zip(level[::2], level[1::2], strict=True)]
            position >>= 1
        stack.extend(reversed(kept))
        return CompactRange(size, tuple(stack))

    def root(self) -> bytes:
        """MTH of the leaves [0, size); `EMPTY_ROOT` for size 0."""
        if not self.hashes:
            return EMPTY_ROOT
        return _fold_right(self.hashes)


def _push(stack: list[bytes], size: int, h: bytes) -> None:
    """Append leaf number `size` to a compact-range stack, in place."""
    while size & 1:
        h = node_hash(stack.pop(), h)
        size >>= 1
    stack.append(h)


def _check_all(hashes: list[bytes], what: str) -> None:
    if set(map(type, hashes)) <= {bytes} and set(map(len, hashes)) <= {HASH_SIZE}:
        return  # the usual case, without a Python-level loop
    for h in hashes:
        _checked(h, what)


def _checked(h: bytes, what: str) -> bytes:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise BadInput(f"{what} must be {HASH_SIZE} bytes")
    return h


# --- proof generation ---------------------------------------------------------------------------------

_CACHE_HEIGHT = 6  # subtrees of 2^6 leaves and up are memoised; smaller ones are rehashed (≤ 63 hashes)


class ProofSource:
    """Answers inclusion and consistency proofs for one tree size, given the leaf hashes once.

    Perfect-subtree hashes are memoised from height `_CACHE_HEIGHT` up, so the first proof costs O(size)
    hashing and each further proof O(log size) lookups plus a few dozen hashes: a per-unit proof that
    needs tens of inclusion proofs against one checkpoint hashes the log once. `leaf_hashes` is read, not
    copied, and must not change while the source is in use.
    """

    def __init__(self, leaf_hashes: Sequence[bytes], size: int | None = None,
                 cache: dict[tuple[int, int], bytes] | None = None) -> None:
        """`cache` may be shared by the sources of one growing log (a perfect subtree never changes), so
        that a service answering proofs at each new size does not hash the log again."""
        if size is None:
            size = len(leaf_hashes)
        if size < 0 or size > len(leaf_hashes):
            raise BadInput(f"tree size {size} is not between 0 and the {len(leaf_hashes)} leaves given")
        self._leaves = leaf_hashes
        self._size = size
        self._cache: dict[tuple[int, int], bytes] = {} if cache is None else cache

    @property
    def size(self) -> int:
        return self._size

    def root(self) -> bytes:
        """MTH of the leaves [0, size)."""
        return self._mth(0, self._size)

    def inclusion_proof(self, index: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH(index, D[size]): sibling hashes from the leaf up to the root."""
        if not 0 <= index < self._size:
            raise BadInput(f"leaf index {index} is not in a tree of size {self._size}")
        proof: list[bytes] = []
        lo, hi = 0, self._size
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)  # largest power of two < hi - lo
            if index < lo + k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo += k
        proof.reverse()
        return proof

    def consistency_proof(self, size1: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF(size1, D[size]); empty for size1 == size, refused for size1 == 0."""
        if not 0 < size1 <= self._size:
            raise BadInput(f"no consistency proof from size {size1} to size {self._size}"
                           + (": the empty tree proves nothing" if size1 == 0 else ""))
        proof: list[bytes] = []
        lo, hi, whole = 0, self._size, True  # SUBPROOF(m, D[lo:hi], b) with m = size1 - lo
        while size1 != hi:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if size1 - lo <= k:
                proof.append(self._mth(lo + k, hi))
                hi = lo + k
            else:
                proof.append(self._mth(lo, lo + k))
                lo += k
                whole = False
        if not whole:
            proof.append(self._mth(lo, hi))
        proof.reverse()
        return proof

    def _mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a node of the RFC tree: `lo` is aligned to a power of two ≥ hi - lo."""
        if lo == hi:
            return EMPTY_ROOT
        parts: list[bytes] = []
        while lo < hi:
            height = (hi - lo).bit_length() - 1
            parts.append(self._perfect(height, lo >> height))
            lo += 1 << height
        return _fold_right(parts)

    def _perfect(self, height: int, i: int) -> bytes:
        """Hash of the perfect subtree of 2^height leaves starting at leaf i·2^height."""
        if height < _CACHE_HEIGHT:
            return self._rehash(height, i)
        key = (height, i)
        cached = self._cache.get(key)
        if cached is None:
            if height == _CACHE_HEIGHT:
                cached = self._rehash(height, i)
            else:
                cached = node_hash(self._perfect(height - 1, 2 * i), self._perfect(height - 1, 2 * i + 1))
            self._cache[key] = cached
        return cached

    def _rehash(self, height: int, i: int) -> bytes:
        start = i << height
        level = [_checked(h, "leaf hash") for h in self._leaves[start:start + (1 << height)]]
        while len(level) > 1:
            level = [node_hash(level[j], level[j + 1]) for j in range(0, len(level), 2)]
        return level[0]


def inclusion_proof(index: int, size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of the first `size` leaf hashes."""
    return ProofSource(leaf_hashes, size).inclusion_proof(index)


def consistency_proof(size1: int, size2: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof from the tree of size1 to that of size2 (0 < size1 ≤ size2)."""
    if size1 > size2:
        raise BadInput(f"no consistency proof from size {size1} back to size {size2}")
    return ProofSource(leaf_hashes, size2).consistency_proof(size1)


# --- verification -------------------------------------------------------------------------------------


def _check_proof_hashes(proof: Sequence[bytes], index: int | None) -> None:
    for i, h in enumerate(proof):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofInvalid(f"proof hash {i} is not {HASH_SIZE} bytes", index)


def root_from_inclusion_proof(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that `proof` gives for leaf `index` in a tree of `size` (RFC 9162 §2.1.3.2 steps 1–5)."""
    if not 0 <= index < size:
        raise ProofInvalid(f"leaf index {index} is not in a tree of size {size}", index)
    if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
        raise ProofInvalid(f"leaf hash is not {HASH_SIZE} bytes", index)
    _check_proof_hashes(proof, index)
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofInvalid(f"inclusion proof for leaf {index} of {size} is too long", index)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofInvalid(f"inclusion proof for leaf {index} of {size} is too short", index)
    return r


def verify_inclusion(index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise `ProofInvalid` unless `proof` shows `leaf_hash` is leaf `index` of the tree (size, root)."""
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if calculated != root:
        raise ProofInvalid(f"inclusion proof for leaf {index} of {size} gives root {_hex(calculated)}, "
                           f"not {_hex(root)}", index)


def root_from_consistency_proof(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """The size2 root that `proof` gives, after checking it leads back to `root1` (RFC 9162 §2.1.4.2).

    Equal sizes need an empty proof and give `root1`; size1 = 0 is refused (see the module docstring).
    """
    if size1 < 0 or size2 < size1:
        raise ProofInvalid(f"no consistency proof from size {size1} to size {size2}")
    if size1 == 0:
        raise ProofInvalid("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        if len(proof) != 0:
            raise ProofInvalid(f"consistency proof between equal sizes {size1} must be empty")
        return root1
    # Step 1.
    if len(proof) == 0:
        raise ProofInvalid(f"consistency proof from {size1} to {size2} is empty")
    if not isinstance(root1, bytes) or len(root1) != HASH_SIZE:
        raise ProofInvalid(f"root1 is not {HASH_SIZE} bytes")
    _check_proof_hashes(proof, None)
    path = list(proof)
    # Step 2: a perfect first tree is its own subtree; the proof omits its root.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Steps 3–4.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Steps 5–6.
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofInvalid(f"consistency proof from {size1} to {size2} is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofInvalid(f"consistency proof from {size1} to {size2} is too short")
    if fr != root1:
        raise ProofInvalid(f"consistency proof from {size1} to {size2} gives first root {_hex(fr)}, "
                           f"not {_hex(root1)}")
    return sr


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise `ProofInvalid` unless `proof` shows the tree (size2, root2) extends the tree (size1, root1)."""
    calculated = root_from_consistency_proof(size1, size2, proof, root1)
    if calculated != root2:
        raise ProofInvalid(f"consistency proof from {size1} to {size2} gives root {_hex(calculated)}, "
                           f"not {_hex(root2)}")
