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

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from eventsourcing.persistence import StoredEvent

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


def _stored_since(store: Store, ledger: Ledger, so_far: StoredSoFar) -> StoredSoFar:
    """`so_far` brought up to the checkpoints stored since (each verified), as a new value."""
    stored = store.checkpoints(after=so_far.version)
    latest = largest([*([so_far.latest] if so_far.latest is not None else []), *_verified(stored, ledger)])
    return StoredSoFar(stored[-1][0] if stored else so_far.version, latest)


def _check_head(source: merkle.ProofSource, head: Sequence[bytes], latest: ParsedNote | None) -> None:
    """The stored tree head `head` (a compact range) at `source.size` is the root of the stored statements
    (`source`, from their leaf hashes), and the log there extends the `latest` checkpoint."""
    size = source.size
    root = source.root()
    try:
        kept = merkle.CompactRange.from_list(size, head).root()
    except BadInput as e:
        raise RootMismatch(f"the stored tree head at size {size} is malformed: {e.detail}",
                           index=size - 1) from e
    if kept != root:
        raise RootMismatch(f"the stored tree head at size {size} is not the root of the stored statements "
                           "(run `custody verify`)", expected=kept, calculated=root, index=size - 1)
    if latest is not None:
        require_extends(source, latest.checkpoint, "the latest checkpoint the log signed")


def _sign_once(store: Store, key: PrivateKey, ledger: Ledger, tree: Callable[[int], merkle.ProofSource] | None,
               known: StoredSoFar | None) -> SignedCheckpoint:
    # the checkpoints first, then the head: every checkpoint read is then of a size the head covers, even
    # when another signer stores one meanwhile
    so_far = known if known is not None else StoredSoFar()
    fresh = _stored_since(store, ledger, so_far)
    so_far.version, so_far.latest = fresh.version, fresh.latest
    latest, last_version = fresh.latest, fresh.version
    head = store.head()
    if head is None:
        raise NotALedger(f"{store.url} holds no ledger")
    size = head.index + 1
    source = tree(size) if tree is not None else merkle.ProofSource(read_leaves(store, size))
    _check_head(source, head.range, latest)
    root = source.root()
    checkpoint = Checkpoint(ledger.origin, size, root)
    note = notes.sign_checkpoint(checkpoint, ledger.origin, key.public, key.sign)
    previous = latest.checkpoint if latest else None
    if previous is not None and previous.size == size:
        return SignedCheckpoint(note, checkpoint, stored=False, previous=previous)
    version = last_version + 1
    store.write([stored_checkpoint(ledger.origin, version, size, note, datetime.now(UTC))])
    so_far.version, so_far.latest = version, notes.parse_note(note)
    return SignedCheckpoint(note, checkpoint, stored=True, previous=previous)


@dataclass(frozen=True)
class Sealed:
    """A checkpoint signed inside the transaction of the append it covers (`seal`): stored if that
    commits. `so_far` is what the signer then knows of the stored checkpoints (this one the latest)."""

    signed: SignedCheckpoint
    so_far: StoredSoFar


def seal(store: Store, key: PrivateKey, ledger: Ledger, *, before: merkle.ProofSource, head: Sequence[bytes],
         after: merkle.CompactRange, known: StoredSoFar) -> tuple[Sealed, StoredEvent]:
    """The operator's checkpoint of the tree head `after` that an append is storing, and its stored event,
    signed inside the append's transaction (`Store.write`'s `then`: the writers' lock is held, so no other
    signer or writer moves the log meanwhile and the checkpoint covers exactly what is appended).

    The same checks as `sign_tree_head`, on the log as it stood before the append: `before` is its tree (from
    leaf hashes the caller read from this store), `head` the stored tree head it was read with; `after` is
    `before`'s tree head extended by the appended leaves (`append.Batch.range`), so it extends every
    checkpoint `before` extends. `known` is not changed: adopt `Sealed.so_far` once the transaction commits.
    """
    if key.public != ledger.operator:
        raise BadInput(f"key {key.key_id[:16]}… is not this ledger's operator key "
                       f"({key_id(ledger.operator)[:16]}…, named at genesis)")
    fresh = _stored_since(store, ledger, known)
    if before.size:
        _check_head(before, head, fresh.latest)
    elif fresh.latest is not None and fresh.latest.checkpoint.size:
        raise CheckpointInconsistent(f"the latest checkpoint the log signed has size {fresh.latest.checkpoint.size} "
                                     "but the log is empty: it was rolled back")
    checkpoint = Checkpoint(ledger.origin, after.size, after.root())
    note = notes.sign_checkpoint(checkpoint, ledger.origin, key.public, key.sign)
    previous = fresh.latest.checkpoint if fresh.latest else None
    version = fresh.version + 1
    event = stored_checkpoint(ledger.origin, version, after.size, note, datetime.now(UTC))
    signed = SignedCheckpoint(note, checkpoint, stored=True, previous=previous)
    return Sealed(signed, StoredSoFar(version, notes.parse_note(note))), event
