"""Moving a ledger between stores and tools: bundle export and import, EPCIS 2.0 export.

DESIGN.md "Bundles": `export_bundle` streams a log prefix and the stored checkpoints it covers into the
format of `ledger.bundle`; `prepare_import` + `run_import` (or `import_bundle`, both at once) verify a
bundle in full and append it to an empty store, or append the part of it that extends a store whose log
is a prefix of it, with the bundle's checkpoints, so exporting the copy gives the same bytes.
`export_epcis` writes the GS1 EPCIS 2.0 document of `ledger.epcis`. Every file is written to a
temporary file beside its destination and renamed into place: a failure never leaves half a file.

Import is one bulk append through `append.Batch` (which re-checks every hard rule and builds the views).
Nothing is written before the whole bundle has verified (`verify_bundle`, the verifier's clock) and a
second reading has built every stored event and shown the file unchanged (same SHA-256): a bad bundle
writes nothing, not even a new SQLite file (on PostgreSQL not even the tables). Then the statements,
their unit links and the new checkpoints go to the database in ONE transaction when they number up to
`MAX_EVENTS_PER_TRANSACTION` stored events (every bundle but very large ones): a database failure rolls
it back, and a new SQLite file is removed (on PostgreSQL the tables, created just before, stay empty:
still an empty store). A larger import is written in transactions of whole statements of about that
size, the checkpoints in the last: as every statement was verified first, a later transaction cannot
fail on content, only on the database (or a concurrent writer); the store then holds a verified prefix
of the bundle (the error says which), and running the import again appends the rest, because an import
into a store whose log is a prefix of the bundle appends the remainder. A new SQLite file is removed
whatever failed. The views follow in their own transaction, as for every writer; readers and the next
writer catch them up if that one fails. Memory grows with the import (the stored events are built before
the first write): measured 210 MB peak for a 10.9 MB bundle of 20,108 statements and 120,000 unit
links. Export streams in constant memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from eventsourcing.persistence import StoredEvent

from ledger import bundle as bundle_format
from ledger import checkpoint as notes
from ledger import driver, epcis, files, merkle, views
from ledger import verify as verification
from ledger.append import Batch, now_us
from ledger.errors import (
    BadInput,
    BundleRejected,
    Conflict,
    IntegrityError,
    LedgerError,
    LogIndexInvalid,
    NotALedger,
    Refused,
    StoreError,
)
from ledger.statement import Statement
from ledger.store import Store, is_postgres, redact
from ledger.store.codec import LOG_TOPICS, stored_checkpoint

Progress = Callable[[int], None]
_T = TypeVar("_T")
PROGRESS_STEP = 256  # statements between progress callbacks: the bar costs nothing next to the work
# Stored events per import transaction. One transaction up to this; larger imports are written in whole-
# statement transactions of about this size. Measured on PostgreSQL: single writes of ~140,000 events
# (a 20,000-statement bundle) hung once and lost the connection once under load; 25,000 never failed.
MAX_EVENTS_PER_TRANSACTION = 25_000


def _no_progress(_n: int) -> None:
    return None


def _refuse_overwriting_store(store: Store, path: Path) -> None:
    if not store.postgres and path.exists():
        with contextlib.suppress(OSError):
            if os.path.samefile(store.url, path):
                raise BadInput(f"{path} is the ledger database itself; choose another file")


def _prefix_size(store: Store, upto: int | None) -> int:
    """The number of statements `--upto INDEX` selects (the whole log without it)."""
    if not store.opened or store.origin is None:
        raise StoreError(f"{redact(store.url)} holds no ledger yet (run `custody init`)")
    size = store.size()
    if upto is None:
        return size
    if upto < 0:
        raise BadInput(f"--upto {upto}: log indices start at 0")
    if upto >= size:
        raise BadInput(f"--upto {upto} is beyond the log (its last index is {size - 1})")
    return upto + 1


def _wires(store: Store, count: int, progress: Progress) -> Iterator[tuple[int, bytes]]:
    """(index, wire) of the log prefix [0, count), read in chunks; a gap in the stored log raises."""
    expected = 0
    for event in store.log(0, count):
        if event.index != expected:
            raise LogIndexInvalid(f"the stored log has index {event.index} where {expected} was expected "
                                  "(run `custody verify`)", expected)
        yield event.index, event.wire
        expected += 1
        if expected % PROGRESS_STEP == 0:
            progress(PROGRESS_STEP)
    progress(expected % PROGRESS_STEP)
    if expected != count:
        raise LogIndexInvalid(f"the stored log ends at {expected} statements, not {count}", expected)


# --- export -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """What `export_bundle` wrote: `statements` (indices 0…statements-1) and checkpoints, and the root."""

    path: Path
    origin: str
    statements: int
    checkpoints: int
    root: bytes


def bundle_checkpoints(store: Store, count: int) -> list[str]:
    """DESIGN.md: the stored checkpoints of size at most `count`, ascending by size.

    Where several stored notes have one size (say, a note re-stored with a witness's cosignature), the
    latest stored version is the one kept.
    """
    by_size: dict[int, tuple[int, str]] = {}
    for version, size, note in store.checkpoints():
        if size <= count and (size not in by_size or version > by_size[size][0]):
            by_size[size] = (version, note)
    return [by_size[size][1] for size in sorted(by_size)]


def export_bundle(store: Store, path: Path, *, upto: int | None = None,
                  progress: Progress = _no_progress) -> Exported:
    """Write the bundle of the log prefix 0…`upto` (the whole log by default) to `path`.

    Streams in chunks (memory does not grow with the log); the file appears only once it is complete.
    Raises `BadInput` for an `upto` beyond the log or an unwritable path.
    """
    count = _prefix_size(store, upto)
    _refuse_overwriting_store(store, path)
    assert store.origin is not None
    checkpoints = bundle_checkpoints(store, count)
    compact = merkle.CompactRange.empty()

    def wires() -> Iterator[bytes]:
        nonlocal compact
        for _, wire in _wires(store, count, progress):
            compact = compact.append(merkle.leaf_hash(wire))
            yield wire

    with files.replacing(path) as out:
        written = bundle_format.write_bundle(out, store.origin, wires(), checkpoints)
    return Exported(path, store.origin, written, len(checkpoints), compact.root())


# --- import -------------------------------------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """A binary file that hashes what is read from it: both passes of an import must see the same bytes."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.name = str(path)
        self._file = path.open("rb")
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        if n:
            self.digest.update(memoryview(buffer)[:n])
        return n or 0

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass(frozen=True)
class ImportPlan:
    """A bundle that verified, and the store it goes to: `prepare_import`'s answer for `run_import`."""

    url: str
    path: Path
    origin: str
    statements: int  # in the bundle
    digest: bytes  # SHA-256 of the bundle file as verified
    target_size: int  # statements the store held when the plan was made
    create: bool  # a new SQLite file is to be created
    findings: int  # compliance findings of the bundle's log (not a reason to refuse)
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Imported:
    """What `run_import` did: statements appended, how many the store already held, checkpoints stored."""

    url: str
    origin: str
    appended: int
    present: int
    checkpoints: int
    log_size: int
    created: bool


def _is_new_sqlite(url: str) -> bool:
    return not is_postgres(url) and not Path(url).exists()


def _open_target(url: str) -> Store | None:
    """The existing store at `url`, or None where there is none yet (an absent SQLite file, an empty
    PostgreSQL schema): those are created by `run_import` once the bundle has verified."""
    if _is_new_sqlite(url):
        return None
    try:
        return Store(url)
    except NotALedger:
        if is_postgres(url):
            return None  # no tables in this schema yet: an empty store
        raise


def prepare_import(url: str, path: Path, *, now: int | None = None, progress: Progress = _no_progress,
                   trusted: Sequence[bytes] | None = None) -> ImportPlan:
    """Check the target and verify the whole bundle (the verifier's clock: `now`; `trusted`: the authority
    keys its genesis must be signed by, as `verify --trust`); write nothing.

    Raises `NotALedger` (not a bundle; the target is not a ledger), `BundleRejected` (the bundle fails
    a check), `Refused` (another ledger's bundle). A bundle that does not verify is never imported.
    """
    if not path.is_file():
        raise BadInput(f"no bundle at {path}" if not path.exists() else f"{path} is not a file")
    clock = now if now is not None else now_us()
    target = _open_target(url)
    try:
        target_size = target.size() if target is not None and target.opened else 0
        target_origin = target.origin if target is not None and target.opened else None
    finally:
        if target is not None:
            target.close()
    with path.open("rb") as handle:  # not a bundle, or another ledger's: say so before reading it all
        origin = bundle_format.open_bundle(handle, name=str(path)).origin
    if target_origin is not None and origin != target_origin:
        raise Refused(f"{path} is a bundle of ledger {origin!r}; {redact(url)} holds {target_origin!r}; "
                      "nothing imported")
    options = verification.Options(now=clock, as_of=clock, progress=progress,
                                   trusted=list(trusted) if trusted else None)
    reader = _HashingReader(path)
    report = verification.verify_bundle(path, options, stream=cast(BinaryIO, reader))
    if not report.intact:
        first = report.failures[0]
        raise BundleRejected(first.check, first.detail, first.index, len(report.failures), str(path))
    warnings = report.warnings if target_size == 0 else tuple(
        w for w in report.warnings if not w.startswith("no --trust"))
    return ImportPlan(url=url, path=path, origin=origin, statements=report.log_size,
                      digest=reader.digest.digest(),
                      target_size=target_size, create=_is_new_sqlite(url), findings=report.violations,
                      warnings=warnings)


class _ImportBatch(Batch):
    """A `Batch` that also writes stored checkpoints in its one transaction.

    Into an empty store every row the fold reads is one this batch folded itself, so it skips the
    per-statement view queries a writer needs (measured: 30 % of a 20,000-statement import).
    """

    def __init__(self, store: Store, clock: Callable[[], int]) -> None:
        super().__init__(store, clock)
        self._fresh = self.size == 0

    def _ensure(self, statement: Statement) -> None:
        if not self._fresh:
            super()._ensure(statement)

    def _ensure_serials(self, serials: Sequence[str]) -> None:
        if not self._fresh:
            super()._ensure_serials(serials)

    def commit_all(self, extra: Sequence[StoredEvent], limit: int | None = None) -> None:
        """Write the queued statements with `extra` events (stored checkpoints) after them, and the views.

        In one transaction up to `limit` events; beyond it, in transactions of whole statements (a
        statement's log event and its unit links are never split) of at most `limit` events where a
        statement allows, the checkpoints in the last. A failure then leaves a prefix of the log.
        """
        if not self.statements:
            if extra:
                self.store.write(extra)
            return
        chunks = _chunks([*self._events, *extra], limit or MAX_EVENTS_PER_TRANSACTION)
        for chunk in chunks[:-1]:
            self.store.write(chunk)
        self._events = chunks[-1]
        self.commit()  # the last chunk with the views, in one transaction, as for every writer


def _chunks(events: Sequence[StoredEvent], limit: int) -> list[list[StoredEvent]]:
    """`events` cut before log events only, each part at most `limit` long unless one statement is longer."""
    chunks: list[list[StoredEvent]] = [[]]
    group: list[StoredEvent] = []
    for event in [*events, None]:
        if event is None or event.topic in LOG_TOPICS:  # a statement starts: place the finished group
            if chunks[-1] and len(chunks[-1]) + len(group) > limit:
                chunks.append([])
            chunks[-1].extend(group)
            group = []
        if event is not None:
            group.append(event)
    return chunks


def _stored_notes(store: Store, notes_in_bundle: Sequence[str], origin: str) -> list[StoredEvent]:
    """Stored events for the bundle's checkpoints that the store lacks, versions after its own."""
    present = store.checkpoints()
    have = {note for _, _, note in present}
    version = max((v for v, _, _ in present), default=0)
    now = datetime.now(UTC)
    events = []
    for text in notes_in_bundle:
        if text in have:
            continue
        have.add(text)
        version += 1
        size = notes.parse_note(text).checkpoint.size
        events.append(stored_checkpoint(origin, version, size, text, now))
    return events


def _remove_sqlite(url: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(url + suffix).unlink()


def run_import(plan: ImportPlan, *, clock: Callable[[], int] = now_us,
               progress: Progress = _no_progress) -> Imported:
    """Append the verified bundle of `plan` to its store, in one transaction, and build the views.

    Into a store that already holds statements, only a bundle that starts with exactly those statements
    is accepted (`Refused` for a fork or a shorter bundle); a bundle equal to the log stores just the
    checkpoints the store lacks. Raises `Refused` if the file changed since it verified, or another
    writer appended meanwhile (`Conflict`); nothing is written then.
    """
    created = plan.create and _is_new_sqlite(plan.url)
    # a new SQLite file only now that the bundle verified; on PostgreSQL, the tables if the schema lacks them
    store = Store(plan.url, create=created or is_postgres(plan.url))
    try:
        result = _append(store, plan, created, clock, progress)
    except BaseException:
        store.close()
        if created:
            _remove_sqlite(plan.url)
        raise
    store.close()
    return result


def _unchanged(items: Iterator[_T], path: Path) -> Iterator[_T]:
    """The bundle's objects on the second reading; a defect now means the file changed since it verified."""
    try:
        yield from items
    except IntegrityError as e:
        raise Refused(f"{path} changed while it was being imported ({e}); nothing imported") from e


def _append(store: Store, plan: ImportPlan, created: bool, clock: Callable[[], int],
            progress: Progress) -> Imported:
    if store.opened and store.origin != plan.origin:
        raise Refused(f"{redact(plan.url)} now holds ledger {store.origin!r}, not {plan.origin!r}; "
                      "nothing imported")
    batch = _ImportBatch(store, clock)
    present = batch.size
    if present > plan.statements:
        raise Refused(f"{plan.path} ({plan.statements} statements) is shorter than the ledger in "
                      f"{redact(plan.url)} ({present}): nothing to import")
    reader_file = _HashingReader(plan.path)
    with reader_file:
        reader = bundle_format.open_bundle(cast(BinaryIO, reader_file), name=str(plan.path))
        held = store.log(0, present) if present else iter(())
        done = 0
        for index, wire in _unchanged(reader.statements(), plan.path):
            if index < present:
                mine = next(held, None)
                if mine is None or mine.wire != wire:
                    raise Refused(f"{plan.path} forks from the ledger in {redact(plan.url)} at index {index} "
                                  "(a different statement there); nothing imported")
                continue
            batch.add(driver.decode_at(wire, index))
            done += 1
            if done % PROGRESS_STEP == 0:
                progress(PROGRESS_STEP)
        bundled = list(_unchanged(reader.checkpoints(), plan.path))
        for _ in iter(lambda: reader_file.read(1 << 16), b""):
            pass  # the reader stops at the end of the stream already; this only makes the digest total
    progress(done % PROGRESS_STEP)
    if reader_file.digest.digest() != plan.digest or reader.statement_count != plan.statements:
        raise Refused(f"{plan.path} changed while it was being imported; nothing imported")
    events = _stored_notes(store, bundled, plan.origin)
    try:
        batch.commit_all(events)
    except (Conflict, StoreError) as e:
        raise _after_failure(e, store, plan, present, created) from e
    return Imported(url=plan.url, origin=plan.origin, appended=done, present=present,
                    checkpoints=len(events), log_size=present + done, created=created)


def _after_failure(error: Conflict | StoreError, store: Store, plan: ImportPlan, present: int,
                   created: bool) -> LedgerError:
    """The write failed: say what the store holds now (nothing new, or a verified prefix to resume from)."""
    try:
        now_holds = store.size()
    except LedgerError:
        now_holds = None
    if created or now_holds == present:
        outcome = "nothing imported"
    elif now_holds is None:
        outcome = "run `custody verify`, then the import again, to see and finish what was imported"
    else:
        outcome = (f"statements {present}…{now_holds - 1} of the bundle were imported before the failure, "
                   "a verified prefix: run the import again to add the rest")
    why = "another writer appended during the import" if isinstance(error, Conflict) else error.detail
    return type(error)(f"{why}; {outcome}")


def import_bundle(url: str, path: Path, *, clock: Callable[[], int] = now_us) -> Imported:
    """`prepare_import` then `run_import`: verify the whole bundle, then append it."""
    return run_import(prepare_import(url, path, now=clock()), clock=clock)


# --- EPCIS --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpcisExported:
    path: Path
    statements: int
    events: int


def export_epcis(store: Store, path: Path, *, upto: int | None = None, now: int | None = None,
                 progress: Progress = _no_progress) -> EpcisExported:
    """Write the EPCIS 2.0 document of the log prefix 0…`upto` to `path`: one event per custody step.

    Participants come from the fold's state (a key's owner never changes, so the whole log's state
    names the signers of any prefix); `now` is the document's `creationDate`.
    """
    count = _prefix_size(store, upto)
    _refuse_overwriting_store(store, path)
    clock = now if now is not None else now_us()
    state = views.current(store, clock)

    def entries() -> Iterator[tuple[int, Statement]]:
        for index, wire in _wires(store, count, progress):
            yield index, driver.decode_at(wire, index)

    with files.replacing(path) as raw:
        out = io.TextIOWrapper(raw, encoding="ascii", newline="\n")
        events = epcis.write_epcis(out, entries(), state.participant_of, epcis.format_time(clock))
        out.flush()
        out.detach()  # `files.replacing` syncs and closes the file itself
    return EpcisExported(path, count, events)
