"""The service's write side: submissions appended by the library's writer, and checkpoints signed.

One writer thread per process does every write, group-committing: it takes everything queued and hands
it (in groups of at most `GROUP_SIZE`) to `append.append_signed` (the hard rules, the writer's bounds, the
pre-check, one transaction under the store's writer lock, a lost race redone), which stores, in that same
transaction, the view rows and the checkpoint of the whole log that `tree_head.seal` signs there (`_seal`):
one commit answers them all. What is submitted meanwhile waits for the next cycle, which starts as soon as
this one ends. So a busy service signs one checkpoint per group and none when nothing grew. Growth by
other writers (the CLI, another serve process) is signed with `tree_head.sign_tree_head` within
`checkpoint_every` seconds, by a look at the store on a timer. Several processes on one PostgreSQL
database take turns on the writer lock; their checkpoints are one sequence, as the store's optimistic
versions allow one signer per version (the others find that size signed and adopt it).

A submission is answered once a checkpoint covers it, with an inclusion proof in that checkpoint. A wire
form already logged is answered the same way, before any rule. At most `max_waiting` submissions wait at
once; beyond that, and when the store is unavailable, the caller says 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import StoredEvent

from ledger import append, tree_head
from ledger.errors import (
    IntegrityError,
    LedgerError,
    NotALedger,
    StoreError,
)
from ledger.keys import PrivateKey
from ledger.service.tiles import TiledLog
from ledger.statement import Statement
from ledger.store import Store

DEFAULT_CHECKPOINT_EVERY_S = 1.0
MAX_WAITING = 1024  # DESIGN.md: at least 1,024 submissions may wait for a checkpoint at once
WAIT_TIMEOUT_S = 30.0  # a submission not covered by then is answered 503 (its retry is idempotent)
GROUP_SIZE = 512  # submissions appended in one transaction at most
MIN_REFRESH_S = 0.05  # a reader looking beyond the log held refreshes it at most this often
POLL_S = 1.0  # the writer thread looks at the store at least this often, even with nothing to do


@dataclass
class Pending:
    """One submission in flight: its statement, and where the writer thread puts the outcome."""

    wire: bytes
    statement: Statement
    findings: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome] = field(repr=False)

    def resolve(self, outcome: Outcome) -> None:
        def settle() -> None:
            if not self.future.done():
                self.future.set_result(outcome)

        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            self.loop.call_soon_threadsafe(settle)


@dataclass(frozen=True)
class Covered:
    """A logged statement and the checkpoint that covers it."""

    index: int
    statement: Statement
    size: int
    note: str


@dataclass(frozen=True)
class Failed:
    """A refused submission: the library's error (and the units' heads for `chain`), or unavailability."""

    error: LedgerError
    heads: tuple[tuple[str, bytes | None], ...] = ()
    unavailable: bool = False
    moved: bool = False  # DESIGN.md 409: a step whose `prev` differs from a unit's existing head


Outcome = Covered | Failed


class Ledger:
    """A ledger served over HTTP: its stores, its tiles, its writer thread and its latest checkpoint."""

    def __init__(self, db: str, operator: PrivateKey, *, checkpoint_every: float = DEFAULT_CHECKPOINT_EVERY_S,
                 max_waiting: int = MAX_WAITING, wait_timeout: float = WAIT_TIMEOUT_S) -> None:
        self.db = db
        self.operator = operator
        self.checkpoint_every = checkpoint_every
        self.max_waiting = max_waiting
        self.wait_timeout = wait_timeout
        self.tiles = TiledLog()
        self.writer = Store(db, create=True)
        self._reader = Store(db)
        self._reader_lock = threading.Lock()
        self.origin: str | None = None
        self.identity: tree_head.Ledger | None = None  # the genesis: origin and operator key, once known
        self._check_operator(self.writer)
        self.checkpoint: tuple[int, str] | None = None  # (size, note) of the largest stored checkpoint
        self._checkpoint_version = 0
        self._signed_so_far = tree_head.StoredSoFar()  # the signer reads only checkpoints stored since
        self._queue: queue.Queue[Pending] = queue.Queue()
        self._waiting: list[tuple[int, Pending]] = []
        self._waiting_lock = threading.Lock()
        self.in_flight = 0  # submissions accepted and not yet answered (changed on the event loop only)
        self._stop = threading.Event()
        self._wake = threading.Event()  # set when the writer should not wait for the next checkpoint time
        self._thread: threading.Thread | None = None
        self._last_signed = 0.0
        self._last_refresh = 0.0
        self._last_look = 0.0  # when the writer last looked at the store for growth
        self.healthy = True  # False while the store fails
        self.on_checkpoint: list[Callable[[int, str], None]] = []  # called (size, note) when a new one is stored
        self.decorate: Callable[[str], str] = lambda note: note  # adds stored cosignatures to a served note
        self.tiles.refresh(self.writer)
        self._load_checkpoints(self.writer)

    # --- stores ---------------------------------------------------------------------------------------

    def _check_operator(self, store: Store) -> None:
        if not store.opened:
            return
        ledger = tree_head.ledger_identity(store)
        if ledger.operator != self.operator.public:
            raise NotALedger(f"the operator key is not the one {store.url} names at genesis: serve it with "
                             "the ledger's operator key")
        self.origin = ledger.origin
        self.identity = ledger

    def reader(self) -> Store:
        """The store that reads serve from (reopened once the log begins, so that it finds it)."""
        with self._reader_lock:
            if not self._reader.opened and self.tiles.size:
                self._reader.close()
                self._reader = Store(self.db)
            return self._reader

    def refresh(self, *, force: bool = False) -> int:
        """Bring the tiles up to the store (at most every `MIN_REFRESH_S` unless forced); the size held."""
        now = time.monotonic()
        if force or now - self._last_refresh >= MIN_REFRESH_S:
            self._last_refresh = now
            self.tiles.refresh(self.reader())
        return self.tiles.size

    def close(self) -> None:
        self.stop()
        self.writer.close()
        self._reader.close()

    # --- the writer thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self._checkpoint_due(force=True)
        self._thread = threading.Thread(target=self._run, name="custody-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, pending: Pending) -> None:
        """Queue a submission and wake the writer: if it is in a cycle, the submission goes in the next one,
        with everything else queued meanwhile (one transaction, one checkpoint)."""
        self._queue.put(pending)
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self._sleep())
            self._wake.clear()
            started = time.monotonic()
            appended = False
            while not self._stop.is_set():
                group: list[Pending] = []
                with contextlib.suppress(queue.Empty):
                    while len(group) < GROUP_SIZE:
                        group.append(self._queue.get_nowait())
                if group:
                    appended = self._append(group, started) or appended
                if len(group) < GROUP_SIZE:
                    break
            # each group's checkpoint was stored with it; a cycle that logged what none covers yet (another
            # writer's statement, found logged) signs at once; else the timer's look
            self._checkpoint_due(force=appended, started=started)
        for pending in self._drain():
            pending.resolve(Failed(StoreError("the service is stopping"), unavailable=True))

    def _drain(self) -> list[Pending]:
        out: list[Pending] = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self._queue.get_nowait())
        with self._waiting_lock:
            out += [p for _, p in self._waiting]
            self._waiting = []
        return out

    def _sleep(self) -> float:
        """No wait when submissions are queued; else until the next checkpoint may be signed when the log
        grew beyond the latest one, else until the next look at the store for other writers' growth."""
        if self._queue.qsize():
            return 0.0
        due = self._last_signed + self.checkpoint_every
        covered = self.checkpoint[0] if self.checkpoint is not None else 0
        grown = self.tiles.size > covered
        target = due if grown else max(due, self._last_look + min(POLL_S, self.checkpoint_every))
        return max(0.001, target - time.monotonic())

    def _append(self, group: list[Pending], started: float) -> bool:
        """Append `group` and, in the same transaction, a checkpoint that covers it (`_seal`); whether some
        of it is logged and still waits for a checkpoint (to be signed now)."""
        sealed: list[tree_head.Sealed] = []
        try:
            if not self.writer.opened:  # another process may have opened the ledger meanwhile
                self._reopen_writer()
            if self.writer.opened and self.identity is None:
                self._check_operator(self.writer)
            outcomes = append.append_signed(self.writer, [(p.statement, p.findings) for p in group],
                                            seal=(lambda batch: self._seal(batch, sealed))
                                            if self.identity is not None else None)
            self.healthy = True
        except LedgerError as e:
            self.healthy = False
            for pending in group:
                pending.resolve(Failed(e, unavailable=True))
            return False
        if self.origin is None and self.writer.opened:
            self._check_operator(self.writer)
        recorded = [o for o in outcomes if isinstance(o, append.Recorded)]
        if recorded and not self.tiles.extend(recorded[0].index, [o.statement for o in recorded]):
            self.tiles.refresh(self.writer)
        if recorded and sealed:  # the transaction that stored them stored its checkpoint too
            self._adopt_sealed(sealed[-1], started)
        waiting: list[tuple[int, Pending]] = []
        for pending, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, append.Recorded):
                waiting.append((outcome.index, pending))
                continue
            logged = self.find_logged(pending.wire, pending.statement, self.writer) \
                if isinstance(outcome.error, IntegrityError) else None
            if logged is not None:
                waiting.append((logged, pending))
            else:
                pending.resolve(Failed(outcome.error, outcome.heads, moved=_moved(pending.statement,
                                                                                  outcome.heads)))
        self.wait_for_checkpoint(waiting)
        current = self.checkpoint[0] if self.checkpoint is not None else 0
        return any(index >= current for index, _ in waiting)

    def _seal(self, batch: append.Batch, sealed: list[tree_head.Sealed]) -> list[StoredEvent]:
        """The checkpoint of what `batch` appends, signed in its transaction (`tree_head.seal`)."""
        assert self.identity is not None
        done, event = tree_head.seal(self.writer, self.operator, self.identity, before=self._tree(batch.start),
                                     head=batch.stored_head, after=batch.range, known=self._signed_so_far)
        sealed.append(done)
        return [event]

    def _adopt_sealed(self, sealed: tree_head.Sealed, started: float) -> None:
        """A checkpoint stored with the group it covers: served from now on, and pushed to witnesses."""
        self._signed_so_far.version, self._signed_so_far.latest = sealed.so_far.version, sealed.so_far.latest
        checkpoint = sealed.signed.checkpoint
        if self.checkpoint is None or checkpoint.size > self.checkpoint[0]:
            self.checkpoint = (checkpoint.size, sealed.signed.note)
        self._checkpoint_version = max(self._checkpoint_version, sealed.so_far.version)
        self._last_signed = started
        for hook in self.on_checkpoint:
            with contextlib.suppress(Exception):  # a hook's failure never stops the log
                hook(checkpoint.size, sealed.signed.note)

    def _reopen_writer(self) -> None:
        fresh = Store(self.db)
        if fresh.opened:
            self.writer.close()
            self.writer = fresh
        else:
            fresh.close()

    def wait_for_checkpoint(self, waiting: list[tuple[int, Pending]]) -> None:
        """Answer each (index, submission) once a checkpoint covers the index (now, if one does)."""
        current = self.checkpoint
        later = []
        for index, pending in waiting:
            if current is not None and index < current[0]:
                pending.resolve(Covered(index, pending.statement, current[0], current[1]))
            else:
                later.append((index, pending))
        if later:
            with self._waiting_lock:
                self._waiting += later
            self._resolve_waiting()

    def _resolve_waiting(self) -> None:
        current = self.checkpoint
        if current is None:
            return
        size, note = current
        with self._waiting_lock:
            ready = [(i, p) for i, p in self._waiting if i < size]
            self._waiting = [(i, p) for i, p in self._waiting if i >= size]
        for index, pending in ready:
            pending.resolve(Covered(index, pending.statement, size, note))

    # --- checkpoints ----------------------------------------------------------------------------------

    def _load_checkpoints(self, store: Store) -> bool:
        """Adopt checkpoints stored since the last look (by any process); whether a larger one came.

        One that covers more than the tiles hold (another process appended and signed since they were
        brought up to the store) is adopted once they are brought up again: answers take their inclusion
        proofs in the checkpoint served, from the tiles. A checkpoint is stored after, or with, what it
        covers, so the tiles then reach it; one that covers more than the log holds is not adopted
        (`verify` reports it)."""
        grown = False
        for version, size, note in store.checkpoints(after=self._checkpoint_version):
            self._checkpoint_version = version
            if size > self.tiles.size:
                self.tiles.refresh(store)
            if 0 <= size <= self.tiles.size and (self.checkpoint is None or size > self.checkpoint[0]):
                self.checkpoint = (size, note)
                grown = True
        return grown

    def _checkpoint_due(self, *, force: bool = False, started: float | None = None) -> None:
        """Sign a checkpoint of the whole log if it grew and the last one is `checkpoint_every` old, or
        (`force`) at once, after a cycle that appended: `sign_tree_head` signs only a size not yet signed.

        The interval counts from the start of the cycle that appended and signed (`started`), so that a
        busy service signs every `checkpoint_every` seconds, not every interval plus the cycle's own time.
        """
        now = time.monotonic()
        if not force and now < self._last_signed + self.checkpoint_every:
            return
        self._last_look = now
        try:
            if not self.writer.opened:
                self._reopen_writer()
                if not self.writer.opened:
                    return
                self._check_operator(self.writer)
            size = self.tiles.refresh(self.writer)
            grown = self._load_checkpoints(self.writer)
            if size and (self.checkpoint is None or size > self.checkpoint[0]):
                signed = tree_head.sign_tree_head(self.writer, self.operator, tree=self._tree,
                                                     known=self._signed_so_far)
                self._last_signed = started if started is not None else time.monotonic()
                grown = self._load_checkpoints(self.writer) or grown
                if signed.stored:
                    for hook in self.on_checkpoint:
                        with contextlib.suppress(Exception):  # a hook's failure never stops the log
                            hook(signed.checkpoint.size, signed.note)
            self.healthy = True
        except LedgerError:
            self.healthy = False
            self._last_signed = time.monotonic()  # try again after an interval, not in a busy loop
            return
        if grown:
            self._resolve_waiting()

    def _tree(self, size: int) -> Any:
        while self.tiles.size < size:
            before = self.tiles.size
            self.tiles.refresh(self.writer)
            if self.tiles.size == before:
                raise StoreError(f"the log ends at {before} statements, not {size}")
        return self.tiles.tree(size)

    # --- idempotency ----------------------------------------------------------------------------------

    def find_logged(self, wire: bytes, statement: Statement, store: Store | None = None) -> int | None:
        """The index of `wire` if the log holds exactly it, else None."""
        store = store or self.reader()
        index: int | None = None
        if statement.units:
            for link in store.unit_links(statement.units[0][0]):
                if link.get("hash") == statement.hash:
                    index = link.get("index")
                    break
        else:
            index = self.tiles.admin.get(statement.hash)
        if not isinstance(index, int):
            return None
        event = next(iter(store.log(index, index + 1)), None)
        return index if event is not None and event.wire == wire else None


def _moved(statement: Statement, heads: tuple[tuple[str, bytes | None], ...]) -> bool:
    """Whether some unit of a step (not a `fabricated`) has a chain whose head is not the statement's
    `prev`: the signer's view of the heads is stale, so re-reading them and signing again may succeed."""
    if statement.kind == "fabricated" or not heads:
        return False
    current = dict(heads)
    return any(current.get(serial) is not None and current[serial] != prev for serial, prev in statement.units)
