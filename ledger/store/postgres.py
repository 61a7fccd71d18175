"""The PostgreSQL backend: `postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]`, for several parties.

Built on `eventsourcing`'s PostgreSQL recorder, subclassed. The server is reached once directly before the
pool opens, so a bad address, role or database fails at once with libpq's own reason; a missing password
is left to libpq (`PGPASSWORD`, `PGPASSFILE`, `~/.pgpass`). Writers serialise on a transaction-scoped
advisory lock instead of eventsourcing's `LOCK TABLE … IN EXCLUSIVE MODE`, so run-time roles need only
SELECT and INSERT on the events table; every connection's search_path is the ledger's schema, where the
views live beside the events. A dropped connection is retried on a fresh one, a few times, unless the
server is gone (then at once, with libpq's reason) or a lock timed out.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar
from uuid import UUID

import psycopg
from eventsourcing import persistence as es
from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import ConnectionPool, PostgresApplicationRecorder, PostgresDatastore
from psycopg import sql
from psycopg.rows import DictRow, dict_row, tuple_row

from ledger.errors import LedgerError, NotALedger, StoreError
from ledger.store import codec
from ledger.store.address import PostgresTarget, parse_postgres_url, redact
from ledger.store.base import (
    CONNECT_TIMEOUT_S,
    EVENTS_TABLE,
    VIEWS,
    WITHOUT_UNITS_INDEX,
    Store,
    Then,
    ViewsCursorBase,
    first_line,
    genesis_index,
    without_units_index,
)

ATTEMPTS = 3  # tries of a read or an insert on a dropped connection (eventsourcing's own: 10, 0.2 s apart)
COPY_TYPES = {"int": "int4", "int8": "int8", "text": "text", "bytes": "bytea"}  # the kinds in `VIEWS`
_T = TypeVar("_T")
# a row's state holds `codec.WITHOUT_UNITS` (a bytea literal in hex)
WITHOUT_UNITS = f"position('\\x{codec.WITHOUT_UNITS.hex()}'::bytea in state) > 0"


def advisory_key(schema: str, table: str) -> int:
    """The writers' advisory lock of one ledger (its schema and events table)."""
    digest = hashlib.sha256(f"custody-ledger/append\n{schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ConnectionLost(es.OperationalError):
    """The server went away mid-command and does not answer a fresh connection either."""


class LedgerDatastore(PostgresDatastore):
    """eventsourcing's datastore, connecting with exactly the parameters the URL gives.

    eventsourcing passes every parameter, an empty password too, which stops libpq from reading
    PGPASSWORD: the pool is made again (nothing opened yet) from the URL's own parameters, with the
    ledger's schema on every connection's search_path.
    """

    def __init__(self, target: PostgresTarget, lock_timeout: int) -> None:
        super().__init__(dbname=target.dbname, host=target.host, port=target.port or "",
                         user=target.user or "", password=target.password or "",
                         connect_timeout=CONNECT_TIMEOUT_S, pool_size=1, max_overflow=1,
                         lock_timeout=lock_timeout, schema=target.schema)
        self.connect_kwargs = target.connect_kwargs()
        self.pool = ConnectionPool(connection_class=psycopg.Connection[DictRow],
                                   kwargs={**self.connect_kwargs, "row_factory": dict_row},
                                   min_size=1, max_size=2, open=False, configure=self.after_connect_func(),
                                   timeout=CONNECT_TIMEOUT_S)


class LedgerRecorder(PostgresApplicationRecorder):
    """eventsourcing's PostgreSQL application recorder: inserts by binary `COPY` under an advisory lock,
    reads that fail fast when the server is gone, and reads that return rows as plain tuples."""

    datastore: LedgerDatastore
    lost: str | None = None  # libpq's reason, once the server was found gone

    def __init__(self, datastore: LedgerDatastore, *, events_table_name: str = EVENTS_TABLE) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        table = sql.SQL("{}.{}").format(sql.Identifier(datastore.schema), sql.Identifier(events_table_name))
        self.sql_create_statements.append(sql.SQL(genesis_index("{}")).format(table))
        self.sql_create_statements.append(sql.SQL(without_units_index("{}", WITHOUT_UNITS)).format(table))

    # --- attempts --------------------------------------------------------------------------------

    def attempt(self, call: Callable[[], _T]) -> _T:
        """Run `call`, again on a fresh connection if the pooled one was dropped, unless the server is gone
        or a lock timed out."""
        self.reachable()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return call()
            except (es.OperationalError, es.InterfaceError) as e:
                if isinstance(e, ConnectionLost) or isinstance(e.__cause__, psycopg.errors.LockNotAvailable) \
                        or attempt == ATTEMPTS:
                    raise
                self.lost = self.probe()
                if self.lost is not None:
                    raise ConnectionLost(self.lost) from e
                time.sleep(0.1 * attempt)
        raise AssertionError("unreachable")

    def reachable(self) -> None:
        """Once the server was found gone, ask it directly before each use: the pool would wait for a
        connection for its whole timeout before saying anything."""
        if self.lost is not None:
            self.lost = self.probe()
            if self.lost is not None:
                raise ConnectionLost(self.lost)

    def probe(self) -> str | None:
        """None if a fresh connection succeeds, else libpq's reason."""
        kwargs = dict(self.datastore.connect_kwargs)
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        try:
            psycopg.connect(**kwargs).close()
        except psycopg.Error as e:
            return first_line(e)
        return None

    # --- writing ---------------------------------------------------------------------------------

    def insert_events(self, stored_events: Sequence[StoredEvent], *, then: Then | None = None,
                      **kwargs: Any) -> Sequence[int] | None:
        """Take the writers' lock, then stream the events in with one binary `COPY`, in one transaction.

        eventsourcing sends one array of composite values, which psycopg spells out in text (every state
        escaped, in Python) and the server parses back: three times slower. Its pipeline mode is not used
        either: there a batch of a few megabytes deadlocks (the server waits for the rest of the message,
        the client for a result). Nobody reads the notification ids back.
        """
        if stored_events:
            self.attempt(lambda: self._copy_events(stored_events, then))
        return None

    def _copy_events(self, stored_events: Sequence[StoredEvent], then: Then | None = None) -> None:
        copy_sql = sql.SQL("COPY {}.{} (originator_id, originator_version, topic, state) FROM STDIN "
                           "(FORMAT BINARY)").format(sql.Identifier(self.datastore.schema),
                                                     sql.Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            self.take_writer_lock(curs)
            batches = [stored_events]
            while batches:  # the events, then (under the lock taken) those `then` returns
                with curs.copy(copy_sql) as copy:
                    copy.set_types([self.datastore.originator_id_type, "int8", "text", "bytea"])
                    for e in batches.pop():
                        copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))
                if then is not None:
                    with conn.cursor(row_factory=tuple_row) as views:
                        more, then = then(_Cursor(views)), None
                    if more:
                        batches.append(more)

    def take_writer_lock(self, curs: Any) -> None:
        """Writers serialise on a transaction-scoped advisory lock: the commit order is the insert order
        (what eventsourcing's table lock is for) without LOCK TABLE's UPDATE privilege. One round trip
        sets the lock timeout, takes the lock and queues eventsourcing's notification."""
        curs.execute("SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s), pg_notify(%s, '')",
                     (f"{self.datastore.lock_timeout}s", advisory_key(self.datastore.schema, self.events_table_name),
                      self.channel_name))

    # --- reading ---------------------------------------------------------------------------------

    def _table(self) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(self.datastore.schema), sql.Identifier(self.events_table_name))

    def select_events(self, originator_id: UUID | str, *, gt: int | None = None, lte: int | None = None,
                      desc: bool = False, limit: int | None = None) -> Sequence[StoredEvent]:
        statement = sql.SQL("SELECT originator_id, originator_version, topic, state FROM {} "
                            "WHERE originator_id = %s").format(self._table())
        params: list[Any] = [originator_id]
        if gt is not None:
            statement += sql.SQL(" AND originator_version > %s")
            params.append(gt)
        if lte is not None:
            statement += sql.SQL(" AND originator_version <= %s")
            params.append(lte)
        statement += sql.SQL(" ORDER BY originator_version DESC" if desc else " ORDER BY originator_version")
        if limit is not None:
            statement += sql.SQL(" LIMIT %s")
            params.append(limit)
        rows = self.attempt(lambda: self._fetch(statement, params))
        return [StoredEvent(originator_id=r[0], originator_version=r[1], topic=r[2], state=bytes(r[3]))
                for r in rows]

    def select_notifications(self, start: int | None, limit: int, stop: int | None = None,
                             topics: Sequence[str] = (), *, inclusive_of_start: bool = True
                             ) -> Sequence[Notification]:
        conditions: list[sql.Composable] = []
        params: list[Any] = []
        if start is not None:
            conditions.append(sql.SQL("notification_id >= %s" if inclusive_of_start else "notification_id > %s"))
            params.append(start)
        if stop is not None:
            conditions.append(sql.SQL("notification_id <= %s"))
            params.append(stop)
        if topics:
            conditions.append(sql.SQL("topic = ANY(%s)"))
            params.append(list(topics))
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        statement = sql.SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {}{} "
                            "ORDER BY notification_id LIMIT %s").format(self._table(), where)
        params.append(limit)
        rows = self.attempt(lambda: self._fetch(statement, params))
        return [Notification(id=r[0], originator_id=r[1], originator_version=r[2], topic=r[3], state=bytes(r[4]))
                for r in rows]

    def max_notification_id(self) -> int | None:
        rows = self.attempt(lambda: self._fetch(sql.SQL("SELECT max(notification_id) FROM {}").format(self._table()),
                                                []))
        return rows[0][0] if rows else None

    def select_rows(self, statement: str | sql.Composable, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of one read, as tuples (autocommit: one round trip)."""
        return self.attempt(lambda: self._fetch(statement, params))

    def _fetch(self, statement: Any, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(statement, tuple(params))
            return curs.fetchall()


class _Cursor(ViewsCursorBase):
    """The views transaction's cursor: psycopg's, rows as tuples."""

    _cursor: psycopg.Cursor[tuple[Any, ...]]

    def upsert(self, table: str, key: str, rows: Sequence[tuple[Any, bytes]]) -> None:
        """Insert or replace (`key`, row) pairs of a views table keyed by `key`: one statement whatever the
        number of rows (two arrays, sent in binary)."""
        if not rows:
            return
        keys, values = zip(*rows, strict=True)
        key_type = COPY_TYPES[dict(VIEWS[table])[key]]
        self._cursor.execute(f"INSERT INTO {table} ({key}, row) "
                             f"SELECT * FROM unnest(%b::{key_type}[], %b::bytea[]) "
                             f"ON CONFLICT ({key}) DO UPDATE SET row = excluded.row", (list(keys), list(values)))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a views table in one binary `COPY`."""
        if not rows:
            return
        kinds = dict(VIEWS[table])
        with self._cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([COPY_TYPES[kinds[c]] for c in columns])
            for row in rows:
                copy.write_row(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class PostgresStore(Store):
    """A ledger in a PostgreSQL schema."""

    postgres = True
    param = "%s"
    without_units = WITHOUT_UNITS
    event_id = "notification_id"
    types: ClassVar[dict[str, str]] = {"int": "INTEGER", "int8": "BIGINT", "text": "TEXT", "bytes": "BYTEA"}
    recorder: LedgerRecorder

    def _open(self, *, create: bool) -> None:
        target = parse_postgres_url(self.url)
        self.schema = target.schema
        self._tables_missing, self._has_views, indexed = _first_contact(target, self.url, create=create)
        self._datastore = LedgerDatastore(target, self.lock_timeout)
        try:
            self.recorder = LedgerRecorder(self._datastore, events_table_name=EVENTS_TABLE)
            if self._tables_missing:
                self.recorder.create_table()
            elif not indexed and not self.readonly:
                self._add_without_units_index()
        except es.PersistenceError as e:
            self.close()
            raise self._error("open", e) from e

    def _add_without_units_index(self) -> None:
        """A ledger made before `without_units_index`: add it if this role may (the table's owner) and no
        writer holds the table now; else read without it (the database then scans the log's rows for
        what the index would find), and the next writer tries again."""
        statement = sql.SQL(without_units_index("{}", WITHOUT_UNITS)).format(self.recorder._table())
        with self._datastore.get_connection() as conn, contextlib.suppress(
                psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable), conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '200ms'")  # never keep a writer waiting for this
            conn.execute(statement)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._datastore.close()

    def _error(self, doing: str, e: BaseException) -> LedgerError:
        where = redact(self.url)
        if isinstance(e.__cause__, psycopg.errors.LockNotAvailable):
            return self._locked()
        if isinstance(e, ConnectionLost):
            return StoreError(f"lost the connection to {where}: {e}")
        if isinstance(e, es.OperationalError | es.InterfaceError):
            return StoreError(f"lost the connection to {where}: {first_line(e)}")
        return StoreError(f"cannot {doing} {where}: {first_line(e)}")

    def _hex_key(self, hex_id: str) -> Any:
        return UUID(hex_id)

    def _id_column(self) -> str:
        return "replace(originator_id::text, '-', '')"

    def _rows(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.recorder.select_rows(statement, params)

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[_Cursor]:
        self.recorder.reachable()
        with self._datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=tuple_row) as cursor:
            yield _Cursor(cursor)
        self._has_views = True

    def _views_exist(self) -> bool:
        return self._has_views

    def _create_views_needed(self) -> bool:
        return self._tables_missing

    def query_in(self, statement: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One query whatever the number of values: an array parameter, sent in binary."""
        if not values:
            return []
        return self.query(statement.format(where=f"{column} = ANY(%b)"), [list(values)])


def _first_contact(target: PostgresTarget, url: str, *, create: bool) -> tuple[bool, bool, bool]:
    """Reach the server once, directly (a precise reason when it fails, at once); see to the schema.

    Returns whether the tables must be created (only by `create`, and only where they are missing, so a
    role without CREATE can open, and import into, an existing ledger), whether the views exist and
    whether the events table has `without_units_index`.
    """
    kwargs = target.connect_kwargs()
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        conn = psycopg.connect(**kwargs, autocommit=True)
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to {redact(url)}: {first_line(e)}") from e
    try:
        with conn:
            found = conn.execute("SELECT to_regnamespace(%s), to_regclass(%s), to_regclass(%s), to_regclass(%s)",
                                 (f'"{target.schema}"', f'"{target.schema}"."{EVENTS_TABLE}"',
                                  f'"{target.schema}".custody_position',
                                  f'"{target.schema}".{WITHOUT_UNITS_INDEX}')).fetchone()
            assert found is not None
            schema, events, views, indexed = found
            if schema is None:
                if not create:
                    raise NotALedger(f"{redact(url)} is not a custody ledger (no schema {target.schema})")
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema)))
            elif events is None and not create:
                raise NotALedger(f"{redact(url)} is not a custody ledger (no {EVENTS_TABLE} table in schema "
                                 f"{target.schema})")
            return create and (events is None or views is None), views is not None, indexed is not None
    except psycopg.Error as e:
        raise StoreError(f"cannot open {redact(url)}: {first_line(e)}") from e
