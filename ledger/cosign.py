"""A witness cosigning the ledger's checkpoints against a store it can read: `custody cosign CHECKPOINT`.

`cosign` checks, with proofs built from the ledger's leaves, that a checkpoint is the ledger's tree at
its size and that it extends the last checkpoint this witness cosigned (its state file, which
`custody cosign --ledger URL` keeps too: `ledger.witness_remote`): a rollback or a fork is refused. The
cosignature is C2SP tlog-cosignature/v1 (`ledger.checkpoint`); the state file is replaced whole
(`files.write_atomic`). The tlog-witness server is `ledger.witness`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ledger import checkpoint as notes
from ledger import files, limits, merkle
from ledger.checkpoint import Checkpoint
from ledger.errors import (
    BadInput,
    CheckpointInconsistent,
    LedgerError,
    NotFound,
)
from ledger.keys import PrivateKey
from ledger.store import Store
from ledger.tree_head import ledger_identity, read_leaves, require_extends

_WITNESS_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


# --- witnesses: cosigning -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint a witness cosigned: the note with its new line, and the state it extended."""

    note: str
    checkpoint: Checkpoint
    previous: Checkpoint | None
    timestamp: int


def check_witness_name(name: str) -> str:
    """c2sp.org/signed-note key names: non-empty, no Unicode spaces, no '+'."""
    if not name or any(ch.isspace() or ch == "+" or ch < " " for ch in name):
        raise BadInput(f"bad witness name {name[:80]!r}: a key name has no spaces and no '+'")
    return name


def default_state_path(checkpoint_path: Path, name: str) -> Path:
    """`witness-NAME.state` beside the checkpoint file (characters outside [A-Za-z0-9._-] become _)."""
    return checkpoint_path.parent / f"witness-{_WITNESS_NAME_UNSAFE.sub('_', name)}.state"


def read_witness_state(path: Path, origin: str, name: str, public_key: bytes) -> Checkpoint | None:
    """The checkpoint this witness cosigned last, from its state file (None if there is no file yet).

    The state file is the last note the witness cosigned; it must carry the witness's own valid
    cosignature, so a damaged or foreign file is refused (`BadInput`) rather than taken as a fresh start.
    """
    try:
        data = limits.read_file(path, limits.MAX_NOTE_FILE_BYTES, "witness state")
    except NotFound:
        return None
    try:
        note = notes.parse_note(data)
        notes.verify_cosignature(note, name, public_key)
    except LedgerError as e:
        raise BadInput(f"witness state {path} is not a checkpoint cosigned by {name!r} with this key: "
                       f"{e.detail}") from e
    if note.checkpoint.origin != origin:
        raise BadInput(f"witness state {path} is for origin {note.checkpoint.origin!r}, not {origin!r} "
                       "(give --state)")
    return note.checkpoint


def cosign(store: Store, note_text: str | bytes, *, name: str, key: PrivateKey, state_path: Path,
           timestamp: int) -> Cosigned:
    """Cosign a checkpoint of this ledger as witness `name`, then record it in the witness's state file.

    Checks, in order: the note parses (`NotALedger` if it is not a note at all); the operator's signature
    verifies; it is no rollback or fork of the state file's checkpoint; the ledger's root at its size is
    its root; a consistency proof from the ledger's leaves takes the state's checkpoint to it. Every
    refusal is a `CheckpointInconsistent` or `CheckpointSignatureInvalid`; nothing is written then.
    """
    check_witness_name(name)
    parsed = notes.parse_note(note_text)
    ledger = ledger_identity(store)
    checkpoint = notes.verify_operator(parsed, ledger.origin, ledger.operator)
    previous = read_witness_state(state_path, ledger.origin, name, key.public)
    if previous is not None:
        if checkpoint.size < previous.size:
            raise CheckpointInconsistent(f"refusing to cosign a rollback: checkpoint size {checkpoint.size} "
                                         f"is smaller than the size {previous.size} witness {name} cosigned")
        if checkpoint.size == previous.size and checkpoint.root != previous.root:
            raise CheckpointInconsistent(f"refusing to cosign a fork: witness {name} cosigned another root "
                                         f"at size {checkpoint.size}")
    size = store.size()
    if checkpoint.size > size:
        raise CheckpointInconsistent(f"the checkpoint has size {checkpoint.size} but this ledger has only "
                                     f"{size} statements: it is behind, or the checkpoint is not its tree")
    source = merkle.ProofSource(read_leaves(store, checkpoint.size))
    if source.root() != checkpoint.root:
        raise CheckpointInconsistent(f"refusing to cosign a fork: the ledger's root at size "
                                     f"{checkpoint.size} is not the checkpoint's")
    if previous is not None:
        require_extends(source, previous, f"the checkpoint witness {name} cosigned last")
    cosigned = notes.add_cosignature(parsed.text, name, key.public, key.sign, timestamp)
    files.write_atomic(state_path, cosigned.encode())
    return Cosigned(cosigned, checkpoint, previous, timestamp)
