"""RFC 9162 Merkle tree: known answers, the shared vectors, probes that must fail, and properties.

Each verifier test first proves the valid case passes, then lists every probe that wrongly passed
(transparency-dev/merkle `verifierCheck`). Wrong-size probes are those a proof must catch on its own:
for inclusion the size doubled or halved, for consistency size1 ±1, size1 ^ 2, size2 doubled or halved.
A size off by one can share a proof's shape; it is the signed checkpoint, not the proof, that binds it.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import BadInput, ProofInvalid
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofSource,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from tests.conftest import SHARED

MERKLE_VECTORS = SHARED / "vectors" / "merkle"
STATEMENTS = SHARED / "vectors" / "custody" / "statements.json"

# transparency-dev/merkle's test leaves; their hashes and roots are pinned below as literals.
GO_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                       "606162636465666768696a6b6c6d6e6f")]
GO_LEAF_HASHES = [leaf_hash(d) for d in GO_LEAVES]
PINNED_LEAF0 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"  # inclusion/0/happy-path
PINNED_ROOT3 = "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"
PINNED_ROOT8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"  # consistency/1 root2
PINNED_PROOF_1_8 = [  # consistency/1/happy-path.json, also the inclusion proof of leaf 0 in 8
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
]
PINNED_PROOF_6_8 = [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(700)]


def _prefix_roots() -> list[bytes]:
    roots, cr = [EMPTY_ROOT], CompactRange.empty()
    for h in LEAVES:
        cr = cr.append(h)
        roots.append(cr.root())
    return roots


ROOTS = _prefix_roots()  # checked against root_of and a literal RFC reading below


# --- a literal reading of RFC 9162 §2.1, to compare the fast code with --------------------------------


def _k(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def rfc_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = _k(len(d))
    return node_hash(rfc_mth(d[:k]), rfc_mth(d[k:]))


def rfc_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*rfc_path(m, d[:k]), rfc_mth(d[k:])]
    return [*rfc_path(m - k, d[k:]), rfc_mth(d[:k])]


def rfc_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [rfc_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*rfc_subproof(m, d[:k], b), rfc_mth(d[k:])]
    return [*rfc_subproof(m - k, d[k:], False), rfc_mth(d[:k])]


# --- probes -------------------------------------------------------------------------------------------


def _fails(verify: Callable[..., None], *args: Any) -> bool:
    try:
        verify(*args)
    except ProofInvalid:
        return True
    return False


def _flip_bit(h: bytes, bit: int) -> bytes:
    return h[: bit // 8] + bytes([h[bit // 8] ^ (1 << bit % 8)]) + h[bit // 8 + 1:]


def _flipped(proof: list[bytes], i: int, mask: int) -> list[bytes]:
    wrong = list(proof)
    wrong[i] = bytes([wrong[i][0] ^ mask]) + wrong[i][1:]
    return wrong


def inclusion_probes(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes
                     ) -> list[tuple[str, tuple[Any, ...]]]:
    probes: list[tuple[str, tuple[Any, ...]]] = [
        ("index - 1", (index - 1, size, leaf, proof, root)),
        ("index + 1", (index + 1, size, leaf, proof, root)),
        ("index ^ 2", (index ^ 2, size, leaf, proof, root)),
        ("size * 2", (index, size * 2, leaf, proof, root)),
        ("size // 2", (index, size // 2, leaf, proof, root)),
        ("wrong leaf", (index, size, b"WrongLeaf", proof, root)),
        ("other leaf", (index, size, SOME_HASH, proof, root)),
        ("empty root", (index, size, leaf, proof, EMPTY_ROOT)),
        ("random root", (index, size, leaf, proof, SOME_HASH)),
        ("trailing garbage", (index, size, leaf, [*proof, b""], root)),
        ("trailing root", (index, size, leaf, [*proof, root], root)),
        ("preceding garbage", (index, size, leaf, [b"", *proof], root)),
        ("preceding root", (index, size, leaf, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        probes.append((f"proof[{i}] bit 3", (index, size, leaf, _flipped(proof, i, 8), root)))
    if proof:
        probes.append(("removed component", (index, size, leaf, proof[:-1], root)))
    if len(proof) > 1:
        probes.append(("inserted component", (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root)))
    return probes


def consistency_probes(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
                       ) -> list[tuple[str, tuple[Any, ...]]]:
    probes: list[tuple[str, tuple[Any, ...]]] = [
        ("size1 - 1", (size1 - 1, size2, proof, root1, root2)),
        ("size1 + 1", (size1 + 1, size2, proof, root1, root2)),
        ("size1 ^ 2", (size1 ^ 2, size2, proof, root1, root2)),
        ("size2 * 2", (size1, size2 * 2, proof, root1, root2)),
        ("size2 // 2", (size1, size2 // 2, proof, root1, root2)),
        ("wrong root1", (size1, size2, proof, b"WrongRoot", root2)),
        ("wrong root2", (size1, size2, proof, root1, b"WrongRoot")),
        ("other root1", (size1, size2, proof, SOME_HASH, root2)),
        ("other root2", (size1, size2, proof, root1, SOME_HASH)),
        ("swapped roots", (size1, size2, proof, root2, root1)),
        ("empty proof", (size1, size2, [], root1, root2)),
        ("trailing garbage", (size1, size2, [*proof, b""], root1, root2)),
        ("trailing root1", (size1, size2, [*proof, root1], root1, root2)),
        ("trailing root2", (size1, size2, [*proof, root2], root1, root2)),
        ("preceding garbage", (size1, size2, [b"", *proof], root1, root2)),
        ("preceding root1", (size1, size2, [root1, *proof], root1, root2)),
        ("preceding root2", (size1, size2, [root2, *proof], root1, root2)),
        ("preceding proof[0]", (size1, size2, [proof[0], *proof], root1, root2)),
        ("truncated proof", (size1, size2, proof[:-1], root1, root2)),
    ]
    for i in range(len(proof)):
        probes.append((f"proof[{i}] bit 4", (size1, size2, _flipped(proof, i, 16), root1, root2)))
    return probes


def check_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> list[str]:
    """Prove the valid case passes, then return every probe that wrongly passed."""
    assert root_from_inclusion_proof(index, size, leaf, proof) == root
    verify_inclusion(index, size, leaf, proof, root)
    return [desc for desc, args in inclusion_probes(index, size, leaf, proof, root)
            if not _fails(verify_inclusion, *args)]


def check_consistency(size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes) -> list[str]:
    assert root_from_consistency_proof(size1, size2, proof, root1) == root2
    verify_consistency(size1, size2, proof, root1, root2)
    return [desc for desc, args in consistency_probes(size1, size2, proof, root1, root2)
            if not _fails(verify_consistency, *args)]


# --- known answers (pinned here, so they hold without ../shared) --------------------------------------


def test_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.LEAF_PREFIX == b"\x00" and merkle.NODE_PREFIX == b"\x01"
    assert GO_LEAF_HASHES[0].hex() == PINNED_LEAF0
    assert root_of(GO_LEAF_HASHES[:3]).hex() == PINNED_ROOT3
    assert root_of(GO_LEAF_HASHES).hex() == PINNED_ROOT8
    assert root_of([]) == EMPTY_ROOT
    assert [h.hex() for h in consistency_proof(1, 8, GO_LEAF_HASHES)] == PINNED_PROOF_1_8
    assert [h.hex() for h in inclusion_proof(0, 8, GO_LEAF_HASHES)] == PINNED_PROOF_1_8
    assert [h.hex() for h in consistency_proof(6, 8, GO_LEAF_HASHES)] == PINNED_PROOF_6_8


def test_pinned_proofs_verify_and_every_probe_fails() -> None:
    root1 = bytes.fromhex(PINNED_LEAF0)
    root6, root8 = root_of(GO_LEAF_HASHES[:6]), bytes.fromhex(PINNED_ROOT8)
    proof = [bytes.fromhex(h) for h in PINNED_PROOF_1_8]
    assert check_inclusion(0, 8, GO_LEAF_HASHES[0], proof, root8) == []
    assert check_consistency(1, 8, proof, root1, root8) == []
    assert check_consistency(6, 8, [bytes.fromhex(h) for h in PINNED_PROOF_6_8], root6, root8) == []


def test_ledger_roots_at_every_size() -> None:
    """The golden ledger's leaf hashes give the independent implementation's root at every size."""
    if not STATEMENTS.is_file():
        pytest.skip(f"{STATEMENTS} is absent")
    data = json.loads(STATEMENTS.read_text())
    leaves = [bytes.fromhex(s["leaf_hash_hex"]) for s in data["statements"]]
    for size, root in data["roots"].items():
        assert root_of(leaves[:int(size)]).hex() == root, size
        assert CompactRange.from_leaves(leaves[:int(size)]).root().hex() == root, size


# --- the shared vectors -------------------------------------------------------------------------------


def _vector_files() -> list[Any]:
    if not MERKLE_VECTORS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{MERKLE_VECTORS} is absent"))]
    return [pytest.param(p, id=str(p.relative_to(MERKLE_VECTORS)))
            for p in sorted(MERKLE_VECTORS.rglob("*.json"))]


@pytest.mark.parametrize("path", _vector_files())
def test_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    b64 = base64.b64decode
    proof = [b64(h) for h in v["proof"] or []]
    try:
        if "leafIdx" in v:
            verify_inclusion(v["leafIdx"], v["treeSize"], b64(v["leafHash"]), proof, b64(v["root"]))
        else:
            verify_consistency(v["size1"], v["size2"], proof, b64(v["root1"]), b64(v["root2"]))
    except ProofInvalid as e:
        assert v["wantErr"], f"{v['desc']}: wrongly refused: {e}"
    else:
        assert not v["wantErr"], f"{v['desc']}: wrongly verified"


def test_vector_directory_is_complete() -> None:
    """Guards against a parametrisation that silently found nothing."""
    if not MERKLE_VECTORS.is_dir():
        pytest.skip(f"{MERKLE_VECTORS} is absent")
    assert len(list(MERKLE_VECTORS.rglob("*.json"))) >= 190


# --- edges where the RFC is silent ---------------------------------------------------------------------


def test_edge_sizes() -> None:
    h = LEAVES[0]
    for size in (0, 1):
        assert _fails(verify_inclusion, size, size, h, [], EMPTY_ROOT)  # index == size
    assert _fails(verify_inclusion, -1, 1, h, [], h)
    verify_inclusion(0, 1, h, [], h)
    verify_consistency(5, 5, [], ROOTS[5], ROOTS[5])
    assert root_from_consistency_proof(5, 5, [], ROOTS[5]) == ROOTS[5]
    assert _fails(verify_consistency, 5, 5, [], ROOTS[5], ROOTS[4])
    assert _fails(verify_consistency, 5, 5, [ROOTS[5]], ROOTS[5], ROOTS[5])
    assert _fails(verify_consistency, 0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert _fails(verify_consistency, 0, 3, [], EMPTY_ROOT, ROOTS[3])
    assert _fails(verify_consistency, 4, 3, [], ROOTS[4], ROOTS[3])
    assert _fails(verify_consistency, -1, 3, [], ROOTS[3], ROOTS[3])
    assert inclusion_proof(0, 1, LEAVES) == [] and consistency_proof(7, 7, LEAVES) == []


def test_generators_refuse_what_has_no_proof() -> None:
    for call in (lambda: inclusion_proof(3, 3, LEAVES), lambda: inclusion_proof(-1, 3, LEAVES),
                 lambda: inclusion_proof(0, 5, LEAVES[:4]), lambda: consistency_proof(0, 3, LEAVES),
                 lambda: consistency_proof(4, 3, LEAVES), lambda: ProofSource(LEAVES[:3], 4),
                 lambda: ProofSource(LEAVES, 9).consistency_proof(10)):
        with pytest.raises(BadInput):
            call()


def test_bad_hash_lengths_are_refused() -> None:
    with pytest.raises(ProofInvalid):
        verify_inclusion(0, 2, LEAVES[0][:31], [LEAVES[1]], ROOTS[2])
    with pytest.raises(ProofInvalid):
        verify_inclusion(0, 2, LEAVES[0], [LEAVES[1] + b"\x00"], ROOTS[2])
    with pytest.raises(ProofInvalid):
        verify_consistency(3, 4, [b"x" * 33, *consistency_proof(3, 4, LEAVES)[1:]], ROOTS[3], ROOTS[4])
    with pytest.raises(BadInput):
        CompactRange.empty().append(b"short")
    with pytest.raises(BadInput):
        CompactRange(3, (LEAVES[0],))
    with pytest.raises(BadInput):
        CompactRange(-1, ())


def test_proof_invalid_names_the_leaf_index() -> None:
    with pytest.raises(ProofInvalid) as info:
        verify_inclusion(5, 9, LEAVES[5], inclusion_proof(5, 9, LEAVES), ROOTS[8])
    assert info.value.index == 5 and info.value.check == "proof"


# --- exhaustive small trees ---------------------------------------------------------------------------


def test_small_trees_match_the_rfc_exhaustively() -> None:
    for size in range(0, 34):
        leaves = LEAVES[:size]
        assert root_of(leaves) == rfc_mth(leaves) == ROOTS[size]
        source = ProofSource(LEAVES, size)
        assert source.root() == ROOTS[size]
        wrong: list[str] = []
        for index in range(size):
            proof = source.inclusion_proof(index)
            assert proof == rfc_path(index, leaves)
            wrong += [f"leaf {index} of {size}: {d}" for d in
                      check_inclusion(index, size, LEAVES[index], proof, ROOTS[size])]
        for size1 in range(1, size + 1):
            proof = source.consistency_proof(size1)
            assert proof == (rfc_subproof(size1, leaves, True) if size1 < size else [])
            if size1 < size:
                wrong += [f"{size1} → {size}: {d}" for d in
                          check_consistency(size1, size, proof, ROOTS[size1], ROOTS[size])]
        assert wrong == []


def test_proof_source_caches_across_many_proofs() -> None:
    size = 677
    source = ProofSource(LEAVES, size)
    for index in range(0, size, 7):
        verify_inclusion(index, size, LEAVES[index], source.inclusion_proof(index), ROOTS[size])
    for size1 in range(1, size + 1, 13):
        verify_consistency(size1, size, source.consistency_proof(size1), ROOTS[size1], ROOTS[size])
    assert source.inclusion_proof(600) == inclusion_proof(600, size, LEAVES)


# --- properties ---------------------------------------------------------------------------------------


@st.composite
def tree_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, 300))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, 300))
    return draw(st.integers(1, size2)), size2


@settings(max_examples=150, deadline=None)
@given(tree_and_index(), st.data())
def test_inclusion_property(case: tuple[int, int], data: st.DataObject) -> None:
    size, index = case
    proof = inclusion_proof(index, size, LEAVES)
    assert check_inclusion(index, size, LEAVES[index], proof, ROOTS[size]) == []
    wrong_index = data.draw(st.integers(0, size).filter(lambda i: i != index))
    assert _fails(verify_inclusion, wrong_index, size, LEAVES[index], proof, ROOTS[size])
    other_root = data.draw(st.binary(min_size=32, max_size=32))
    assert _fails(verify_inclusion, index, size, LEAVES[index], proof, other_root)
    if proof:
        i, bit = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 255))
        wrong = list(proof)
        wrong[i] = _flip_bit(wrong[i], bit)
        assert _fails(verify_inclusion, index, size, LEAVES[index], wrong, ROOTS[size])


@settings(max_examples=150, deadline=None)
@given(two_sizes(), st.data())
def test_consistency_property(case: tuple[int, int], data: st.DataObject) -> None:
    size1, size2 = case
    proof = consistency_proof(size1, size2, LEAVES)
    if size1 == size2:
        assert proof == []
        verify_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2])
        return
    assert check_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2]) == []
    i, bit = data.draw(st.integers(0, len(proof) - 1)), data.draw(st.integers(0, 255))
    wrong = list(proof)
    wrong[i] = _flip_bit(wrong[i], bit)
    assert _fails(verify_consistency, size1, size2, wrong, ROOTS[size1], ROOTS[size2])
    other = data.draw(st.integers(1, 600).filter(lambda s: s != size1))
    assert _fails(verify_consistency, size1, size2, proof, ROOTS[other], ROOTS[size2])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300))
def test_compact_range_agrees_with_root_of_for_every_prefix(size: int) -> None:
    cr = CompactRange.empty()
    assert cr.root() == EMPTY_ROOT
    for n in range(size):
        cr = cr.append(LEAVES[n])
        assert cr.size == n + 1 and len(cr.hashes) == (n + 1).bit_count()
        assert cr.root() == ROOTS[n + 1]
    assert cr == CompactRange.from_leaves(LEAVES[:size])
    assert CompactRange.from_list(cr.size, cr.to_list()) == cr
    assert CompactRange.from_leaves(LEAVES[:size // 2]).extend(LEAVES[size // 2:size]) == cr


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.lists(st.binary(max_size=40), max_size=8))
def test_verifiers_only_raise_proof_invalid(a: int, b: int, proof: list[bytes]) -> None:
    # Anything but ProofInvalid escapes and fails the test.
    with contextlib.suppress(ProofInvalid):
        verify_inclusion(a, b, LEAVES[0], proof, ROOTS[b])
    with contextlib.suppress(ProofInvalid):
        verify_consistency(a, b, proof, ROOTS[a], ROOTS[b])
