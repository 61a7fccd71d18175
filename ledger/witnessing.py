"""The log's side of witnessing: pushing checkpoints to witnesses, and keeping the cosignatures they give.

DESIGN.md "The ledger service": `--witness NAME=PUBFILE=URL` pushes each new checkpoint to the witness
by c2sp.org/tlog-witness (`WitnessPusher`: `old <size>` and the consistency proof from the size that
witness last cosigned, `old 0` without proof lines on first contact; after a 409 it resends from the
size the witness names) and stores the cosignature it returns; `--witness NAME=PUBFILE` alone only
accepts that witness's cosignatures posted to `POST /v1/cosignatures` (`accept_cosignatures`).

Cosignatures are kept where checkpoints are: a checkpoint that gains a cosignature is stored again, as
the next `Checkpoints` event, with the same body, the operator's line and every valid cosignature by a
configured witness (the newest per witness). So the latest stored version at the largest size is the
note `GET /checkpoint` serves (`served_note`), bundles carry it (`transfer.bundle_checkpoints` keeps the
latest version per size), and `verify --witness` checks it; two `serve` processes on one database
store through the same optimistic version check and retry.

Nothing here knows the HTTP server: the service calls `accept_cosignatures` from its route and
`push_and_store` after it signs a checkpoint (off the event loop: it blocks on the network).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from ledger import checkpoint as notes
from ledger import keys, merkle
from ledger.checkpoint import Checkpoint, NoteSignature, ParsedNote
from ledger.cosign import check_witness_name
from ledger.errors import (
    BadInput,
    Conflict,
    CosignatureMissing,
    LedgerError,
    ServiceUnavailable,
    WitnessRefused,
)
from ledger.store import Store
from ledger.store.codec import stored_checkpoint
from ledger.tree_head import SIGN_ATTEMPTS, ledger_identity, read_leaves
from ledger.witness import ADD_CHECKPOINT_PATH, TLOG_SIZE_MEDIA_TYPE, format_request

MAX_COSIGNATURE_BODY = 64 * 1024  # POST /v1/cosignatures: a note of at most 100 signature lines
MAX_WITNESS_ANSWER = 64 * 1024  # an add-checkpoint answer: a few signature lines
PUSH_TIMEOUT = 10.0  # seconds for one add-checkpoint exchange
MAX_RESENDS = 3  # add-checkpoint retries after a 409 that names another old size
KEEP_SIZES = 8  # cosigned notes `Witnessing.decorate` keeps, for the largest sizes
KEEP_INDEXED = 1024  # checkpoint sizes `StoredCheckpoints` keeps (the latest version of each)

ConsistencyProofs = Callable[[int, int], Sequence[bytes]]  # (old size, new size) → RFC 9162 proof


# --- configuration ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessConfig:
    """A witness the log trusts: its key name and Ed25519 key, and where to push (None: accept only)."""

    name: str
    public_key: bytes
    url: str | None = None

    @property
    def key_hash(self) -> bytes:
        return notes.cosignature_key_hash(self.name, self.public_key)


def parse_witness_option(text: str) -> tuple[str, Path, str | None]:
    """`NAME=PUBFILE` or `NAME=PUBFILE=URL` (the URL an http(s) one) → (name, public key file, URL)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise BadInput(f"--witness {text[:120]!r}: expected NAME=PUBFILE or NAME=PUBFILE=URL")
    check_witness_name(name)
    pubfile, sep, url = rest.partition("=")
    if not sep:
        return name, Path(pubfile), None
    if not pubfile or not url.startswith(("http://", "https://")):
        raise BadInput(f"--witness {text[:120]!r}: the URL after PUBFILE= must start with http:// or https://")
    return name, Path(pubfile), url.rstrip("/")


def load_witnesses(options: Sequence[str]) -> list[WitnessConfig]:
    """`--witness` options as configurations, reading each public key file; a name given twice is refused."""
    out: list[WitnessConfig] = []
    for text in options:
        name, pubfile, url = parse_witness_option(text)
        if any(w.name == name for w in out):
            raise BadInput(f"--witness: witness {name!r} is given twice")
        out.append(WitnessConfig(name, keys.load_public(pubfile), url))
    return out


# --- cosignatures: checking and storing them ----------------------------------------------------------


def valid_cosignatures(note: ParsedNote, witnesses: Sequence[WitnessConfig]) -> list[tuple[WitnessConfig,
                                                                                          NoteSignature, int]]:
    """The lines of `note` that are valid tlog-cosignature/v1 signatures by one of `witnesses`, each with
    its witness and timestamp; lines by other keys, or that do not verify, are left out."""
    out = []
    for sig in note.signatures:
        for w in witnesses:
            if sig.name != w.name or sig.key_hash != w.key_hash:
                continue
            try:
                timestamp = notes.verify_cosignature(ParsedNote(note.checkpoint, "", (sig,)), w.name,
                                                     w.public_key)
            except LedgerError:
                continue
            out.append((w, sig, timestamp))
    return out


@dataclass(frozen=True)
class Accepted:
    """Cosignatures taken in: how many valid ones came, and the note as stored now."""

    checkpoint: Checkpoint
    stored: int
    note: str
    written: bool  # False when the store already held every one of them


class StoredCheckpoints:
    """The stored checkpoints as a follower reads them: only versions it has not seen
    (`Store.checkpoints(after=…)`), keeping the latest version of the `keep` largest sizes, so that a
    cosignature on a recent checkpoint costs no scan of every checkpoint ever signed."""

    def __init__(self, keep: int = KEEP_INDEXED) -> None:
        self.version = 0  # the latest stored version seen
        self.keep = keep
        self._by_size: dict[int, tuple[int, str]] = {}
        self._evicted = -1  # the largest size dropped from the index

    def sync(self, store: Store) -> None:
        for version, size, text in store.checkpoints(after=self.version):
            self.version = max(self.version, version)
            if size > self._evicted:
                self._by_size[size] = (version, text)
        if len(self._by_size) > self.keep:
            for size in sorted(self._by_size)[:-self.keep]:
                del self._by_size[size]
                self._evicted = max(self._evicted, size)

    def of_size(self, size: int) -> list[tuple[int, int, str]] | None:
        """The latest stored version of `size` (a list of one, or empty), or None if the index dropped it."""
        if size <= self._evicted:
            return None
        held = self._by_size.get(size)
        return [(held[0], size, held[1])] if held else []

    def newest(self) -> tuple[int, str] | None:
        """(size, note) of the latest version at the largest size."""
        if not self._by_size:
            return None
        size = max(self._by_size)
        return size, self._by_size[size][1]


def accept_cosignatures(store: Store, note_text: str | bytes, witnesses: Sequence[WitnessConfig], *,
                        attempts: int = SIGN_ATTEMPTS, index: StoredCheckpoints | None = None) -> Accepted:
    """Store the valid cosignatures that `note_text` carries by `witnesses` on a checkpoint this log signed.

    Raises `CosignatureMissing` (`POST /v1/cosignatures` answers 422 `cosignature`) when the text is not
    a checkpoint of this log, its checkpoint is not one the operator signed and stored, or it carries no
    valid cosignature by a configured witness. Lines by other keys are ignored. With `index`, only the
    checkpoints stored since its last look are read (every one only for a size it no longer holds).
    """
    if len(note_text) > MAX_COSIGNATURE_BODY:
        raise CosignatureMissing(f"the note is {len(note_text)} bytes, more than {MAX_COSIGNATURE_BODY}")
    try:
        parsed = notes.parse_note(note_text)
    except LedgerError as e:
        raise CosignatureMissing(f"not a checkpoint note: {e.detail}") from None
    ledger = ledger_identity(store)
    checkpoint = parsed.checkpoint
    if checkpoint.origin != ledger.origin:
        raise CosignatureMissing(f"the checkpoint is for {checkpoint.origin[:80]!r}, not this log "
                                 f"({ledger.origin!r})")
    given = valid_cosignatures(parsed, witnesses)
    if not given:
        names = ", ".join(w.name for w in witnesses) or "none is configured"
        raise CosignatureMissing(f"the note carries no valid cosignature by a configured witness ({names})")
    for attempt in range(1, attempts + 1):
        if index is None:
            stored = store.checkpoints()
            latest = stored[-1][0] if stored else 0
        else:
            index.sync(store)
            latest = index.version
            held = index.of_size(checkpoint.size)
            stored = held if held is not None else [row for row in store.checkpoints() if row[1] == checkpoint.size]
        target = _stored_twin(stored, checkpoint, ledger.origin, ledger.operator)
        if target is None:
            raise CosignatureMissing(f"checkpoint {checkpoint.size} with root {checkpoint.root.hex()[:16]}… is "
                                     "not one this log signed")
        merged = _merged(target, given, witnesses)
        if merged == target.text:
            return Accepted(checkpoint, len(given), merged, written=False)
        version = latest + 1
        try:
            store.write([stored_checkpoint(ledger.origin, version, checkpoint.size, merged, datetime.now(UTC))])
        except Conflict:
            if attempt == attempts:
                raise
            continue
        return Accepted(checkpoint, len(given), merged, written=True)
    raise AssertionError("unreachable")


def _stored_twin(stored: Sequence[tuple[int, int, str]], checkpoint: Checkpoint, origin: str,
                 operator: bytes) -> ParsedNote | None:
    """The latest stored version of `checkpoint` that carries a valid operator signature."""
    for _version, size, text in reversed(stored):
        if size != checkpoint.size:
            continue
        try:
            note = notes.parse_note(text)
            notes.verify_operator(note, origin, operator)
        except LedgerError:
            continue
        if note.checkpoint == checkpoint:
            return note
    return None


def _merged(target: ParsedNote, given: Sequence[tuple[WitnessConfig, NoteSignature, int]],
            witnesses: Sequence[WitnessConfig]) -> str:
    """`target` with the newest valid cosignature per witness: those stored, or those given if newer."""
    held = {(w.name, sig.key_hash): (ts, sig) for w, sig, ts in valid_cosignatures(target, witnesses)}
    for w, sig, ts in given:
        key = (w.name, sig.key_hash)
        if key not in held or ts > held[key][0]:
            held[key] = (ts, sig)
    kept = [s for s in target.signatures if (s.name, s.key_hash) not in held]
    lines = [*kept, *(sig for _, sig in held.values())]
    if len(lines) > notes.MAX_SIGNATURES:
        raise CosignatureMissing(f"the checkpoint would carry more than {notes.MAX_SIGNATURES} signature lines")
    return target.body + "\n" + "".join(s.line() for s in lines)


def served_note(store: Store) -> str | None:
    """The note `GET /checkpoint` serves: the latest stored version at the largest stored size."""
    best: tuple[int, int, str] | None = None
    for version, size, text in store.checkpoints():
        if best is None or (size, version) > (best[1], best[0]):
            best = (version, size, text)
    return best[2] if best else None


def last_cosigned_size(store: Store, witness: WitnessConfig) -> int | None:
    """The largest stored checkpoint that carries a valid cosignature by `witness` (None: none does)."""
    sizes = []
    for _version, size, text in store.checkpoints():
        if witness.name not in text:
            continue
        try:
            if valid_cosignatures(notes.parse_note(text), [witness]):
                sizes.append(size)
        except LedgerError:
            continue
    return max(sizes, default=None)


# --- pushing checkpoints to witnesses -----------------------------------------------------------------


class StoreProofs:
    """Consistency proofs from the store's leaves, read once and extended as the log grows.

    Each proof hashes the tree of the new size again (O(size)); a server that keeps its tree's tiles
    can give `WitnessPusher` a cheaper `ConsistencyProofs`.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._leaves: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, old: int, new: int) -> list[bytes]:
        with self._lock:
            if new > len(self._leaves):
                self._leaves = read_leaves(self._store, new) if not self._leaves else \
                    self._leaves + _more_leaves(self._store, len(self._leaves), new)
            return merkle.ProofSource(self._leaves, new).consistency_proof(old)


def _more_leaves(store: Store, start: int, stop: int) -> list[bytes]:
    out: list[bytes] = []
    for event in store.log(start, stop):
        if event.index != start + len(out):
            raise BadInput(f"the stored log has a gap at index {start + len(out)} (run `custody verify`)")
        out.append(merkle.leaf_hash(event.wire))
    if len(out) != stop - start:
        raise BadInput(f"the stored log ends before index {stop - 1}")
    return out


class WitnessPusher:
    """Pushes checkpoints to one witness by c2sp.org/tlog-witness `add-checkpoint`; thread-safe, in order.

    `last_size` is the size the witness last cosigned as far as this log knows (None: no contact yet,
    so the first push says `old 0`); a 409 corrects it.
    """

    def __init__(self, witness: WitnessConfig, proofs: ConsistencyProofs, *, client: httpx.Client | None = None,
                 timeout: float = PUSH_TIMEOUT, last_size: int | None = None) -> None:
        if witness.url is None:
            raise BadInput(f"witness {witness.name} has no URL to push to")
        self.witness = witness
        self.url = witness.url + ADD_CHECKPOINT_PATH
        self._proofs = proofs
        self._own_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._timeout = timeout
        self._lock = threading.Lock()
        self.last_size = last_size

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def push(self, note_text: str) -> str:
        """Send the operator-signed `note_text`; return the witness's valid cosignature line(s).

        Raises `WitnessRefused` (its `status` the witness's answer) when the witness refuses, and
        `ServiceUnavailable` when it cannot be reached or answers something that is not a valid
        cosignature by its key.
        """
        note = notes.parse_note(note_text)
        checkpoint = note.checkpoint
        name = self.witness.name
        with self._lock:
            old = self.last_size or 0
            for _ in range(MAX_RESENDS + 1):
                if old > checkpoint.size:
                    raise WitnessRefused(f"witness {name} has cosigned size {old}, beyond this checkpoint "
                                         f"({checkpoint.size})")
                proof = [] if old in (0, checkpoint.size) else self._proofs(old, checkpoint.size)
                response = self._post(format_request(old, proof, note_text))
                if response.status_code == 200:
                    lines = self._cosignatures(note, response.content)
                    self.last_size = checkpoint.size
                    return lines
                if response.status_code != 409:
                    raise self._refused(response)
                latest = _tlog_size(response, name)
                self.last_size = latest
                if latest == old:
                    raise WitnessRefused(f"witness {name} answered 409 naming the old size {old} that was sent")
                old = latest
            raise WitnessRefused(f"witness {name} kept answering 409 after {MAX_RESENDS} resends")

    def _post(self, body: bytes) -> httpx.Response:
        try:
            with self._client.stream("POST", self.url, content=body, timeout=self._timeout,
                                     headers={"content-type": "text/plain; charset=utf-8"}) as response:
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > MAX_WITNESS_ANSWER:
                        raise ServiceUnavailable(f"witness {self.witness.name} at {self.url} answered more "
                                                 f"than {MAX_WITNESS_ANSWER} bytes")
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"cannot reach witness {self.witness.name} at {self.url}: "
                                     f"{type(e).__name__} {e}".strip()) from e
        return httpx.Response(response.status_code, headers=response.headers, content=data)

    def _refused(self, response: httpx.Response) -> LedgerError:
        text = response.content[:200].decode("utf-8", "replace").strip()
        detail = f"witness {self.witness.name} at {self.url} answered {response.status_code}: {text}"
        if 400 <= response.status_code < 500:
            error = WitnessRefused(detail)
            error.status = response.status_code
            return error
        return ServiceUnavailable(detail)

    def _cosignatures(self, note: ParsedNote, answer: bytes) -> str:
        """The answer's valid cosignature lines by this witness; lines by other keys are ignored."""
        name = self.witness.name
        try:
            text = answer.decode("utf-8")
        except UnicodeDecodeError:
            raise ServiceUnavailable(f"witness {name} answered text that is not UTF-8") from None
        lines = text.split("\n")
        if not text.endswith("\n") or not all(line.startswith(notes.SIGNATURE_LINE_PREFIX) for line in lines[:-1]):
            raise ServiceUnavailable(f"witness {name} answered something other than signature lines")
        mine = []
        for line in lines[:-1]:
            try:
                one = notes.parse_note(f"{note.body}\n{line}\n")
            except LedgerError:
                continue  # a line this parser does not take is no cosignature by the witness's key
            if valid_cosignatures(one, [self.witness]):
                mine.append(line + "\n")
            elif one.signatures[0].name == name and one.signatures[0].key_hash == self.witness.key_hash:
                raise ServiceUnavailable(f"witness {name} answered a cosignature that does not verify")
        if not mine:
            raise ServiceUnavailable(f"witness {name} answered no cosignature by its key")
        return "".join(mine)


def _tlog_size(response: httpx.Response, name: str) -> int:
    """The size a 409 names: `text/x.tlog.size`, a decimal and a newline (c2sp.org/tlog-witness)."""
    media = response.headers.get("content-type", "").split(";")[0].strip().lower()
    text = response.content.decode("ascii", "replace")
    if media != TLOG_SIZE_MEDIA_TYPE or not text.endswith("\n") or not text[:-1].isdigit() or \
            (len(text) > 2 and text.startswith("0")) or len(text) > 21:
        raise ServiceUnavailable(f"witness {name} answered 409 without a {TLOG_SIZE_MEDIA_TYPE} size")
    return int(text[:-1])


@dataclass(frozen=True)
class PushOutcome:
    """One witness's answer to one checkpoint, for the server's log."""

    witness: str
    size: int
    ok: bool
    detail: str


def push_and_store(store: Store, pusher: WitnessPusher, note_text: str) -> PushOutcome:
    """Push `note_text` to the witness and store the cosignature it returns; never raises a LedgerError."""
    name = pusher.witness.name
    try:
        size = notes.parse_note(note_text).checkpoint.size
    except LedgerError as e:
        return PushOutcome(name, -1, False, f"not a checkpoint: {e.detail}")
    try:
        lines = pusher.push(note_text)
        accepted = accept_cosignatures(store, note_text + lines, [pusher.witness])
    except LedgerError as e:
        return PushOutcome(name, size, False, e.detail)
    stored = "stored" if accepted.written else "already stored"
    return PushOutcome(name, size, True, f"witness {name} cosigned checkpoint {size} ({stored})")


# --- the service's witnessing, in one object ----------------------------------------------------------


class Witnessing:
    """What `custody serve --witness …` adds to the service, behind three seams.

    - `on_checkpoint(size, note)`: call when a new checkpoint is stored; the note is queued and pushed
      to every witness with a URL by a background thread (`start`/`stop`), so the caller never waits
      for a witness; a backlog is coalesced to the newest checkpoint, whose proof covers the others.
    - `accept(body)`: `POST /v1/cosignatures` (see `accept_cosignatures`).
    - `decorate(note)`: the note `GET /checkpoint` serves, with the configured witnesses' cosignatures
      stored for its checkpoint added: those this process stored, and those another process on the same
      database stored, which the background thread reads every `refresh_every` seconds. It never
      touches the store itself, so an event loop may call it.

    `start` also queues the latest stored checkpoint, so a restarted service brings its witnesses up to
    date without waiting for the log to grow.
    """

    def __init__(self, db: str, witnesses: Sequence[WitnessConfig], *, proofs: ConsistencyProofs | None = None,
                 client: httpx.Client | None = None, timeout: float = PUSH_TIMEOUT,
                 refresh_every: float = 1.0) -> None:
        self.witnesses = list(witnesses)
        self._db = db
        self._store: Store | None = None
        self._store_lock = threading.RLock()
        self._proofs = proofs
        self._client = client
        self._timeout = timeout
        self._refresh_every = refresh_every
        self._refreshed = float("-inf")
        self._cosigned: dict[int, str] = {}  # size → the stored note with the most cosignatures known
        self._index = StoredCheckpoints()
        self._pushers: list[WitnessPusher] | None = None
        self._pending: str | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.outcomes: list[PushOutcome] = []  # the latest answers, newest last (at most 100)

    # --- the store ---

    def store(self) -> Store:
        with self._store_lock:
            if self._store is None or not self._store.opened:
                if self._store is not None:
                    self._store.close()
                self._store = Store(self._db)
            return self._store

    def close(self) -> None:
        self.stop()
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None
        for pusher in self._pushers or ():
            pusher.close()

    # --- accepting and serving ---

    def accept(self, body: bytes | str) -> Accepted:
        with self._store_lock:
            accepted = accept_cosignatures(self.store(), body, self.witnesses, index=self._index)
        self._remember(accepted.checkpoint.size, accepted.note)
        return accepted

    def decorate(self, note: str) -> str:
        """`note` with the cosignatures stored for its checkpoint, if any (else `note` unchanged)."""
        if not self.witnesses or not self._cosigned:
            return note
        try:
            parsed = notes.parse_note(note)
        except LedgerError:
            return note
        held = self._cosigned.get(parsed.checkpoint.size)
        if held is None or not held.startswith(parsed.body + "\n"):
            return note
        try:
            stored = valid_cosignatures(notes.parse_note(held), self.witnesses)
        except LedgerError:
            return note
        have = {(s.name, s.key_hash) for s in parsed.signatures}
        extra = [sig for _, sig, _ in stored if (sig.name, sig.key_hash) not in have]
        if not extra or len(parsed.signatures) + len(extra) > notes.MAX_SIGNATURES:
            return note
        return note + "".join(sig.line() for sig in extra)

    def _remember(self, size: int, note: str) -> None:
        held = dict(self._cosigned)
        if len(note) >= len(held.get(size, "")):
            held[size] = note
        self._cosigned = {k: held[k] for k in sorted(held)[-KEEP_SIZES:]}  # one assignment: readers see either

    def refresh(self) -> None:
        """Adopt the newest stored version at the largest stored size (another process may have stored it)."""
        try:
            with self._store_lock:
                self._index.sync(self.store())
        except LedgerError:
            return
        newest = self._index.newest()
        if newest is not None:
            self._remember(*newest)

    # --- pushing ---

    def start(self) -> None:
        if self._thread is None and self.witnesses:
            if any(w.url for w in self.witnesses):
                with contextlib.suppress(LedgerError), self._store_lock:
                    self._pending = served_note(self.store())
            self._thread = threading.Thread(target=self._run, name="custody-witnessing", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout * (MAX_RESENDS + 2))
            self._thread = None

    def on_checkpoint(self, size: int, note: str) -> None:
        with self._wake:
            self._pending = note
            self._wake.notify_all()

    def push_now(self, note: str) -> list[PushOutcome]:
        """Push `note` to every witness with a URL and store what they answer (the thread's work)."""
        with self._store_lock:
            store = self.store()
            if self._pushers is None:
                proofs = self._proofs or StoreProofs(store)
                self._pushers = [WitnessPusher(w, proofs, client=self._client, timeout=self._timeout,
                                               last_size=last_cosigned_size(store, w))
                                 for w in self.witnesses if w.url]
        outcomes = [self._push_one(pusher, note) for pusher in self._pushers]
        self.outcomes = (self.outcomes + outcomes)[-100:]
        return outcomes

    def _push_one(self, pusher: WitnessPusher, note: str) -> PushOutcome:
        """`push_and_store`, with the store locked only while storing (a witness may take seconds)."""
        name = pusher.witness.name
        size = notes.parse_note(note).checkpoint.size
        try:
            lines = pusher.push(note)
            accepted = self.accept(note + lines)
        except LedgerError as e:
            return PushOutcome(name, size, False, e.detail)
        stored = "stored" if accepted.written else "already stored"
        return PushOutcome(name, size, True, f"witness {name} cosigned checkpoint {size} ({stored})")

    def _run(self) -> None:
        pushing = any(w.url for w in self.witnesses)
        while True:
            with self._wake:
                if self._pending is None and not self._stopping:
                    self._wake.wait(self._refresh_every)
                if self._stopping:
                    return
                note, self._pending = (self._pending, None) if pushing else (None, None)
            with contextlib.suppress(Exception):  # a witness's or the store's failure never stops the service
                if note is not None:
                    self.push_now(note)
                now = time.monotonic()
                if now - self._refreshed >= self._refresh_every:
                    self._refreshed = now
                    self.refresh()
