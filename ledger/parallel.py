"""Verification in worker processes: signatures checked in parallel, statements folded in order.

`verify` reads the log in order, in chunks, and decodes each statement with the one decoder
(`statement.decode`) a chunk ahead of the fold; worker processes verify the chunk's signatures with
libsodium (`statement.signature_valid`), each under the key its signer id names among the keys the log
has named so far (a genesis' authorities, the registrations). The caller folds the chunks in log order
and runs every hard rule with `rules.check`, skipping only the signature verification a worker has
already done under exactly the key the rules would use (`rules.signature_done`); every other statement's
signature is verified again, in order, as if there were no workers. `workers` counts the calling
process: it verifies a chunk's signatures itself whenever the others have enough queued, so N workers
keep N cores busy. With one worker no process is started.

Decoding stays in the calling process because a decoded statement costs more to send between processes
than to decode: workers get (body, signature, key) and answer one byte each.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from ledger import merkle
from ledger.errors import BadInput, EncodingInvalid, IntegrityError, WorkerLost
from ledger.statement import Statement, decode, key_id, signature_valid
from ledger.store import Store

CHUNK_STATEMENTS = 100  # statements per chunk: small, so no process waits long for another
CHUNK_BYTES = 1 << 17  # stored bytes per chunk: a chunk of 1,000-unit shipments is a few statements
QUEUED_PER_WORKER = 3  # chunks ahead of each other process: one verifying, two waiting (longer than a
#                        chunk this process verifies itself meanwhile)
WINDOW_AHEAD = 8  # chunks decoded ahead of the fold, besides those: bounded memory
PIPE_BYTES = 1 << 20  # a worker's input pipe: its queued chunks (at most QUEUED_PER_WORKER · CHUNK_BYTES)
MIN_STATEMENTS = 1_000  # below this, default verification stays in-process: starting workers costs more


class Item(msgspec.Struct, frozen=True, gc=False):
    """One statement of the log as the pipeline hands it to the fold, in log order (a frozen msgspec
    structure, as `Statement` is: one per statement, built faster than a dataclass)."""

    index: int
    statement: Statement | None  # None: it did not decode
    failure: IntegrityError | None  # why it did not decode, at its index
    verified: bytes | None  # the key a worker's libsodium accepted its signature under, if any


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def max_workers() -> int:
    """The most processes a verification may use: twice the cores (more only adds contention)."""
    return 2 * available_cores()


def worker_count(requested: int | None, statements: int | None) -> int:
    """`--workers`, or by default every core, but one for a log known to be small. More than
    `max_workers()` is `BadInput`: each is a process."""
    if requested is not None:
        if requested > max_workers():
            raise BadInput(f"--workers {requested} is more than this machine can use: at most {max_workers()} "
                           f"(twice its {available_cores()} cores)")
        return max(1, requested)
    if statements is not None and statements < MIN_STATEMENTS:
        return 1
    return available_cores()


def store_chunks(store: Store) -> Iterator[tuple[int, list[bytes], list[int]]]:
    """The stored log events in version order, in chunks: (first position, states, versions)."""
    start = 0
    states: list[bytes] = []
    versions: list[int] = []
    size = 0
    for version, state in store.log_states(0):
        states.append(state)
        versions.append(version)
        size += len(state)
        if len(states) >= CHUNK_STATEMENTS or size >= CHUNK_BYTES:
            yield start, states, versions
            start += len(states)
            states, versions, size = [], [], 0
    if states:
        yield start, states, versions


def decoded_log(store: Store, workers: int | None = None) -> Generator[Item, None, None]:
    """Every stored log event's item, in order, with the signatures workers verified, each numbered as
    the store numbers it (its version less one), as `store.log` does.

    For a caller that folds the whole log (replay): `rules.check` given each item's key skips exactly those.
    """
    with Pipeline(worker_count(workers, store.size())) as pipe:
        for versions, items, _ in pipe.decode(store_chunks(store), stored=True):
            for version, item in zip(versions, items, strict=True):
                yield item if item.index == version - 1 else _renumbered(item, version - 1)


def _renumbered(item: Item, index: int) -> Item:
    """The item of a log with a gap: at the index its stored version says (`verify` names the gap)."""
    if item.failure is not None:
        item.failure.index = index
    return Item(index, item.statement, item.failure, item.verified)


# --- the work of one chunk: decoding here, signatures in the workers (or here, with one worker) -------


class _LogEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A stored log event as writers store it (`aggregates.stored_log_event`): every field is read, so a
    changed byte anywhere in its framing or keys makes it undecodable; verification uses the statement.
    It holds bytes, a list of bytes, an Ext and text, never a cycle: the collector need not track it."""

    wire: bytes
    range: list[bytes]  # the writer's Merkle compact range: the tree-head check reads the newest
    timestamp: msgspec.msgpack.Ext  # eventsourcing's write time
    originator_topic: str | msgspec.UnsetType = msgspec.UNSET  # on the log's first event


_LOG_EVENT = msgspec.msgpack.Decoder(_LogEvent)


def stored_wire(state: bytes) -> bytes | None:
    """The statement a stored log event carries, or None if the event does not decode."""
    try:
        return _LOG_EVENT.decode(state).wire
    except Exception:  # msgspec's errors, UnicodeDecodeError: the event does not decode
        return None


_NAMING_KEYS = frozenset({"ledger_opened", "participant_registered"})


def _learn(known: dict[str, bytes], statement: Statement) -> None:
    """Keys a genesis or a registration names: candidates only, `rules.check` decides what counts."""
    if statement.kind == "ledger_opened":
        for public in statement.data["authorities"]:
            known[key_id(public)] = public
    elif statement.kind == "participant_registered":
        known[key_id(statement.data["key"])] = statement.data["key"]


def _decode(start: int, blobs: Sequence[bytes], stored: bool, known: dict[str, bytes]
            ) -> tuple[list[Item], bytes, list[tuple[int, bytes]]]:
    """Decode the statements at `start`…; also their leaf hashes (32 bytes each, one per blob) and, for
    each statement whose signer's key is known, (its position in the chunk, that key)."""
    items: list[Item] = []
    leaves = bytearray()
    signed: list[tuple[int, bytes]] = []
    for offset, blob in enumerate(blobs):
        index = start + offset
        wire = stored_wire(blob) if stored else blob
        if wire is None:
            leaves += merkle.leaf_hash(blob)
            items.append(Item(index, None, EncodingInvalid("the stored log event cannot be decoded", index), None))
            continue
        leaves += merkle.leaf_hash(wire)
        try:
            statement = decode(wire)
        except IntegrityError as e:
            items.append(Item(index, None, e.at_index(index).with_traceback(None), None))
            continue
        if statement.kind in _NAMING_KEYS:
            _learn(known, statement)
        public = known.get(statement.signer)
        if public is not None:
            signed.append((offset, public))
        items.append(Item(index, statement, None, None))
    return items, bytes(leaves), signed


def _verified(items: list[Item], signed: Sequence[tuple[int, bytes]], accepted: bytes) -> list[Item]:
    """The items, each with the key its signature was verified under where `accepted` says so."""
    for (offset, public), ok in zip(signed, accepted, strict=True):
        if ok:
            item = items[offset]
            items[offset] = Item(item.index, item.statement, item.failure, public)
    return items


def decode_chunk(start: int, blobs: Sequence[bytes], stored: bool,
                 known: dict[str, bytes]) -> tuple[list[Item], bytes]:
    """Decode the statements at `start`… and verify the signatures it can, all in this process.

    `blobs` are wire forms, or stored log event states if `stored`; `known` (key id → key) is updated
    with the keys each genesis and registration names. Returns the items and the leaf hashes.
    """
    items, leaves, signed = _decode(start, blobs, stored, known)
    return _verified(items, signed, _verify_task(_jobs(items, signed))), leaves


def _jobs(items: Sequence[Item], signed: Sequence[tuple[int, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    """(body, signature, key) of each statement `signed` names: the work of verifying a chunk."""
    return [(statement.body, statement.signature, public) for offset, public in signed
            for statement in [items[offset].statement] if statement is not None]


# --- worker processes ------------------------------------------------------------------------------------

def _verify_task(jobs: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
    """One byte per (body, signature, key): 1 if libsodium accepts the signature."""
    return bytes([signature_valid(body, signature, public) for body, signature, public in jobs])


def _serve(jobs: Connection, answers: Connection, inherited: Sequence[Connection]) -> None:
    """A worker process: verify each chunk of jobs it receives and answer, in order, until None or the
    end of its input. It first closes the pipe ends it inherited from this process, so that if this
    process dies without a word, the worker's input ends and it stops too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked by the parent around the fork
    for connection in inherited:
        connection.close()
    while True:
        try:
            chunk = jobs.recv()
        except EOFError:
            return
        if chunk is None:
            return
        answers.send_bytes(_verify_task(chunk))


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT back while a worker is started: a Ctrl-C then reaches this process once the worker
    ignores it (`_serve`), never a worker still running this process's handler."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


class _Worker:
    """Another process verifying signatures: chunks of jobs in over one pipe, answers back over another,
    in order. No threads: this process writes and reads the pipes itself."""

    def __init__(self, context: Any, others: Sequence[_Worker]) -> None:
        jobs_in, self._jobs = context.Pipe(duplex=False)
        self._answers: Connection
        self._answers, answers_out = context.Pipe(duplex=False)
        _widen(self._jobs)
        inherited = [self._jobs, self._answers] + [c for w in others for c in (w._jobs, w._answers)]
        self.process = context.Process(target=_serve, args=(jobs_in, answers_out, inherited), daemon=True)
        with _interrupts_held():
            self.process.start()
        jobs_in.close()
        answers_out.close()
        self.backlog = 0  # chunks sent and not yet answered: the work it has ahead of it
        self._received: deque[bytes] = deque()  # answers arrived and not yet collected, oldest first

    def send(self, jobs: list[tuple[bytes, bytes, bytes]]) -> None:
        try:
            self._jobs.send(jobs)
        except OSError:  # its end of the pipe is closed: it is gone
            raise self._lost() from None
        self.backlog += 1

    def _lost(self) -> WorkerLost:
        return WorkerLost(f"a signature verification process (pid {self.process.pid}) stopped unexpectedly "
                          f"(exit code {self.process.exitcode}): killed, or out of memory?")

    def _receive(self) -> None:
        try:
            self._received.append(bytes(self._answers.recv_bytes()))
        except (EOFError, OSError):
            self.process.join(1)
            raise self._lost() from None
        self.backlog -= 1

    def drain(self) -> None:
        """Take in every answer that has arrived, so `backlog` counts only the work still ahead of it."""
        while self.backlog and self._answers.poll():
            self._receive()

    def answered(self) -> bool:
        """Whether the oldest uncollected chunk's answer has arrived."""
        self.drain()
        return bool(self._received)

    def answer(self) -> bytes:
        """The oldest uncollected chunk's answer (waiting for it)."""
        if not self._received:
            self._receive()
        return self._received.popleft()

    def stop(self, *, now: bool) -> None:
        """End the process: once it has finished its work, or at once."""
        if now:
            self.process.kill()
        else:
            try:
                self._jobs.send(None)
            except OSError:  # it is gone already
                self.process.kill()
        self.process.join()
        self._jobs.close()
        self._answers.close()


def _widen(connection: Connection) -> None:
    """Let a pipe hold all the chunks queued for one worker, so sending never waits (Linux; elsewhere
    a send may wait for the worker to read, which is slower, not wrong)."""
    try:
        import fcntl

        fcntl.fcntl(connection.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


class Pipeline:
    """The processes of one verification: this one and `workers - 1` others (none with one worker).

    This process decodes and folds; it also verifies the signatures of a chunk itself whenever the
    others already have enough chunks unfinished, so the N processes stay busy on N cores with none
    waiting and none oversubscribing them.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._others: list[_Worker] = []
        if self.workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            # Forked workers must never finalise what they inherit (a database connection closed in a
            # child closes it for the parent): frozen objects are left alone by the cycle collector.
            gc.freeze()
            try:
                for _ in range(self.workers - 1):
                    self._others.append(_Worker(context, self._others))
            except BaseException:
                self._stop(now=True)
                raise
            finally:
                gc.unfreeze()
        self._known: dict[str, bytes] = {}  # key id -> key, as the chunks decoded so far name them

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        self._stop(now=kind is not None)

    def _stop(self, *, now: bool) -> None:
        others, self._others = self._others, []
        for worker in others:
            worker.stop(now=now)

    def decode(self, chunks: Iterator[tuple[int, list[bytes], Any]], *,
               stored: bool) -> Iterator[tuple[Any, list[Item], bytes]]:
        """(meta, items, leaves) for each (start, blobs, meta) chunk of `chunks`, in order.

        Chunks are decoded here, as they are read; their signatures are verified by the other processes
        while the caller folds the chunks before them, or here when those have enough to do. An
        exception raised by `chunks` is raised here after the chunks before it have been yielded.
        Closing the generator early stops the other processes at once.
        """
        try:
            yield from self._decode(chunks, stored)
        except BaseException:
            self._stop(now=True)
            raise

    def _decode(self, chunks: Iterator[tuple[int, list[bytes], Any]],
                stored: bool) -> Iterator[tuple[Any, list[Item], bytes]]:
        ahead_limit = len(self._others) * QUEUED_PER_WORKER + WINDOW_AHEAD  # bounded memory
        # in log order: (meta, items, leaves, signed, the worker verifying it or None if verified here)
        pending: deque[tuple[Any, list[Item], bytes, list[tuple[int, bytes]], _Worker | None]] = deque()
        error: Exception | None = None
        exhausted = False
        while True:
            while pending and (pending[0][4] is None or pending[0][4].answered()):
                yield _collected(pending.popleft())
            if exhausted and not pending:
                break
            if exhausted or len(pending) >= ahead_limit:  # the head is still with another process
                yield _collected(pending.popleft())
                continue
            try:
                start, blobs, meta = next(chunks)
            except StopIteration:
                exhausted = True
                continue
            except Exception as e:  # the source's own failure, reported in its place in the order
                error, exhausted = e, True
                continue
            items, leaves, signed = _decode(start, blobs, stored, self._known)
            jobs = _jobs(items, signed)
            for other in self._others:
                other.drain()
            worker = min(self._others, key=lambda w: w.backlog, default=None)
            if worker is not None and worker.backlog < QUEUED_PER_WORKER:
                worker.send(jobs)
                pending.append((meta, items, leaves, signed, worker))
            else:
                pending.append((meta, _verified(items, signed, _verify_task(jobs)), leaves, signed, None))
        if error is not None:
            raise error


def _collected(chunk: tuple[Any, list[Item], bytes, list[tuple[int, bytes]], _Worker | None]
               ) -> tuple[Any, list[Item], bytes]:
    """A pending chunk with its signatures verified (waiting for the process that has them)."""
    meta, items, leaves, signed, worker = chunk
    return meta, items if worker is None else _verified(items, signed, worker.answer()), leaves
