"""The log's tree head (RFC 9162), as the operator signs it and as everyone checks it against the store.

The operator signs the current tree head as a C2SP checkpoint (`sign_tree_head`) and stores it as a
`Checkpoints` event. It never signs a checkpoint that is inconsistent with one it stored before: the
log's leaves are re-read and a consistency proof from the latest stored checkpoint must verify
(`require_extends`, which witnesses run too). `ledger_identity`, `read_leaves` and `stored_notes` are
what cosigning, witnessing and per-unit proofs read of the store first.

Errors: a store that holds no ledger is `NotALedger` (exit 2); a log that disagrees with its own tree
head or checkpoints raises an `IntegrityError` naming the check (exit 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ledger import checkpoint as notes
from ledger import merkle
from ledger.checkpoint import Checkpoint, ParsedNote
from ledger.errors import (
    BadInput,
    CheckpointInconsistent,
    CheckpointSignatureInvalid,
    Conflict,
    GenesisUntrusted,
    IntegrityError,
    LedgerError,
    LogIndexInvalid,
    NotALedger,
    RootMismatch,
)
from ledger.keys import PrivateKey
from ledger.statement import Statement, decode, key_id
from ledger.store import Store
from ledger.store.codec import stored_checkpoint

SIGN_ATTEMPTS = 5  # `sign_tree_head` retries when another signer stored a checkpoint first


# --- the log as stored --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    """What every transparency operation needs to know first: the origin and the operator's key."""

    origin: str
    operator: bytes
    genesis: Statement


def ledger_identity(store: Store) -> Ledger:
    """The ledger's origin and operator key, from its genesis statement."""
    if not store.opened or store.origin is None:
        raise NotALedger(f"{store.url} holds no ledger (run `custody init`)")
    first = next(iter(store.log(0, 1)), None)
    if first is None:
        raise NotALedger(f"{store.url} holds no ledger (run `custody init`)")
    genesis = decode(first.wire)
    if genesis.kind != "ledger_opened":
        raise GenesisUntrusted(f"index 0 is {genesis.kind}, not ledger_opened", 0)
    return Ledger(genesis.origin, genesis.data["operator"], genesis)


def read_leaves(store: Store, size: int, visit: Callable[[int, bytes], None] | None = None) -> list[bytes]:
    """RFC 9162 leaf hashes of the stored statements 0…size-1, refusing gaps; `visit` sees each wire."""
    leaves: list[bytes] = []
    for event in store.log(0, size):
        if event.index != len(leaves):
            raise LogIndexInvalid(f"the stored log jumps from index {len(leaves) - 1} to {event.index} "
                                  "(run `custody verify`)", len(leaves))
        leaves.append(merkle.leaf_hash(event.wire))
        if visit is not None:
            visit(event.index, event.wire)
    if len(leaves) != size:
        raise LogIndexInvalid(f"the stored log ends at {len(leaves)} statements, not {size}", len(leaves))
    return leaves


def require_extends(source: merkle.ProofSource, old: Checkpoint, what: str) -> None:
    """Raise `CheckpointInconsistent` unless the tree of `source` extends the checkpoint `old`."""
    size, root = source.size, source.root()
    if old.size > size:
        raise CheckpointInconsistent(f"{what} has size {old.size} but the log has only {size} statements: "
                                     "statements were dropped or the log was rolled back")
    if old.size == 0 or old.size == size:
        expected = merkle.EMPTY_ROOT if old.size == 0 else root
        if old.root != expected:
            raise CheckpointInconsistent(f"{what} of size {old.size} has another root than the log at that "
                                         "size: the log was rewritten (a fork)")
        return
    proof = source.consistency_proof(old.size)
    try:
        merkle.verify_consistency(old.size, size, proof, old.root, root)
    except IntegrityError as e:
        raise CheckpointInconsistent(f"the log of size {size} does not extend {what} of size {old.size}: "
                                     f"a statement below it was rewritten ({e.detail})") from e


def stored_notes(store: Store, ledger: Ledger) -> list[ParsedNote]:
    """The stored checkpoints in signing order, each checked against the operator's key.

    Raises `CheckpointSignatureInvalid` for the first one that does not verify.
    """
    return _verified(store.checkpoints(), ledger)


def _verified(rows: Iterable[tuple[int, int, str]], ledger: Ledger) -> list[ParsedNote]:
    out: list[ParsedNote] = []
    for version, _size, text in rows:
        try:
            note = notes.parse_note(text)
            notes.verify_operator(note, ledger.origin, ledger.operator)
        except LedgerError as e:
            raise CheckpointSignatureInvalid(f"stored checkpoint {version} does not verify: {e.detail} "
                                             "(run `custody verify`)") from e
        out.append(note)
    return out


def largest(parsed: Iterable[ParsedNote]) -> ParsedNote | None:
    return max(parsed, key=lambda n: n.checkpoint.size, default=None)


# --- the operator: signing tree heads -----------------------------------------------------------------


@dataclass
class StoredSoFar:
    """What a long-running signer has read of the stored checkpoints: the last version read and the largest
    note among them, verified; `sign_tree_head` then reads only the checkpoints stored since."""

    version: int = 0
    latest: ParsedNote | None = None


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint the operator signed: the note, and whether it was stored now or was already there."""

    note: str
    checkpoint: Checkpoint
    stored: bool
    previous: Checkpoint | None


def sign_tree_head(store: Store, key: PrivateKey, *, attempts: int = SIGN_ATTEMPTS,
                   tree: Callable[[int], merkle.ProofSource] | None = None,
                   known: StoredSoFar | None = None) -> SignedCheckpoint:
    """Sign the current tree head as the operator and store it as the next `Checkpoints` event.

    Refuses (`CheckpointInconsistent`) when the log does not extend the largest checkpoint stored before,
    and (`RootMismatch`) when the stored tree head is not the root of the stored statements. A checkpoint
    of the size already stored is returned without storing it again. `key` must be the genesis operator.
    `tree(size)` gives the log's tree at a size from leaf hashes the caller read from this store before (the
    service keeps them); by default they are read again here. `known`, kept by the caller from one call to
    the next, spares reading and verifying again the checkpoints stored before.
    """
    ledger = ledger_identity(store)
    if key.public != ledger.operator:
        raise BadInput(f"key {key.key_id[:16]}… is not this ledger's operator key "
                       f"({key_id(ledger.operator)[:16]}…, named at genesis)")
    for attempt in range(1, attempts + 1):
        try:
            return _sign_once(store, key, ledger, tree, known)
        except Conflict:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _sign_once(store: Store, key: PrivateKey, ledger: Ledger, tree: Callable[[int], merkle.ProofSource] | None,
               known: StoredSoFar | None) -> SignedCheckpoint:
    # the checkpoints first, then the head: every checkpoint read is then of a size the head covers, even
    # when another signer stores one meanwhile
    so_far = known if known is not None else StoredSoFar()
    stored = store.checkpoints(after=so_far.version)
    latest = largest([*([so_far.latest] if so_far.latest is not None else []), *_verified(stored, ledger)])
    last_version = stored[-1][0] if stored else so_far.version
    so_far.version, so_far.latest = last_version, latest
    head = store.head()
    if head is None:
        raise NotALedger(f"{store.url} holds no ledger")
    size = head.index + 1
    source = tree(size) if tree is not None else merkle.ProofSource(read_leaves(store, size))
    root = source.root()
    try:
        kept = merkle.CompactRange.from_list(size, head.range).root()
    except BadInput as e:
        raise RootMismatch(f"the stored tree head at size {size} is malformed: {e.detail}",
                           index=head.index) from e
    if kept != root:
        raise RootMismatch(f"the stored tree head at size {size} is not the root of the stored statements "
                           "(run `custody verify`)", expected=kept, calculated=root, index=head.index)
    if latest is not None:
        require_extends(source, latest.checkpoint, "the latest checkpoint the log signed")
    checkpoint = Checkpoint(ledger.origin, size, root)
    note = notes.sign_checkpoint(checkpoint, ledger.origin, key.public, key.sign)
    previous = latest.checkpoint if latest else None
    if previous is not None and previous.size == size:
        return SignedCheckpoint(note, checkpoint, stored=False, previous=previous)
    version = last_version + 1
    store.write([stored_checkpoint(ledger.origin, version, size, note, datetime.now(UTC))])
    so_far.version, so_far.latest = version, notes.parse_note(note)
    return SignedCheckpoint(note, checkpoint, stored=True, previous=previous)
