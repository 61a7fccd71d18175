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
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing import persistence as es
from eventsourcing.persistence import StoredEvent

from ledger.errors import (
    BadInput,
    Conflict,
    EncodingInvalid,
    IntegrityError,
    LedgerError,
    LogIndexInvalid,
    StoreError,
    UnitLinksInvalid,
)
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
# The log is found by its genesis: the one row with the genesis topic. A partial index keeps that lookup to
# the genesis rows however large the store; both databases use it for exactly this predicate (a literal).
GENESIS_INDEX = "custody_log_genesis"
GENESIS_WHERE = f"topic = '{codec.LOG_OPENED}'"
GENESIS_ROWS = 3  # genesis rows read at open: one is the ledger's, any other a second log
# The log's statements without units (what decides authority) are found by a partial index on the bytes
# they all hold (`codec.WITHOUT_UNITS`), which each backend spells as a literal (`Store.without_units`).
WITHOUT_UNITS_INDEX = "custody_log_without_units"
IN_CHUNK = 500  # keys per `IN ({p}, …)` read of stored events: SQLite caps the number of parameters
_LOG_TOPIC = "topic = CASE WHEN originator_version = 1 THEN {p} ELSE {p} END"  # the log topic for the version
VIEW_INDEXES = ("CREATE INDEX IF NOT EXISTS custody_findings_idx ON custody_findings (idx)",
                "CREATE INDEX IF NOT EXISTS custody_signed_key ON custody_signed (key_id)")


# called in a write's transaction once its events are in, with a views cursor (`ViewsCursorBase`) in that
# transaction: the events it returns go in the same transaction (`Store.write`)
Then = Callable[[Any], Sequence[StoredEvent]]


class ViewsCursorBase:
    """The views transaction's cursor over a DB-API cursor (rows as tuples); each backend adds `upsert`."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(statement, tuple(params))

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(statement, [tuple(r) for r in rows])


def without_units_index(table: str, where: str) -> str:
    """The DDL of the partial index that finds the stored log events of statements without units
    (`Store.log_states_without_units`); `where` is the backend's `without_units`, a literal, so that the
    planner can tell the reads' condition implies it."""
    return (f"CREATE INDEX IF NOT EXISTS {WITHOUT_UNITS_INDEX} ON {table} (originator_id, originator_version) "
            f"WHERE {where}")


def genesis_index(table: str) -> str:
    """The DDL of the partial index that finds the genesis (`Store._find_log`); `table` as SQL."""
    return f"CREATE INDEX IF NOT EXISTS {GENESIS_INDEX} ON {table} (originator_id) WHERE {GENESIS_WHERE}"


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
    without_units = ""  # SQL: a row's state holds `codec.WITHOUT_UNITS` (a literal: see `without_units_index`)
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
        self.defects: list[IntegrityError] = []  # found at open: readers and writers refuse such a store
        self._auditing = False
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

    def _id_column(self) -> str:
        """SQL for a stored aggregate id as 32 lowercase hex digits."""
        return "originator_id"

    def _create_views_needed(self) -> bool:
        return True

    def query_in(self, statement: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of a read on the views tables whose `column` is one of `values`; `statement` holds `{where}`
        where the condition goes."""
        raise NotImplementedError

    # --- opening -----------------------------------------------------------------------------------

    def _find_log(self) -> None:
        """Find the log by its genesis, which an INSERT can neither forge nor shadow.

        The log is the aggregate of the one row whose topic is the genesis topic (`codec.LOG_OPENED`),
        and that row must be version 1 of the aggregate that its own origin names (`codec.log_id`). An
        INSERT cannot replace that row (the primary key holds its place) and a row ids (notification ids)
        order cannot hide it (it is not read by position); a second genesis, wherever it is stored,
        makes the store one with two logs, which readers and writers refuse and `verify` reports. A
        store without a genesis row is found by any log event, so that `verify` can say what is wrong.
        """
        rows = self._raw_events(f"SELECT {self.event_id}, {self._id_column()}, originator_version, state "
                                f"FROM {{table}} WHERE {GENESIS_WHERE} ORDER BY {self.event_id} "
                                f"LIMIT {GENESIS_ROWS}", [])
        if not rows:
            self._find_any_log_event()
            return
        named = [(row, codec.origin_of(codec.decoded(row[3]).get("wire", b""))) for row in rows]
        chosen = next(((r, o) for r, o in named if o is not None and r[2] == 1 and r[1] == codec.log_id(o).hex),
                      named[0])
        (position, hex_id, version, _), origin = chosen
        self._log_id, self.origin = UUID(hex_id), origin
        if version != 1 or origin is None or hex_id != codec.log_id(origin).hex:
            self.defects.append(LogIndexInvalid(
                f"stored row {position}: the log's genesis is not version 1 of the log its origin names", 0))
        for (other, other_id, _, _), _ in named:
            if other != position:
                self.defects.append(LogIndexInvalid(
                    f"stored row {other}: the genesis of a second log (aggregate {other_id}); a ledger has "
                    "one log", None))

    def _find_any_log_event(self) -> None:
        try:
            first = self.recorder.select_notifications(None, 1, topics=list(codec.LOG_TOPICS))
        except es.PersistenceError as e:
            raise self._error("read", e) from e
        if first:
            self._log_id = first[0].originator_id
            self.origin = codec.origin_of(codec.decoded(first[0].state).get("wire", b""))

    def audit(self) -> list[IntegrityError]:
        """For `verify`: reads no longer refuse a store with defects (verify reports them); returns them."""
        self._auditing = True
        return list(self.defects)

    def _require_one_log(self) -> None:
        """Readers and writers refuse a store that is not one ledger (`defects`); `verify` reports it."""
        if self.defects and not self._auditing:
            raise self.defects[0]

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

    def write(self, events: Sequence[StoredEvent], *, then: Then | None = None) -> None:
        """Insert stored events in one transaction: all of them or, on any error, none.

        `then`, if given, is called inside that transaction once `events` are in (so under the writers'
        lock, which the first insert takes) with a views cursor in it (`transaction`'s), and the events it
        returns go in the same transaction: the writer saves the view rows there, and the service signs
        the checkpoint of a group it appends (`tree_head.seal`). What it raises rolls everything back.
        """
        if self.readonly:
            raise StoreError("this store is open read-only")
        self._require_one_log()
        try:
            self.recorder.insert_events(events, then=then)
        except es.IntegrityError as e:
            raise self._squatted(events) or Conflict("another writer appended first") from e
        except es.PersistenceError as e:
            raise self._error("write to", e) from e
        if self._log_id is None:
            log_events = [e for e in events if e.topic == codec.LOG_OPENED]
            if log_events:
                originator = log_events[0].originator_id
                self._log_id = originator if isinstance(originator, UUID) else UUID(originator)
                self.origin = codec.origin_of(codec.decode_state(log_events[0].state)["wire"])

    def _squatted(self, events: Sequence[StoredEvent]) -> IntegrityError | None:
        """After a clash: the row that holds a place these events needed without being part of the ledger,
        as an integrity failure, or None for a lost race (another writer appended those places first).

        Writers store a statement and its links in one transaction, so a rival's append fills the log's
        next place; when that place is free, a row at a unit's next version was put there by someone who
        wrote no statement (an insider with INSERT), and retrying would clash for ever."""
        for event in events:
            if event.topic not in codec.LOG_TOPICS:
                continue
            rows = self._select(event.originator_id, gt=event.originator_version - 1, limit=1)
            if rows and rows[0].originator_version == event.originator_version:
                if rows[0].topic != event.topic:
                    return LogIndexInvalid(f"the log's next place (version {event.originator_version}) holds a "
                                           f"row that is not a log event (topic {rows[0].topic!r:.80}): run "
                                           "`custody verify`", event.originator_version - 1)
                return None  # a rival's statement: a lost race
        for event in events:
            if event.topic not in codec.UNIT_TOPICS:
                continue
            rows = self._select(event.originator_id, gt=event.originator_version - 1, limit=1)
            if rows and rows[0].originator_version == event.originator_version:
                serial = codec.decoded(event.state).get("serial")
                return UnitLinksInvalid(f"unit {serial}: a stored row holds version {event.originator_version} "
                                        "of its chain, which no statement of the log made: run `custody verify`")
        return None

    def _select(self, originator: UUID | str, **kwargs: Any) -> Sequence[StoredEvent]:
        try:
            return self.recorder.select_events(originator, **kwargs)  # type: ignore[no-any-return]
        except es.PersistenceError as e:
            raise self._error("read", e) from e

    def head(self) -> LogEvent | None:
        """The newest log event (the tree head rides on it), or None for an empty log."""
        if self._log_id is None:
            return None
        rows = self._raw_events("SELECT originator_version, state FROM {table} WHERE originator_id = {p} AND "
                                f"{_LOG_TOPIC} ORDER BY originator_version DESC LIMIT 1",
                                [self._log_key(self._log_id), *codec.LOG_TOPICS])
        return _log_event(rows[0][0], rows[0][1]) if rows else None

    def size(self) -> int:
        head = self.head()
        return head.index + 1 if head else 0

    def log(self, start: int = 0, stop: int | None = None, chunk: int = 2000) -> Iterator[LogEvent]:
        """Stored log events with index in [start, stop), in version order, read in chunks: the rows under
        the log's id with the log's topics (any other row there is reported by `ledger.accounting`)."""
        self._require_one_log()
        if self._log_id is None:
            return
        version = start  # versions are index + 1; `gt` is exclusive
        while stop is None or version < stop:
            limit = chunk if stop is None else min(chunk, stop - version)
            rows = self._select(self._log_id, gt=version, limit=limit)
            for row in rows:
                if row.topic == codec.LOG_TOPICS[row.originator_version != 1]:
                    yield _log_event(row.originator_version, row.state)
            if len(rows) < limit:
                return
            version = rows[-1].originator_version

    def unit_links(self, serial: str) -> list[dict[str, Any]]:
        """The stored chain links of one unit, oldest first (each: serial, index, hash, at), as stored:
        `links.unit_chain` checks them."""
        return [{**codec.decoded(state), "version": version} for version, _, state in self.unit_rows(serial)]

    def unit_rows(self, serial: str) -> list[tuple[int, str, bytes]]:
        """Every row stored under one unit's id, whatever its topic: (version, topic, state), by version."""
        self._require_one_log()
        if self.origin is None:
            return []
        return [(r.originator_version, r.topic, r.state) for r in self._select(codec.unit_id(self.origin, serial))]

    def units_rows(self, serials: Collection[str], since: int = 1) -> dict[str, list[tuple[int, str, bytes]]]:
        """`unit_rows` of several units at once (IN_CHUNK units a read), those from version `since` on:
        serial -> its rows, by version; a unit with no such row is left out."""
        self._require_one_log()
        if self.origin is None or not serials:
            return {}
        serial_of = {codec.unit_hex(self.origin, serial): serial for serial in serials}
        ids = list(serial_of)
        found: dict[str, list[tuple[int, str, bytes]]] = {}
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start:start + IN_CHUNK]
            rows = self._raw_events(f"SELECT {self._id_column()}, originator_version, topic, state FROM {{table}} "
                                    f"WHERE originator_id IN ({', '.join(['{p}'] * len(chunk))}) "
                                    "AND originator_version >= {p} ORDER BY originator_id, originator_version",
                                    [*(self._hex_key(hex_id) for hex_id in chunk), since])
            for hex_id, version, topic, state in rows:
                found.setdefault(serial_of[hex_id], []).append((version, topic, bytes(state)))
        return found

    def log_wires(self, indices: Collection[int]) -> dict[int, bytes]:
        """The wire forms of the log statements at `indices`, by index, in a few reads however scattered
        (IN_CHUNK a read); an index the log does not hold is left out."""
        self._require_one_log()
        versions = sorted({index + 1 for index in indices if index >= 0})
        if self._log_id is None or not versions:
            return {}
        log = self._log_key(self._log_id)
        found: dict[int, bytes] = {}
        for start in range(0, len(versions), IN_CHUNK):
            chunk = versions[start:start + IN_CHUNK]
            rows = self._raw_events("SELECT originator_version, topic, state FROM {table} WHERE originator_id = {p} "
                                    f"AND originator_version IN ({', '.join(['{p}'] * len(chunk))})",
                                    [log, *chunk])
            for version, topic, state in rows:
                if topic == codec.LOG_TOPICS[version != 1]:  # any other row there: `verify` reports it
                    found[version - 1] = _log_event(version, bytes(state)).wire
        return found

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
            if row.topic != codec.CHECKPOINT_TOPICS[row.originator_version != 1]:
                continue  # not a checkpoint: `verify` reports the row (`ledger.accounting`)
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
        """An aggregate's id as the driver binds it."""
        return self._hex_key(log.hex)

    def _hex_key(self, hex_id: str) -> Any:
        """An aggregate's id, given as 32 hex digits, as the driver binds it."""
        return hex_id

    def log_states(self, start: int = 0, chunk: int = 5000) -> Iterator[tuple[int, bytes]]:
        """(version, stored state) of the log events with index ≥ `start`, in version order: the rows under
        the log's id with the log's topics (any other row there is reported by `ledger.accounting`)."""
        return self._log_rows(start, chunk, "")

    def log_states_without_units(self, start: int = 0, chunk: int = 50) -> Iterator[tuple[int, bytes]]:
        """`log_states`, but only the log events whose stored state holds `codec.WITHOUT_UNITS`: every
        statement without units (administrative statements, declarations: what decides authority) and the
        rare step that happens to hold those bytes too. The database finds them through a partial index
        (`without_units_index`) that it keeps on every insert, whoever inserts; the other rows are never
        read (a store opened read-only without the index scans them in the database)."""
        return ((v, bytes(state)) for v, state in self._log_rows(start, chunk, f" AND {self.without_units}"))

    def _log_rows(self, start: int, chunk: int, where: str) -> Iterator[tuple[int, bytes]]:
        """The log's rows with index ≥ `start` (and the literal condition `where`), `chunk` at a time."""
        self._require_one_log()
        if self._log_id is None:
            return
        log = self._log_key(self._log_id)
        version = start
        while True:
            rows = self._raw_events("SELECT originator_version, state FROM {table} WHERE originator_id = {p} "
                                    f"AND originator_version > {{p}} AND {_LOG_TOPIC}{where} "
                                    "ORDER BY originator_version LIMIT {p}",
                                    [log, version, *codec.LOG_TOPICS, chunk])
            yield from rows
            if len(rows) < chunk:
                return
            version = rows[-1][0]

    def event_id_bound(self) -> int:
        """One more than the largest row id of the events table (SQLite's rowid, else notification_id)."""
        rows = self._raw_events(f"SELECT max({self.event_id}) FROM {{table}}", [])
        return int(rows[0][0] or 0) + 1

    def _row_range(self, low: int | None, high: int | None) -> tuple[list[str], list[Any]]:
        """The conditions and parameters that keep row ids in [`low`, `high`) (None: unbounded)."""
        where: list[str] = []
        params: list[Any] = []
        if low is not None:
            where.append(f"{self.event_id} >= {{p}}")
            params.append(low)
        if high is not None:
            where.append(f"{self.event_id} < {{p}}")
            params.append(high)
        return where, params

    def unit_link_rows(self, low: int | None, high: int | None) -> list[tuple[Any, int, bytes]]:
        """Stored unit links with row ids in [`low`, `high`) (None: unbounded), in row id order, as (unit
        id as 32 hex digits or whatever the database holds there, version, state)."""
        where, params = self._row_range(low, high)
        where.insert(0, "topic IN ({p}, {p})")
        params[:0] = codec.UNIT_TOPICS
        return self._raw_events(f"SELECT {self._id_column()}, originator_version, state FROM {{table}} "
                                f"WHERE {' AND '.join(where)} ORDER BY {self.event_id}",
                                params)

    # --- the whole store, for `ledger.accounting` ------------------------------------------------------

    @property
    def log_hex(self) -> str | None:
        return self._log_id.hex if self._log_id is not None else None

    def row_count(self) -> int:
        """How many rows the events table holds."""
        return int(self._raw_events("SELECT count(*) FROM {table}", [])[0][0])

    def row_keys(self, low: int | None, high: int | None) -> list[tuple[int, str, int, str]]:
        """Every stored row with a row id in [`low`, `high`) (None: unbounded), in row id order, as (row
        id, aggregate id as 32 hex digits, version, topic)."""
        where, params = self._row_range(low, high)
        condition = f"WHERE {' AND '.join(where)} " if where else ""
        return self._raw_events(f"SELECT {self.event_id}, {self._id_column()}, originator_version, topic "
                                f"FROM {{table}} {condition}ORDER BY {self.event_id}", params)

    def row_id_bounds(self) -> tuple[int, int]:
        """The smallest and one more than the largest row id (an insider may choose them, negative too)."""
        rows = self._raw_events(f"SELECT min({self.event_id}), max({self.event_id}) FROM {{table}}", [])
        return int(rows[0][0] or 0), int(rows[0][1] or 0) + 1

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

    def views_exist(self) -> bool:
        """Whether the views tables are there (a writer's `Store(url, create=True)` makes them)."""
        return self._views_exist()

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


def _log_event(version: int, stored: bytes) -> LogEvent:
    state = codec.decoded(stored)
    wire, range_ = state.get("wire"), state.get("range")
    if not isinstance(wire, bytes) or not isinstance(range_, list):
        raise EncodingInvalid("a stored log event cannot be decoded", version - 1)
    return LogEvent(version, version - 1, wire, range_)
