"""A transparency-log witness: c2sp.org/tlog-witness `add-checkpoint`, without the HTTP.

A witness is configured with the logs it follows (origin and the operator's Ed25519 note key, whose key
name is the origin, DESIGN.md "The global log") and keeps, per origin, the latest checkpoint it cosigned.
`Witness.add_checkpoint` takes a request body as the spec defines it (`old N`, at most 63 base64
consistency-proof lines, an empty line, then the signed checkpoint), checks it in the spec's order and
answers with its c2sp.org/tlog-cosignature/v1 line, or raises the `WitnessRefused` whose `status` is the
spec's HTTP code:

- 400 a malformed request, or an old size larger than the checkpoint's;
- 404 an origin the witness does not follow; 403 no valid signature by that log's key;
- 409 (`OldSizeConflict`, with `latest`) the old size is not the size the witness cosigned last;
- 422 (`ConsistencyRejected`) the proof does not take the witness's checkpoint to this one, the same
  size with another root (a fork), a proof where none belongs, or a size-0 checkpoint whose root is not
  the empty tree's.

The state file holds, per origin, the last note the witness cosigned (carrying its own cosignature, so a
damaged or foreign file is refused, never taken for a fresh start); a missing file is a fresh witness.
Checking the old size and saving the new state happen under one lock (a thread lock and an exclusive
`flock` on `STATE.lock`, so several processes may share a state file), and the state is replaced
atomically (temporary file, fsync, rename, fsync of the directory) before the cosignature is returned:
a crash leaves the old state or the new one, and a cosignature is never released that the state does
not record.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ledger import checkpoint as notes
from ledger import limits, merkle
from ledger.checkpoint import Checkpoint, ParsedNote
from ledger.cosign import check_witness_name
from ledger.errors import (
    BadInput,
    ConsistencyRejected,
    LedgerError,
    LogSignatureMissing,
    NotFound,
    OldSizeConflict,
    OriginUnknown,
    ProofInvalid,
    WitnessRefused,
)
from ledger.files import write_atomic
from ledger.keys import PrivateKey

ADD_CHECKPOINT_PATH = "/add-checkpoint"  # c2sp.org/tlog-witness: `POST <submission prefix>/add-checkpoint`
TLOG_SIZE_MEDIA_TYPE = "text/x.tlog.size"  # c2sp.org/tlog-witness: the Content-Type of a 409's body
MAX_PROOF_LINES = 63  # c2sp.org/tlog-witness: a client MUST NOT send more consistency proof lines
MAX_REQUEST_BYTES = 64 * 1024  # the old line, 63 proof lines (2.9 KiB) and a note of ≤ 100 signature lines
MAX_STATE_BYTES = 64 * 1024 * 1024  # a witness's state: one note per log it follows
STATE_FORMAT = "custody-witness/1"  # the `format` of a `witness serve` state file
STATE_KEYS = frozenset({"format", "name", "logs"})

_OLD_LINE = re.compile(r"old (0|[1-9][0-9]{0,19})")  # c2sp.org/tlog-witness: ASCII decimal, no leading zeroes


# --- the request --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddCheckpoint:
    """One `add-checkpoint` request: the old size, the consistency proof from it, and the signed note."""

    old: int
    proof: tuple[bytes, ...]
    note: ParsedNote


def format_request(old: int, proof: Sequence[bytes], note_text: str) -> bytes:
    """The `add-checkpoint` body: `old N`, one base64 line per proof hash, an empty line, the note."""
    if isinstance(old, bool) or not isinstance(old, int) or old < 0:
        raise BadInput(f"old size must be a non-negative integer, not {old!r}")
    if len(proof) > MAX_PROOF_LINES:
        raise BadInput(f"a consistency proof of {len(proof)} hashes is more than {MAX_PROOF_LINES} lines")
    lines = "".join(base64.b64encode(h).decode("ascii") + "\n" for h in proof)
    return f"old {old}\n{lines}\n{note_text}".encode()


def parse_request(body: bytes) -> AddCheckpoint:
    """Parse an `add-checkpoint` body (`format_request` gives it back); `WitnessRefused` (400) if malformed.

    The note is parsed but no signature is checked: that is `Witness.add_checkpoint`'s next step.
    """
    if len(body) > MAX_REQUEST_BYTES:
        raise WitnessRefused(f"the request is {len(body)} bytes, more than {MAX_REQUEST_BYTES}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WitnessRefused(f"the request is not UTF-8 (byte {e.start})") from None
    first, newline, rest = text.partition("\n")
    match = _OLD_LINE.fullmatch(first)
    if not newline or match is None:
        raise WitnessRefused(f"the request does not begin with an `old <size>` line: {first[:40]!r}")
    old = int(match.group(1))
    if old > notes.MAX_TREE_SIZE:
        raise WitnessRefused(f"old size {old} is beyond 2^64-1")
    proof: list[bytes] = []
    while True:
        line, newline, after = rest.partition("\n")
        if not newline:
            raise WitnessRefused("the request has no empty line before the checkpoint")
        rest = after
        if not line:
            break
        if len(proof) == MAX_PROOF_LINES:
            raise WitnessRefused(f"the consistency proof has more than {MAX_PROOF_LINES} lines")
        proof.append(_proof_hash(line, len(proof) + 1))
    try:
        note = notes.parse_note(rest)
    except LedgerError as e:
        raise WitnessRefused(f"the checkpoint: {e.detail}") from None
    return AddCheckpoint(old, tuple(proof), note)


def _proof_hash(line: str, number: int) -> bytes:
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != merkle.HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise WitnessRefused(f"consistency proof line {number} is not the base64 of a {merkle.HASH_SIZE}-byte hash")
    return raw


# --- the state ----------------------------------------------------------------------------------------


def encode_state(name: str, logs: Mapping[str, str]) -> bytes:
    """The state file: canonical JSON of `format`, the witness's `name` and `logs` {origin: note}."""
    document = {"format": STATE_FORMAT, "logs": dict(sorted(logs.items())), "name": name}
    return (json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True) + "\n").encode()


def decode_state(data: bytes, name: str, public_key: bytes, where: str = "witness state") -> dict[str, ParsedNote]:
    """The notes of a state file, each checked to carry this witness's own valid cosignature.

    Raises `BadInput` naming `where` for anything else: a damaged file must not pass for a fresh witness.
    """
    if len(data) > MAX_STATE_BYTES:
        raise BadInput(f"{where} is {len(data)} bytes, more than {MAX_STATE_BYTES}")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BadInput(f"{where} is not a witness state file (not JSON: {e})") from None
    if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
        raise BadInput(f"{where} is not a witness state file (no format {STATE_FORMAT!r})")
    if set(document) != STATE_KEYS or not isinstance(document["logs"], dict):
        raise BadInput(f"{where}: a state file has exactly the keys format, name and logs (an object)")
    if document["name"] != name:
        raise BadInput(f"{where} belongs to witness {str(document['name'])[:80]!r}, not {name!r}")
    out: dict[str, ParsedNote] = {}
    for origin, text in document["logs"].items():
        if not isinstance(text, str):
            raise BadInput(f"{where}: the entry for {origin[:80]!r} is not a note")
        try:
            note = notes.parse_note(text)
            notes.verify_cosignature(note, name, public_key)
        except LedgerError as e:
            raise BadInput(f"{where}: the checkpoint for {origin[:80]!r} is not one witness {name!r} cosigned "
                           f"with this key: {e.detail}") from None
        if note.checkpoint.origin != origin:
            raise BadInput(f"{where}: the checkpoint filed under {origin[:80]!r} is for "
                           f"{note.checkpoint.origin[:80]!r}")
        out[origin] = note
    return out


def read_state(path: Path, name: str, public_key: bytes) -> dict[str, ParsedNote]:
    """The state at `path` (empty when there is no file yet: a fresh witness)."""
    try:
        data = limits.read_file(path, MAX_STATE_BYTES, "witness state")
    except NotFound:
        return {}
    return decode_state(data, name, public_key, f"witness state {path}")


# --- the witness --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cosignature:
    """What the witness answers: its signature line(s), for the checkpoint it now records as latest."""

    checkpoint: Checkpoint
    lines: str
    timestamp: int
    previous: int  # the size the witness had cosigned before (0 for a first checkpoint)


class Witness:
    """A witness named `name`, signing with `key`, following `logs` ({origin: operator public key}).

    Safe to call from several threads, and from several processes sharing `state_path`.
    """

    def __init__(self, name: str, key: PrivateKey, logs: Mapping[str, bytes], state_path: Path, *,
                 clock: Callable[[], float] = time.time) -> None:
        check_witness_name(name)
        if not logs:
            raise BadInput("a witness needs at least one log to follow (--log ORIGIN=OPERATOR_PUBFILE)")
        for origin, public in logs.items():
            try:
                Checkpoint(origin, 0, merkle.EMPTY_ROOT)
            except BadInput as e:
                raise BadInput(f"bad log origin: {e.detail}") from None
            if not isinstance(public, bytes) or len(public) != notes.ED25519_PUBLIC_KEY_SIZE:
                raise BadInput(f"the key of log {origin!r} is not a raw Ed25519 public key")
        self.name = name
        self.public_key = key.public
        self._key = key
        self._logs = dict(logs)
        self.state_path = state_path
        self._clock = clock
        self._thread_lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int] | None, dict[str, ParsedNote]] | None = None
        with self._locked():
            self._current()  # refuse a damaged state file now, not at the first request

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(sorted(self._logs))

    def latest(self, origin: str) -> Checkpoint | None:
        """The checkpoint of `origin` this witness cosigned last, if any."""
        with self._locked():
            note = self._current().get(origin)
        return note.checkpoint if note else None

    def add_checkpoint(self, body: bytes) -> Cosignature:
        """Check an `add-checkpoint` request, record the checkpoint and return the cosignature.

        Raises the `WitnessRefused` of the first check that fails (module docstring); nothing is
        recorded then. `BadInput` if the state cannot be read or written.
        """
        request = parse_request(body)
        checkpoint = request.note.checkpoint
        operator = self._logs.get(checkpoint.origin)
        if operator is None:
            raise OriginUnknown(f"this witness does not follow the log {checkpoint.origin[:80]!r}")
        try:
            notes.verify_operator(request.note, checkpoint.origin, operator)
        except LedgerError as e:
            raise LogSignatureMissing(f"no valid signature by the key of {checkpoint.origin!r}: {e.detail}") from None
        if request.old > checkpoint.size:
            raise WitnessRefused(f"old size {request.old} is larger than the checkpoint's size {checkpoint.size}")
        with self._locked():
            state = self._current()
            latest = state.get(checkpoint.origin)
            latest_size = latest.checkpoint.size if latest else 0
            if request.old != latest_size:
                raise OldSizeConflict(f"old size {request.old} is not {latest_size}, the size this witness "
                                      f"cosigned last for {checkpoint.origin!r}", latest_size)
            check_consistency(latest.checkpoint if latest else None, request.proof, checkpoint)
            timestamp = max(int(self._clock()), notes.verify_cosignature(latest, self.name, self.public_key)
                            if latest else 0)
            recorded = self._cosigned(request.note, timestamp)
            self._save({**{o: n.text for o, n in state.items()}, checkpoint.origin: recorded.text})
        return Cosignature(checkpoint, recorded.signatures[-1].line(), timestamp, latest_size)

    def _cosigned(self, note: ParsedNote, timestamp: int) -> ParsedNote:
        """The note as recorded: its body, the operator's line(s) and this witness's new cosignature."""
        origin = note.checkpoint.origin
        operator = notes.note_key_hash(origin, self._logs[origin])
        own = [s for s in note.signatures if s.name == origin and s.key_hash == operator]
        text = note.body + "\n" + "".join(s.line() for s in own)
        return notes.parse_note(notes.add_cosignature(text, self.name, self.public_key, self._key.sign, timestamp))

    # --- state, under the lock -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.state_path.with_name(self.state_path.name + ".lock")
        with self._thread_lock:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as e:
                raise BadInput(f"cannot lock witness state {lock_path}: {e.strerror}") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def _current(self) -> dict[str, ParsedNote]:
        """The state as saved now (re-read only when the file changed: another process may share it)."""
        try:
            st = self.state_path.stat()
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        except OSError as e:
            raise BadInput(f"cannot read witness state {self.state_path}: {e.strerror}") from e
        if self._cached is None or self._cached[0] != stamp:
            self._cached = (stamp, read_state(self.state_path, self.name, self.public_key))
        return self._cached[1]

    def _save(self, logs: Mapping[str, str]) -> None:
        write_atomic(self.state_path, encode_state(self.name, logs))  # the directory is synced too
        self._cached = None


def check_consistency(latest: Checkpoint | None, proof: Sequence[bytes], checkpoint: Checkpoint) -> None:
    """Raise `ConsistencyRejected` unless `proof` takes the witness's `latest` checkpoint to `checkpoint`.

    `latest` is None for a fresh witness (trust on first use: the proof must be empty). The caller has
    checked that the request's old size is `latest`'s size and not beyond `checkpoint`'s.
    """
    if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
        raise ConsistencyRejected("a checkpoint of size 0 must have the root of the empty tree")
    old = latest.size if latest else 0
    if old == 0:
        if proof:
            raise ConsistencyRejected("old size 0 takes no consistency proof: the empty tree is consistent "
                                      "with any tree")
        return
    assert latest is not None
    if old == checkpoint.size:
        if proof:
            raise ConsistencyRejected(f"old size {old} is the checkpoint's size: the proof must be empty")
        if latest.root != checkpoint.root:
            raise ConsistencyRejected(f"a fork: this witness cosigned another root at size {old}")
        return
    try:
        merkle.verify_consistency(old, checkpoint.size, proof, latest.root, checkpoint.root)
    except ProofInvalid as e:
        raise ConsistencyRejected(f"the consistency proof from size {old} to {checkpoint.size} does not "
                                  f"verify: {e.detail}") from None
