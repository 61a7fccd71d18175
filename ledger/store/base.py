"""What every backend shares: reading the log, the unit links and the checkpoints; writing events; views.

`Store(url)` opens the backend the URL names (`ledger.store.sqlite` or `ledger.store.postgres`); each
backend supplies its recorder (a subclass of the `eventsourcing` recorder for that database), its SQL
dialect (`param`, the driver's placeholder) and the translation of its driver's errors. Everything above
sees the interface of `ledger.store.protocol.LedgerStore`: stored events in, stored events out, and a
transaction for view rows. Driver errors arrive as the library's own classes
(`eventsourcing.persistence.IntegrityError`, `OperationalError`, …) and leave as `StoreError` (exit 2:
unreachable, locked too long, connection lost) or `Conflict` (a lost race: retry).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing import persistence as es
from eventsourcing.persistence import StoredEvent

from ledger.errors import BadInput, Conflict, EncodingInvalid, LedgerError, StoreError
from ledger.store import codec
from ledger.store.address import is_postgres, redact

DEFAULT_DB = "custody.db"
LOCK_TIMEOUT_ENV = "CUSTODY_LOCK_TIMEOUT"  # seconds a writer waits for another writer's lock
DEFAULT_LOCK_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 5
EVENTS_TABLE = "stored_events"  # eventsourcing's name for an application without a name
VIEWS: dict[str, tuple[tuple[str, str], ...]] = {  # the views tables: (column, kind); the first is the
    # primary key where the table has one (see `KEYED`); each backend spells the kinds (`Store.types`)
    "custody_position": (("id", "int"), ("position", "int")),
    "custody_authority": (("id", "int"), ("row", "bytes")),
    "custody_units": (("serial", "text"), ("row", "bytes")),
    "custody_customers": (("id", "text"), ("row", "bytes")),
    "custody_duty": (("entry", "text"), ("row", "bytes")),
    "custody_findings": (("idx", "int"), ("serial", "text"), ("code", "text"), ("detail", "text")),
    "custody_signed": (("key_id", "text"), ("idx", "int"), ("at", "int8"), ("serials", "bytes")),
}
KEYED = frozenset({"custody_position", "custody_authority", "custody_units", "custody_customers", "custody_duty"})
VIEW_INDEXES = ("CREATE INDEX IF NOT EXISTS custody_findings_idx ON custody_findings (idx)",
                "CREATE INDEX IF NOT EXISTS custody_signed_key ON custody_signed (key_id)")


@dataclass(frozen=True)
class LogEvent:
    """One stored log event: the statement at `index` as the database holds it."""

    version: int
    index: int
    wire: bytes
    range: list[bytes]


def lock_timeout() -> int:
    """How long a writer waits for another writer's lock: `CUSTODY_LOCK_TIMEOUT` seconds, default 30."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(f"{LOCK_TIMEOUT_ENV} must be a whole number of seconds (at least 1), not {raw!r}")
    return int(raw)


def first_line(e: BaseException) -> str:
    """An error's message on one line, for messages that name what failed."""
    text = " ".join((str(e).strip() or type(e).__name__).splitlines()[0].split())
    return text.removeprefix("connection failed: ")


class Store:
    """An opened ledger database. `Store(url)` is the backend's subclass; `readonly` stores never write."""

    postgres = False  # which backend, for the few callers that care (file paths, messages)
    param = "?"  # the driver's query placeholder: SQL on the views is written with it
    types: ClassVar[dict[str, str]] = {"int": "INTEGER", "int8": "BIGINT", "text": "TEXT", "bytes": "BLOB"}
    event_id = "rowid"  # the events table's row id, in insertion order
    recorder: Any  # the backend's `eventsourcing` application recorder (subclassed)

    def __new__(cls, url: str, *, create: bool = False, readonly: bool = False) -> Store:
        if cls is Store:  # the backend the URL names; psycopg is imported only for PostgreSQL
            if is_postgres(url):
                from ledger.store.postgres import PostgresStore
                return super().__new__(PostgresStore)
            from ledger.store.sqlite import SqliteStore
            return super().__new__(SqliteStore)
        return super().__new__(cls)

    def __init__(self, url: str, *, create: bool = False, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self.lock_timeout = lock_timeout()
        self._log_id: UUID | None = None
        self.origin: str | None = None
        self.schema = "public"
        self._open(create=create)
        if create:
            self._create_views()
        self._find_log()

    # --- what a backend provides -------------------------------------------------------------------

    def _open(self, *, create: bool) -> None:
        """Reach the database, see to its tables (`create`), set `recorder`."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _error(self, doing: str, e: BaseException) -> LedgerError:
        """A persistence error as the library's: a lost race, a lock held too long, a lost server, or else."""
        raise NotImplementedError

    def _rows(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of one read, as plain tuples (raises `eventsourcing.persistence` errors)."""
        raise NotImplementedError

    def _cursor(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction on the views tables (raises `eventsourcing.persistence` errors)."""
        raise NotImplementedError

    def _views_exist(self) -> bool:
        raise NotImplementedError

    def _unit_id_column(self) -> str:
        """SQL for a stored unit id as 32 lowercase hex digits."""
        return "originator_id"

    def _create_views_needed(self) -> bool:
        return True

    def query_in(self, statement: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of a read on the views tables whose `column` is one of `values`; `statement` holds `{where}`
        where the condition goes."""
        raise NotImplementedError

    # --- opening -----------------------------------------------------------------------------------

    def _find_log(self) -> None:
        """Find the log by its creation event; an empty store has none yet."""
        try:
            # any log event will do: a ledger whose genesis row was deleted must still be found (and fail)
            first = self.recorder.select_notifications(None, 1, topics=list(codec.LOG_TOPICS))
        except es.PersistenceError as e:
            raise self._error("read", e) from e
        if first:
            self._log_id = first[0].originator_id
            self.origin = codec.origin_of(codec.decoded(first[0].state).get("wire", b""))

    @property
    def opened(self) -> bool:
        return self._log_id is not None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _locked(self) -> StoreError:
        return StoreError(f"{redact(self.url)} is locked by another writer (waited {self.lock_timeout} s; "
                          f"{LOCK_TIMEOUT_ENV} sets how long); try again")

    # --- events ------------------------------------------------------------------------------------

    def write(self, events: Sequence[StoredEvent]) -> None:
        """Insert stored events in one transaction: all of them or, on any error, none."""
        if self.readonly:
            raise StoreError("this store is open read-only")
        try:
            self.recorder.insert_events(events)
        except es.IntegrityError as e:
            raise Conflict("another writer appended first") from e
        except es.PersistenceError as e:
            raise self._error("write to", e) from e
        if self._log_id is None:
            log_events = [e for e in events if e.topic == codec.LOG_OPENED]
            if log_events:
                originator = log_events[0].originator_id
                self._log_id = originator if isinstance(originator, UUID) else UUID(originator)
                self.origin = codec.origin_of(codec.decode_state(log_events[0].state)["wire"])

    def _select(self, originator: UUID, **kwargs: Any) -> Sequence[StoredEvent]:
        try:
            return self.recorder.select_events(originator, **kwargs)  # type: ignore[no-any-return]
        except es.PersistenceError as e:
            raise self._error("read", e) from e

    def head(self) -> LogEvent | None:
        """The newest log event (the tree head rides on it), or None for an empty log."""
        if self._log_id is None:
            return None
        rows = self._select(self._log_id, desc=True, limit=1)
        return _log_event(rows[0]) if rows else None

    def size(self) -> int:
        head = self.head()
        return head.index + 1 if head else 0

    def log(self, start: int = 0, stop: int | None = None, chunk: int = 2000) -> Iterator[LogEvent]:
        """Stored log events with index in [start, stop), in version order, read in chunks."""
        if self._log_id is None:
            return
        version = start  # versions are index + 1; `gt` is exclusive
        while stop is None or version < stop:
            limit = chunk if stop is None else min(chunk, stop - version)
            rows = self._select(self._log_id, gt=version, limit=limit)
            for row in rows:
                yield _log_event(row)
            if len(rows) < limit:
                return
            version = rows[-1].originator_version

    def unit_links(self, serial: str) -> list[dict[str, Any]]:
        """The stored chain links of one unit, oldest first (each: serial, index, hash, at)."""
        if self.origin is None:
            return []
        rows = self._select(codec.unit_id(self.origin, serial))
        return [{**codec.decoded(r.state), "version": r.originator_version} for r in rows]

    def all_unit_links(self, chunk: int = 5000) -> Iterator[tuple[UUID, int, dict[str, Any]]]:
        """Every stored unit link in insertion order: (unit id, version, state)."""
        start: int | None = None
        while True:
            try:
                rows = self.recorder.select_notifications(start, chunk, topics=list(codec.UNIT_TOPICS),
                                                          inclusive_of_start=False)
            except es.PersistenceError as e:
                raise self._error("read", e) from e
            for row in rows:
                yield row.originator_id, row.originator_version, codec.decoded(row.state)
            if len(rows) < chunk:
                return
            start = rows[-1].id

    def checkpoints(self, after: int = 0) -> list[tuple[int, int, str]]:
        """Stored checkpoints as (version, size, note text), in the order they were signed; those with a
        version above `after` (a follower's last one) only, if given."""
        if self.origin is None:
            return []
        out = []
        for row in self._select(codec.checkpoints_id(self.origin), **({"gt": after} if after else {})):
            state = codec.decoded(row.state)
            size, note = state.get("size"), state.get("note")
            # an undecodable row reads as an empty note, which `verify` reports as a bad checkpoint
            out.append((row.originator_version, size if isinstance(size, int) else -1,
                        note if isinstance(note, str) else ""))
        return out

    # --- raw reads: rows as stored, no event objects (`verify` decodes them in worker processes) ---

    def _raw_events(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._rows(statement.format(table=EVENTS_TABLE, p=self.param), params)
        except es.PersistenceError as e:
            raise self._error("read", e) from e

    def _log_key(self, log: UUID) -> Any:
        """The log's id as the driver binds it."""
        return log.hex

    def log_states(self, start: int = 0, chunk: int = 5000) -> Iterator[tuple[int, bytes]]:
        """(version, stored state) of the log events with index ≥ `start`, in version order."""
        if self._log_id is None:
            return
        log = self._log_key(self._log_id)
        version = start
        while True:
            rows = self._raw_events("SELECT originator_version, state FROM {table} WHERE originator_id = {p} "
                                    "AND originator_version > {p} ORDER BY originator_version LIMIT {p}",
                                    [log, version, chunk])
            yield from rows
            if len(rows) < chunk:
                return
            version = rows[-1][0]

    def event_id_bound(self) -> int:
        """One more than the largest row id of the events table (SQLite's rowid, else notification_id)."""
        rows = self._raw_events(f"SELECT max({self.event_id}) FROM {{table}}", [])
        return int(rows[0][0] or 0) + 1

    def unit_link_rows(self, low: int | None, high: int | None) -> list[tuple[Any, int, bytes]]:
        """Stored unit links with row ids in [`low`, `high`) (None: unbounded), in row id order, as (unit
        id as 32 hex digits or whatever the database holds there, version, state)."""
        where = ["topic IN ({p}, {p})"]
        params: list[Any] = list(codec.UNIT_TOPICS)
        if low is not None:
            where.append(f"{self.event_id} >= {{p}}")
            params.append(low)
        if high is not None:
            where.append(f"{self.event_id} < {{p}}")
            params.append(high)
        return self._raw_events(f"SELECT {self._unit_id_column()}, originator_version, state FROM {{table}} "
                                f"WHERE {' AND '.join(where)} ORDER BY {self.event_id}",
                                params)

    # --- views: plain tables beside the events -----------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction on the views tables; yields a cursor with `execute(sql, params)`,
        `executemany`, `upsert`, `insert`, `fetchall` and `rowcount` (SQL written with `param`).

        A unique-key clash (another writer inserted the row first) raises `Conflict`; nothing is written.
        """
        if self.readonly:
            raise StoreError("this store is open read-only")
        try:
            with self._cursor() as cursor:
                yield cursor
        except es.IntegrityError as e:
            raise Conflict("another writer wrote the views first") from e
        except es.PersistenceError as e:
            raise self._error("write views to", e) from e

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on the views tables (SQL written with `param`); absent tables read as no rows."""
        if not self._views_exist():
            return []
        try:
            return self._rows(statement, params)
        except es.PersistenceError as e:
            raise self._error("read views from", e) from e

    def _create_views(self) -> None:
        if not self._create_views_needed():
            return  # an existing ledger: a role without CREATE may open it with create=True (import)
        with self.transaction() as cursor:
            for table, columns in VIEWS.items():
                spelled = [f"{name} {self.types[kind]}" for name, kind in columns]
                if table in KEYED:
                    spelled[0] += " PRIMARY KEY"
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(spelled)})")
            for statement in VIEW_INDEXES:
                cursor.execute(statement)

    def clear_views(self, cursor: Any) -> None:
        for table in VIEWS:
            cursor.execute(f"DELETE FROM {table}")


def _log_event(row: StoredEvent) -> LogEvent:
    state = codec.decoded(row.state)
    wire, range_ = state.get("wire"), state.get("range")
    if not isinstance(wire, bytes) or not isinstance(range_, list):
        raise EncodingInvalid("a stored log event cannot be decoded", row.originator_version - 1)
    return LogEvent(row.originator_version, row.originator_version - 1, wire, range_)
