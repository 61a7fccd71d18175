"""Verification in worker processes: signatures and stored unit links checked in parallel, folded in order.

`verify` reads the log in order, in chunks, and decodes each statement with the one decoder
(`statement.decode`) a chunk ahead of the fold; worker processes verify the chunk's signatures with
libsodium (`statement.verify_signature`), each under the key its signer id names among the keys the log
has named so far (a genesis' authorities, the registrations). The caller folds the chunks in log order
and runs every hard rule with `rules.check`, skipping only the signature verification a worker has
already done under exactly the key the rules would use (`signature_done`); every other statement's
signature is verified again, in order, as if there were no workers. With one worker no process is
started and the same functions run in the calling process (`decode_chunk`).

Decoding stays in the calling process because a decoded statement costs more to send between processes
than to decode: workers get (body, signature, key) and answer one byte each.

Unit links (database only): each unit's stored chain links must be exactly the log's statements that name
it, in log order. The two sides are compared as multisets of (version, index, statement hash, serial):
the fold gives the log side (a unit's version after a statement is its chain's length, `UnitState.links`)
and workers read the stored side in independent ranges of row ids, checking that each row's unit id is
its serial's. The comparison is MSet-Add-Hash under a secret random key (Clarke, Devadas, van Dijk,
Gassend, Suh, "Incremental Multiset Hash Functions and Their Application to Memory Integrity Checking",
ASIACRYPT 2003): the sum of keyed BLAKE2b-256 values of the elements. The key is drawn after the database
was written, so no forger can aim at a collision (about 2^-256 per try). Any difference, and any row that
does not read as a link, sends the caller to the exact comparison, which names the unit and the index.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import secrets
import struct
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import msgpack

from ledger import merkle, rules
from ledger.errors import IntegrityError, SignatureInvalid
from ledger.state import State
from ledger.statement import Statement, decode, key_id, verify_signature
from ledger.store import Store

CHUNK_STATEMENTS = 400  # statements per chunk: small enough to keep both cores busy to the end
CHUNK_BYTES = 1 << 19  # stored bytes per chunk: a chunk of 1,000-unit shipments is a few statements
LINK_ROWS = 25_000  # row ids of stored events per unit link task
WINDOW_PER_WORKER = 3  # chunks in flight per worker: enough to hide the fold, bounded memory
MIN_STATEMENTS = 1_000  # below this, default verification stays in-process: starting workers costs more

# RFC 4122 §4.3 name-based UUID (version 5): the id `aggregates.unit_id` gives a unit
_NAMESPACE_URL = bytes.fromhex("6ba7b8119dad11d180b400c04fd430c8")

# (index, the statement or None, (check, index, detail) if it did not decode, the key its signature verified
# under in a worker or None)
Item = tuple[int, Statement | None, tuple[str, int | None, str] | None, bytes | None]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_count(requested: int | None, statements: int | None) -> int:
    """`--workers`, or by default every core, but one for a log known to be small."""
    if requested is not None:
        return max(1, requested)
    if statements is not None and statements < MIN_STATEMENTS:
        return 1
    return available_cores()


def signature_done(public: bytes | None, verified: bytes | None, index: int) -> bool:
    """True when a worker's libsodium accepted the signature under `verified`, the very key `rules.check`
    would verify it under (`public`, the signer's registered key): checking it again would repeat it."""
    return verified is not None and public is not None and index > 0 and public == verified


def check(state: State, statement: Statement, index: int, now_us: int, verified: bytes | None, *,
          trusted: Collection[bytes] | None = None) -> None:
    """`rules.check`, minus the one signature verification a worker has already done (`signature_done`)."""
    info = state.keys.get(statement.signer)
    done = signature_done(info.public if info is not None else None, verified, index)
    rules.check(state, statement, index, now_us, trusted=trusted, check_signature=not done)


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


def decoded_log(store: Store, workers: int | None = None) -> Iterator[tuple[int, Item]]:
    """(stored version, item) of every stored log event, in order, with the signatures workers verified.

    For a caller that folds the whole log (replay): `check` then skips exactly those signatures.
    """
    with Pipeline(worker_count(workers, store.size()), store.url) as pipe:
        for versions, items, _ in pipe.decode(store_chunks(store), stored=True):
            yield from zip(versions, items, strict=True)


# --- the work of one chunk: decoding here, signatures in the workers (or here, with one worker) -------


def _no_ext(code: int, data: bytes) -> None:
    return None  # the event's timestamp: the statement is what counts


def _stored_wire(state: bytes) -> bytes | None:
    """The statement a stored log event carries, or None if the event does not decode."""
    try:
        decoded = msgpack.unpackb(state, raw=False, strict_map_key=False, ext_hook=_no_ext)
    except Exception:  # msgpack raises a handful of unrelated types for bad input
        return None
    wire = decoded.get("wire") if isinstance(decoded, dict) else None
    return wire if isinstance(wire, bytes) else None


def _learn(known: dict[str, bytes], statement: Statement) -> None:
    """Keys a genesis or a registration names: candidates only, `rules.check` decides what counts."""
    if statement.kind == "ledger_opened":
        for public in statement.data["authorities"]:
            known[key_id(public)] = public
    elif statement.kind == "participant_registered":
        known[key_id(statement.data["key"])] = statement.data["key"]


_VERSION_INDEX = struct.Struct(">QQ")


class LinkHash:
    """MSet-Add-Hash of unit links (version, index, statement hash, serial) under one secret key."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._mac = hashlib.blake2b(key=key, digest_size=32)
        self.total = 0

    def element(self, version: int, index: int, statement_hash: bytes, serial: str) -> int:
        """A link as a number to add up: keyed BLAKE2b of its fixed-width fields, then the serial."""
        h = self._mac.copy()
        h.update(_VERSION_INDEX.pack(version, index) + statement_hash + serial.encode())
        return int.from_bytes(h.digest(), "big")

    def add(self, version: int, index: int, statement_hash: bytes, serial: str) -> None:
        self.total += self.element(version, index, statement_hash, serial)

    def add_statement(self, versions: Sequence[int], index: int, statement_hash: bytes,
                      serials: Sequence[str]) -> None:
        """Every link of one statement: its units' new versions, in order."""
        mac, pack, total = self._mac, _VERSION_INDEX.pack, self.total
        for version, serial in zip(versions, serials, strict=True):
            h = mac.copy()
            h.update(pack(version, index) + statement_hash + serial.encode())
            total += int.from_bytes(h.digest(), "big")
        self.total = total


def _decode(start: int, blobs: Sequence[bytes], stored: bool, known: dict[str, bytes]
            ) -> tuple[list[Item], bytes, list[tuple[int, bytes]]]:
    """Decode the statements at `start`…; also their leaf hashes (32 bytes each, one per blob) and, for
    each statement whose signer's key is known, (its position in the chunk, that key)."""
    items: list[Item] = []
    leaves = bytearray()
    signed: list[tuple[int, bytes]] = []
    for offset, blob in enumerate(blobs):
        index = start + offset
        wire = _stored_wire(blob) if stored else blob
        if wire is None:
            leaves += merkle.leaf_hash(blob)
            items.append((index, None, ("encoding", index, "the stored log event cannot be decoded"), None))
            continue
        leaves += merkle.leaf_hash(wire)
        try:
            statement = decode(wire)
        except IntegrityError as e:
            items.append((index, None, (e.check, index if e.index is None else e.index, e.detail), None))
            continue
        _learn(known, statement)
        public = known.get(statement.signer)
        if public is not None:
            signed.append((offset, public))
        items.append((index, statement, None, None))
    return items, bytes(leaves), signed


def _signature_ok(body: bytes, signature: bytes, public: bytes) -> bool:
    """Whether libsodium accepts `signature` on `body` under `public` (`statement.verify_signature`)."""
    probe = Statement(wire=b"", body=body, signature=signature, hash=b"", origin="", kind="", at=0, signer="",
                      units=(), data={})
    try:
        verify_signature(probe, public)
    except SignatureInvalid:
        return False
    return True


def _verified(items: list[Item], signed: Sequence[tuple[int, bytes]], accepted: bytes) -> list[Item]:
    """The items, each with the key its signature was verified under where `accepted` says so."""
    for (offset, public), ok in zip(signed, accepted, strict=True):
        if ok:
            index, statement, failure, _ = items[offset]
            items[offset] = (index, statement, failure, public)
    return items


def decode_chunk(start: int, blobs: Sequence[bytes], stored: bool,
                 known: dict[str, bytes]) -> tuple[list[Item], bytes]:
    """Decode the statements at `start`… and verify the signatures it can, all in this process.

    `blobs` are wire forms, or stored log event states if `stored`; `known` (key id → key) is updated
    with the keys each genesis and registration names. Returns the items and the leaf hashes.
    """
    items, leaves, signed = _decode(start, blobs, stored, known)
    accepted = bytes(_signature_ok(statement.body, statement.signature, public)
                     for (offset, public) in signed
                     for statement in [items[offset][1]] if statement is not None)
    return _verified(items, signed, accepted), leaves


def unit_hex(origin: str, serial: str) -> str:
    """`aggregates.unit_id(origin, serial).hex`, without building a UUID (RFC 4122 §4.3)."""
    name = f"custody:{origin}/unit/{serial}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_URL + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def scan_links(store: Store, origin: str, low: int | None, high: int | None,
               link_key: bytes) -> tuple[int, int, bool]:
    """The stored unit links with row ids in [low, high): (their multiset hash, how many, anomaly).

    An anomaly is a row that does not read as a link of the unit its id names; the caller then runs the
    exact comparison, which reports it.
    """
    links = LinkHash(link_key)
    rows = store.unit_link_rows(low, high)
    seen: dict[str, str] = {}  # serial -> unit id: one SHA-1 per unit, not per link
    for uid, version, blob in rows:
        try:
            state = msgpack.unpackb(blob, raw=False, strict_map_key=False, ext_hook=_no_ext)
        except Exception:  # msgpack raises a handful of unrelated types for bad input
            return links.total, len(rows), True
        if not isinstance(state, dict):
            return links.total, len(rows), True
        serial, index, hash_ = state.get("serial"), state.get("index"), state.get("hash")
        if (type(serial) is not str or type(index) is not int or type(hash_) is not bytes
                or type(version) is not int or not 0 <= index < 1 << 63 or not 0 < version < 1 << 63
                or len(hash_) != 32):
            return links.total, len(rows), True
        expected = seen.get(serial)
        if expected is None:
            expected = seen[serial] = unit_hex(origin, serial)
        if uid != expected:
            return links.total, len(rows), True
        links.add(version, index, hash_, serial)
    return links.total, len(rows), False


def id_ranges(bound: int, step: int) -> list[tuple[int | None, int | None]]:
    """Ranges of row ids covering every row: [None, step), [step, 2·step), …, [k·step, None)."""
    cuts = list(range(step, bound, step))
    return list(zip([None, *cuts], [*cuts, None], strict=True))


# --- worker processes ------------------------------------------------------------------------------------

_worker_store: Store | None = None
_worker_url: str | None = None
def _init_worker(url: str | None) -> None:
    global _worker_store, _worker_url
    _worker_store, _worker_url = None, url


def _verify_task(jobs: Sequence[tuple[bytes, bytes, bytes]]) -> bytes:
    """One byte per (body, signature, key): 1 if libsodium accepts the signature."""
    return bytes(_signature_ok(body, signature, public) for body, signature, public in jobs)


def _links_task(origin: str, low: int | None, high: int | None, link_key: bytes) -> tuple[int, int, bool]:
    global _worker_store
    if _worker_store is None:
        assert _worker_url is not None
        _worker_store = Store(_worker_url, readonly=True)
    return scan_links(_worker_store, origin, low, high, link_key)


class _Done:
    """A task run in the calling process, when it is collected (one worker: nothing runs ahead)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn, self._args = fn, args

    def ready(self) -> bool:
        return True

    def get(self) -> Any:
        return self._fn(*self._args)


class Pipeline:
    """The worker processes of one verification (none with one worker), closed on exit."""

    def __init__(self, workers: int, url: str | None = None) -> None:
        self.workers = max(1, workers)
        self._pool: Any = None
        if self.workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            # Forked workers must never finalise what they inherit (a database connection closed in a
            # child closes it for the parent): frozen objects are left alone by the cycle collector.
            gc.freeze()
            try:
                self._pool = context.Pool(self.workers, initializer=_init_worker, initargs=(url,))
            finally:
                gc.unfreeze()
        self._known: dict[str, bytes] = {}  # the calling process's own, when it decodes
        self._links: deque[tuple[int | None, int | None]] = deque()
        self._link_tasks: list[Any] = []
        self._link_store: Store | None = None
        self._link_origin = ""
        self._link_key = b""
        self.link_total = 0
        self.link_rows = 0
        self.link_anomaly = False

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if self._pool is not None:
            if kind is None:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if self._pool is None:
            return _Done(fn, args)
        return self._pool.apply_async(fn, args)

    # --- statements, in order ---

    def decode(self, chunks: Iterator[tuple[int, list[bytes], Any]], *,
               stored: bool) -> Iterator[tuple[Any, list[Item], bytes]]:
        """(meta, items, leaves) for each (start, blobs, meta) chunk of `chunks`, in order.

        Chunks are decoded here, as they are read; their signatures are verified by the workers while
        the caller folds the chunks before them. An exception raised by `chunks` is raised here after
        the chunks before it have been yielded.
        """
        window = self.workers * WINDOW_PER_WORKER if self._pool is not None else 1
        pending: deque[tuple[Any, Any, Any]] = deque()
        error: Exception | None = None
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    start, blobs, meta = next(chunks)
                except StopIteration:
                    exhausted = True
                    break
                except Exception as e:  # the source's own failure, reported in its place in the order
                    error, exhausted = e, True
                    break
                if self._pool is None:
                    pending.append((meta, _Done(decode_chunk, (start, blobs, stored, self._known)), None))
                else:
                    decoded = _decode(start, blobs, stored, self._known)
                    items, _, signed = decoded
                    jobs = [(statement.body, statement.signature, public) for offset, public in signed
                            for statement in [items[offset][1]] if statement is not None]
                    pending.append((meta, decoded, self._pool.apply_async(_verify_task, (jobs,))))
                self._step_links()
            if not pending:
                break
            meta, work, task = pending.popleft()
            if task is None:
                items, leaves = work.get()
            else:
                items, leaves, signed = work
                items = _verified(items, signed, task.get())
            yield meta, items, leaves
        if error is not None:
            raise error

    # --- unit links, alongside ---

    def start_links(self, store: Store, origin: str, link_key: bytes) -> None:
        """Hash every stored unit link, in ranges of row ids, while the statements are decoded."""
        self._link_store, self._link_origin, self._link_key = store, origin, link_key
        self._links.extend(id_ranges(store.event_id_bound(), LINK_ROWS))

    def _step_links(self, wait: bool = False) -> None:
        """Collect finished link scans; queue more while fewer than one per worker are running."""
        still: list[Any] = []
        for task in self._link_tasks:
            if not (wait or task.ready()):
                still.append(task)
                continue
            total, rows, anomaly = task.get()
            self.link_total += total
            self.link_rows += rows
            self.link_anomaly = self.link_anomaly or anomaly
        self._link_tasks = still
        if self.link_anomaly:
            self._links.clear()
        limit = self.workers if self._pool is not None else 0  # in-process: all of them at the end
        while self._links and len(self._link_tasks) < limit:
            self._queue_link(*self._links.popleft())

    def _queue_link(self, low: int | None, high: int | None) -> None:
        if self._pool is None:
            assert self._link_store is not None
            task: Any = _Done(scan_links, (self._link_store, self._link_origin, low, high, self._link_key))
        else:
            task = self._pool.apply_async(_links_task, (self._link_origin, low, high, self._link_key))
        self._link_tasks.append(task)

    def finish_links(self) -> tuple[int, bool]:
        """Wait for every link scan: (the stored side's multiset hash, whether a row did not read right)."""
        while self._links or self._link_tasks:
            while self._links and (self._pool is None or len(self._link_tasks) < self.workers):
                self._queue_link(*self._links.popleft())
            self._step_links(wait=True)
        return self.link_total, self.link_anomaly


def new_link_key() -> bytes:
    """A fresh secret key for one verification's multiset hashes."""
    return secrets.token_bytes(32)
