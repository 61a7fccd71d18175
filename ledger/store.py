"""The one seam to the database: `eventsourcing` recorders for events, plain SQL for the views.

SQLite (a file path) is the embedded default; `postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]`
selects PostgreSQL. Everything above this module sees `Store` only: stored events in, stored events out,
and a transaction for view rows. Driver errors are re-raised `from` the original as `StoreError` (exit 2:
unreachable, locked too long, connection lost) or `Conflict` (a lost race: retry).

On PostgreSQL a missing password is left to libpq (`PGPASSWORD`, `PGPASSFILE`, `~/.pgpass`); the server is
reached once directly before the pool opens, so a bad address, role or database fails at once with libpq's
own reason; writers serialise on a transaction-scoped advisory lock instead of eventsourcing's
`LOCK TABLE … IN EXCLUSIVE MODE`, so run-time roles need only SELECT and INSERT on the events table;
every connection's search_path is the ledger's schema, where the views live beside the events.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit
from uuid import UUID

import msgpack
import msgspec
from eventsourcing import persistence as es
from eventsourcing.persistence import InfrastructureFactory, StoredEvent

from ledger.aggregates import (
    LOG_TOPICS,
    UNIT_TOPICS,
    checkpoints_id,
    decode_state,
    unit_id,
)
from ledger.errors import BadInput, Conflict, EncodingInvalid, LedgerError, NotALedger, StoreError

DEFAULT_DB = "custody.db"
LOCK_TIMEOUT_ENV = "CUSTODY_LOCK_TIMEOUT"  # seconds a writer waits for another writer's lock
DEFAULT_LOCK_TIMEOUT_S = 30
CONNECT_TIMEOUT_S = 5
EVENTS_TABLE = "stored_events"  # eventsourcing's name for an application without a name
_SQLITE_BUSY_SNAPSHOT = 517  # sqlite3.h: SQLITE_BUSY | (2 << 8), a stale read snapshot; never waited for
_SQLITE_BUSY_CODES = (5, 6, 261)  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY
_PG_ATTEMPTS = 3  # eventsourcing retries 10 times, 5 s each, when the server is gone; we ask first
_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LIBPQ_PARAMETERS = frozenset({  # passed through to libpq from the URL's query
    "host", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "channel_binding", "gssencmode",
    "application_name", "connect_timeout", "passfile", "target_session_attrs",
})
_VIEWS = {  # the views tables and their columns; a bulk write on PostgreSQL names the types
    "custody_position": "id INTEGER PRIMARY KEY, position INTEGER",
    "custody_authority": "id INTEGER PRIMARY KEY, row BLOB",
    "custody_units": "serial TEXT PRIMARY KEY, row BLOB",
    "custody_customers": "id TEXT PRIMARY KEY, row BLOB",
    "custody_duty": "entry TEXT PRIMARY KEY, row BLOB",
    "custody_findings": "idx INTEGER, serial TEXT, code TEXT, detail TEXT",
    "custody_signed": "key_id TEXT, idx INTEGER, at BIGINT, serials BLOB",
}
_VIEW_INDEXES = ("CREATE INDEX IF NOT EXISTS custody_findings_idx ON custody_findings (idx)",
                 "CREATE INDEX IF NOT EXISTS custody_signed_key ON custody_signed (key_id)")
_PG_TYPES = {"INTEGER": "int4", "BIGINT": "int8", "TEXT": "text", "BLOB": "bytea"}
_PG_COLUMN_TYPES = {table: {c.split()[0]: _PG_TYPES[c.split()[1]] for c in columns.split(", ")}
                    for table, columns in _VIEWS.items()}
_SQLITE_IN_CHUNK = 500  # keys per `IN (?, …)` read: SQLite caps the number of parameters
_URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]"


@dataclass(frozen=True)
class LogEvent:
    """One stored log event: the statement at `index` as the database holds it."""

    version: int
    index: int
    wire: bytes
    range: list[bytes]


# --- addresses -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresTarget:
    """A parsed PostgreSQL URL. `None` leaves the value to libpq (PGUSER, PGPORT, PGPASSWORD, ~/.pgpass)."""

    host: str
    dbname: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    schema: str = "public"
    parameters: tuple[tuple[str, str], ...] = ()

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq connection parameters; absent ones are not passed, so libpq's own defaults apply."""
        kwargs: dict[str, Any] = {"host": self.host, "dbname": self.dbname}
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.port is not None:
            kwargs["port"] = self.port
        kwargs.update(self.parameters)
        # the views are plain tables in the ledger's schema: name it once per connection, not per query
        kwargs["options"] = f'-c search_path="{self.schema}"'
        return kwargs


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def parse_postgres_url(url: str) -> PostgresTarget:
    """Parse `postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]` (libpq parameters may follow)."""
    shown = redact(url)

    def bad(why: str) -> StoreError:
        return StoreError(f"bad database URL {shown}: {why}")

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise bad(str(e)) from e
    if parts.scheme not in ("postgresql", "postgres"):
        raise bad(f"use {_URL_FORM}")
    host = unquote(parts.hostname or "")
    dbname = unquote(parts.path[1:])
    schema = "public"
    parameters: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not _SCHEMA.fullmatch(value):
                raise bad(f"schema must match {_SCHEMA.pattern}")
            schema = value
        elif key == "password":
            raise bad("give the password before the @, in PGPASSWORD or in ~/.pgpass, not in the query")
        elif key in _LIBPQ_PARAMETERS:
            parameters[key] = value
        else:
            raise bad(f"unknown parameter {key!r} (known: schema, {', '.join(sorted(_LIBPQ_PARAMETERS))})")
    host = parameters.pop("host", host)
    if not host or not dbname or "/" in dbname or parts.fragment:
        raise bad(f"use {_URL_FORM}")
    return PostgresTarget(host=host, dbname=dbname, user=unquote(parts.username) if parts.username else None,
                          password=unquote(parts.password) if parts.password else None, port=port,
                          schema=schema, parameters=tuple(sorted(parameters.items())))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if not is_postgres(url):
        return url
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    if has_password:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}")
    query = "&".join("password=***" if item.split("=", 1)[0] == "password" else item
                     for item in parts.query.split("&"))
    return urlunsplit(parts._replace(query=query))


def lock_timeout() -> int:
    """How long a writer waits for another writer's lock: `CUSTODY_LOCK_TIMEOUT` seconds, default 30."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_S
    if not raw.isdigit() or int(raw) < 1:
        raise BadInput(f"{LOCK_TIMEOUT_ENV} must be a whole number of seconds (at least 1), not {raw!r}")
    return int(raw)


# --- PostgreSQL: first contact, and the recorder -------------------------------------------------------


def _open_postgres(target: PostgresTarget, url: str, *, create: bool) -> bool:
    """Reach the server once, directly (a precise reason when it fails, at once); see to the schema.

    Returns whether the tables must be created: only by `create`, and only where they are missing, so a
    role without CREATE can open (and import into) an existing ledger.
    """
    import psycopg
    from psycopg import sql

    kwargs = target.connect_kwargs()
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    try:
        conn = psycopg.connect(**kwargs, autocommit=True)
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to {redact(url)}: {_first_line(e)}") from e
    try:
        with conn:
            found = conn.execute("SELECT to_regnamespace(%s), to_regclass(%s), to_regclass(%s)",
                                 (f'"{target.schema}"', f'"{target.schema}"."{EVENTS_TABLE}"',
                                  f'"{target.schema}".custody_position')).fetchone()
            assert found is not None
            schema, events, views = found
            if schema is None:
                if not create:
                    raise NotALedger(f"{redact(url)} is not a custody ledger (no schema {target.schema})")
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(target.schema)))
            elif events is None and not create:
                raise NotALedger(f"{redact(url)} is not a custody ledger (no {EVENTS_TABLE} table in schema "
                                 f"{target.schema})")
            return create and (events is None or views is None)
    except psycopg.Error as e:
        raise StoreError(f"cannot open {redact(url)}: {_first_line(e)}") from e


class _ConnectionLost(es.OperationalError):
    """The server went away mid-command and does not answer a fresh connection either."""


def _advisory_key(schema: str, table: str) -> int:
    digest = hashlib.sha256(f"custody-ledger/append\n{schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@functools.cache
def _postgres_recorder_class() -> type[Any]:
    """eventsourcing's PostgreSQL application recorder, made to fail fast and to lock without privileges.

    Built on first use: importing psycopg costs a tenth of a second that SQLite users need not pay.
    """
    import psycopg
    from eventsourcing.postgres import PostgresApplicationRecorder
    base: Any = PostgresApplicationRecorder

    def resilient(method: Callable[..., Any]) -> Callable[..., Any]:
        """Retry a read or insert on a fresh connection, unless the server is gone or a lock timed out."""
        inner = getattr(method, "__wrapped__", method)  # without eventsourcing's 10 × 0.2 s retries

        @functools.wraps(inner)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            self.reachable()
            for attempt in range(1, _PG_ATTEMPTS + 1):
                try:
                    return inner(self, *args, **kwargs)
                except (es.OperationalError, es.InterfaceError) as e:
                    if isinstance(e.__cause__, psycopg.errors.LockNotAvailable) or attempt == _PG_ATTEMPTS:
                        raise
                    self.lost = self.probe()
                    if self.lost is not None:
                        raise _ConnectionLost(self.lost) from e
                    time.sleep(0.1 * attempt)
            raise AssertionError("unreachable")

        return call

    class Recorder(base):  # type: ignore[misc]
        def _insert(self: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
            """Take the writers' lock, then stream the events in with one binary `COPY`, in one transaction.

            eventsourcing sends one array of composite values, which psycopg spells out in text (every
            state escaped, in Python) and the server parses back: three times slower. Its pipeline mode
            is not used either: there a batch of a few megabytes deadlocks (the server waits for the rest
            of the message, the client for a result). Nobody reads the notification ids back.
            """
            if not stored_events:
                return
            columns = "originator_id, originator_version, topic, state"
            copy_sql = f'COPY "{self.datastore.schema}"."{self.events_table_name}" ({columns}) FROM STDIN ' \
                       "(FORMAT BINARY)"
            with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
                self._lock_table(curs)
                with curs.copy(copy_sql) as copy:
                    copy.set_types([self.datastore.originator_id_type, "int8", "text", "bytea"])
                    for e in stored_events:
                        copy.write_row((e.originator_id, e.originator_version, e.topic, e.state))

        insert_events = resilient(_insert)
        select_events = resilient(base.select_events)
        select_notifications = resilient(base.select_notifications)
        max_notification_id = resilient(base.max_notification_id)

        def _lock_table(self, curs: Any) -> None:
            # Writers serialise on a transaction-scoped advisory lock: the commit order is the insert order
            # (what eventsourcing's table lock is for) without LOCK TABLE's UPDATE privilege. One round
            # trip sets the lock timeout, takes the lock and queues eventsourcing's notification.
            curs.execute("SELECT set_config('lock_timeout', %s, true), pg_advisory_xact_lock(%s), "
                         "pg_notify(%s, '')",
                         (f"{self.datastore.lock_timeout}s",
                          _advisory_key(self.datastore.schema, self.events_table_name), self.channel_name))

        def _notify_channel(self, curs: Any) -> None:
            pass  # done with the lock, above

        lost: str | None = None  # libpq's reason, once the server was found gone

        def reachable(self) -> None:
            """Once the server was found gone, ask it directly before each use: the pool would wait for
            a connection for its whole timeout before saying anything."""
            if self.lost is not None:
                self.lost = self.probe()
                if self.lost is not None:
                    raise _ConnectionLost(self.lost)

        def probe(self) -> str | None:
            """None if a fresh connection succeeds, else libpq's reason."""
            kwargs = {k: v for k, v in self.datastore.pool.kwargs.items() if k != "row_factory"}
            kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
            try:
                psycopg.connect(**kwargs).close()
            except psycopg.Error as e:
                return _first_line(e)
            return None

    Recorder.__name__ = Recorder.__qualname__ = "CustodyPostgresRecorder"
    return Recorder


# --- the store -----------------------------------------------------------------------------------------


class Store:
    """An opened ledger database. `readonly` stores never write, not even a journal file."""

    def __init__(self, url: str, *, create: bool = False, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self.postgres = is_postgres(url)
        self.lock_timeout = lock_timeout()
        self._log_id: UUID | None = None
        self.origin: str | None = None
        self.schema = "public"
        self._tables_missing = True
        if self.postgres:
            self._open_postgres(url, create=create)
        else:
            self._open_sqlite(url, create=create, readonly=readonly)
        self._datastore: Any = self._factory.datastore  # type: ignore[attr-defined]
        if create:
            self._create_views()
        self._find_log()

    # --- opening -----------------------------------------------------------------------------------

    def _open_sqlite(self, url: str, *, create: bool, readonly: bool) -> None:
        path = Path(url)
        if path.is_dir():
            raise StoreError(f"database {url} is a directory")
        if not create and not path.exists():
            raise NotALedger(f"no ledger at {url} (run `custody init` or give --db)")
        if path.exists() and not os.access(path, os.R_OK):
            raise StoreError(f"database {url} is not readable")
        name = str(path.resolve())
        if readonly:
            writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
            if writable:
                name = f"file:{name}?mode=ro"
            elif _pending_wal(path):
                name = f"file:{self._snapshot(path)}?mode=ro"
            else:
                name = f"file:{name}?immutable=1"
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": name,
               "SQLITE_LOCK_TIMEOUT": str(self.lock_timeout), "CREATE_TABLE": "true" if create else "false"}
        try:
            self._factory = InfrastructureFactory.construct(env=env)
            self.recorder: Any = self._factory.application_recorder()
        except (es.PersistenceError, OSError) as e:
            raise StoreError(f"cannot open database {url}: {_first_line(e)}") from e

    def _open_postgres(self, url: str, *, create: bool) -> None:
        target = parse_postgres_url(url)
        self.schema = target.schema
        make_tables = self._tables_missing = _open_postgres(target, url, create=create)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": target.dbname,
            "POSTGRES_HOST": target.host,
            "POSTGRES_PORT": str(target.port or ""),
            "POSTGRES_USER": target.user or "",
            "POSTGRES_PASSWORD": target.password or "",
            "POSTGRES_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT_S),
            "POSTGRES_LOCK_TIMEOUT": str(self.lock_timeout),
            "POSTGRES_POOL_SIZE": "1",
            "POSTGRES_MAX_OVERFLOW": "1",
            "POSTGRES_SCHEMA": target.schema,
            "CREATE_TABLE": "false",
        }
        try:
            self._factory = InfrastructureFactory.construct(env=env)
            # eventsourcing passes every parameter, an empty password too, which stops libpq from
            # reading PGPASSWORD: hand libpq exactly what the URL says (nothing opened yet).
            pool: Any = self._factory.datastore.pool  # type: ignore[attr-defined]
            for key in ("user", "password", "port"):
                pool.kwargs.pop(key, None)
            pool.kwargs.update(target.connect_kwargs())
            self.recorder = _postgres_recorder_class()(datastore=self._factory.datastore,  # type: ignore[attr-defined]
                                                       events_table_name=EVENTS_TABLE)
            if make_tables:
                self.recorder.create_table()
        except (es.PersistenceError, OSError) as e:
            with contextlib.suppress(Exception):
                self._factory.close()
            raise self._error("open", e) from e

    def _find_log(self) -> None:
        """Find the log by its creation event; an empty store has none yet."""
        try:
            # any log event will do: a ledger whose genesis row was deleted must still be found (and fail)
            first = self.recorder.select_notifications(None, 1, topics=list(LOG_TOPICS))
        except es.PersistenceError as e:
            if "no such table" in str(e) or "does not exist" in str(e):
                raise NotALedger(f"{redact(self.url)} is not a custody ledger") from e
            raise self._error("read", e) from e
        except Exception as e:  # sqlite3.DatabaseError for a file that is not a database
            raise NotALedger(f"{redact(self.url)} is not a custody ledger ({_first_line(e)})") from e
        if first:
            self._log_id = first[0].originator_id
            state = _decoded(first[0].state)
            self.origin = _origin_of(state.get("wire", b""))

    @property
    def opened(self) -> bool:
        return self._log_id is not None

    def _snapshot(self, path: Path) -> Path:
        """Copy a read-only database and its write-ahead log to a private folder and read the copy.

        SQLite's `immutable=1`, the only way to open a WAL database in a folder it may not write to,
        ignores the WAL: it would show an older ledger. The copy shows what a writer committed.
        """
        self._tempdir = tempfile.mkdtemp(prefix="custody-ro-")
        copy = Path(self._tempdir) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(Path(f"{path}-wal"), Path(f"{copy}-wal"))
        return copy

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._factory.close()
        if getattr(self, "_tempdir", None):
            shutil.rmtree(self._tempdir, ignore_errors=True)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- errors ------------------------------------------------------------------------------------

    def _error(self, doing: str, e: BaseException) -> LedgerError:
        """A driver error as the library's: a lost race, a lock held too long, a lost server, or else."""
        where = redact(self.url)
        code = _sqlite_code(e)
        if code == _SQLITE_BUSY_SNAPSHOT:
            return Conflict("another writer appended first")
        if code in _SQLITE_BUSY_CODES or _pg_lock_timeout(e):
            return StoreError(f"{where} is locked by another writer (waited {self.lock_timeout} s; "
                              f"{LOCK_TIMEOUT_ENV} sets how long); try again")
        if isinstance(e, _ConnectionLost):
            return StoreError(f"lost the connection to {where}: {e}")
        if self.postgres and isinstance(e, es.OperationalError | es.InterfaceError):
            return StoreError(f"lost the connection to {where}: {_first_line(e)}")
        return StoreError(f"cannot {doing} {where}: {_first_line(e)}")

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
            log_events = [e for e in events if e.topic == LOG_TOPICS[0]]
            if log_events:
                originator = log_events[0].originator_id
                self._log_id = originator if isinstance(originator, UUID) else UUID(originator)
                self.origin = _origin_of(decode_state(log_events[0].state)["wire"])

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
        rows = self._select(unit_id(self.origin, serial))
        return [{**_decoded(r.state), "version": r.originator_version} for r in rows]

    def all_unit_links(self, chunk: int = 5000) -> Iterator[tuple[UUID, int, dict[str, Any]]]:
        """Every stored unit link in insertion order: (unit id, version, state)."""
        start: int | None = None
        while True:
            try:
                rows = self.recorder.select_notifications(start, chunk, topics=list(UNIT_TOPICS),
                                                          inclusive_of_start=False)
            except es.PersistenceError as e:
                raise self._error("read", e) from e
            for row in rows:
                yield row.originator_id, row.originator_version, _decoded(row.state)
            if len(rows) < chunk:
                return
            start = rows[-1].id

    def checkpoints(self, after: int = 0) -> list[tuple[int, int, str]]:
        """Stored checkpoints as (version, size, note text), in the order they were signed; those with a
        version above `after` (a follower's last one) only, if given."""
        if self.origin is None:
            return []
        out = []
        for row in self._select(checkpoints_id(self.origin), **({"gt": after} if after else {})):
            state = _decoded(row.state)
            size, note = state.get("size"), state.get("note")
            # an undecodable row reads as an empty note, which `verify` reports as a bad checkpoint
            out.append((row.originator_version, size if isinstance(size, int) else -1,
                        note if isinstance(note, str) else ""))
        return out

    # --- raw reads: rows as stored, no event objects (`verify` decodes them in worker processes) ---

    def log_states(self, start: int = 0, chunk: int = 5000) -> Iterator[tuple[int, bytes]]:
        """(version, stored state) of the log events with index ≥ `start`, in version order."""
        if self._log_id is None:
            return
        log = self._log_id if self.postgres else self._log_id.hex
        version = start
        while True:
            rows = self._raw_events("SELECT originator_version, state FROM {table} WHERE originator_id = ? "
                                    "AND originator_version > ? ORDER BY originator_version LIMIT ?",
                                    [log, version, chunk])
            yield from rows
            if len(rows) < chunk:
                return
            version = rows[-1][0]

    def event_id_bound(self) -> int:
        """One more than the largest row id of the events table (SQLite's rowid, else notification_id)."""
        rows = self._raw_events(f"SELECT max({self._event_id}) FROM {{table}}", [])
        return int(rows[0][0] or 0) + 1

    def unit_link_rows(self, low: int | None, high: int | None) -> list[tuple[Any, int, bytes]]:
        """Stored unit links with row ids in [`low`, `high`) (None: unbounded), in row id order, as (unit
        id as 32 hex digits or whatever SQLite holds there, version, state)."""
        where = ["topic IN (?, ?)"]
        params: list[Any] = list(UNIT_TOPICS)
        if low is not None:
            where.append(f"{self._event_id} >= ?")
            params.append(low)
        if high is not None:
            where.append(f"{self._event_id} < ?")
            params.append(high)
        unit = "replace(originator_id::text, '-', '')" if self.postgres else "originator_id"
        return self._raw_events(f"SELECT {unit}, originator_version, state FROM {{table}} "
                                f"WHERE {' AND '.join(where)} ORDER BY {self._event_id}", params)

    @property
    def _event_id(self) -> str:
        return "notification_id" if self.postgres else "rowid"

    def _raw_events(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        sql = self._sql(statement.format(table=self.recorder.events_table_name))
        try:
            if self.postgres:
                return self._read(sql, tuple(params))
            with self._datastore.transaction(commit=False) as cursor:
                raw = cursor.sqlite_cursor
                raw.row_factory = None  # plain tuples: eventsourcing's sqlite3.Row costs 0.5 µs a row
                raw.execute(sql, tuple(params))
                rows: list[tuple[Any, ...]] = raw.fetchall()
                return rows
        except Exception as e:
            if _is_driver_error(e) or isinstance(e, es.PersistenceError):
                raise self._error("read", e) from e
            raise

    # --- views: plain tables beside the events -----------------------------------------------------

    def _scope(self, cursor: Any) -> None:
        """Nothing to do: on PostgreSQL every connection's search_path is the ledger's schema (set when it
        connects, see `PostgresTarget.connect_kwargs`), so bare table names resolve there."""

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s").replace("BLOB", "BYTEA") if self.postgres else statement

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction on the views tables; yields an object with `execute(sql, params)`.

        A unique-key clash (another writer inserted the row first) raises `Conflict`; nothing is written.
        """
        if self.readonly:
            raise StoreError("this store is open read-only")
        try:
            if self.postgres:
                self.recorder.reachable()
            with self._datastore.transaction(commit=True) as cursor:
                yield _Cursor(cursor, self)
        except es.IntegrityError as e:
            raise Conflict("another writer wrote the views first") from e
        except es.PersistenceError as e:
            raise self._error("write views to", e) from e
        except Exception as e:
            if _is_driver_error(e):
                raise self._error("write views to", e) from e
            raise

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on the views tables; an absent table reads as no rows."""
        for attempt in (1, 2):
            try:
                if self.postgres:
                    self.recorder.reachable()
                return self._read(self._sql(statement), tuple(params))
            except Exception as e:
                if "no such table" in str(e) or "does not exist" in str(e):
                    return []
                if not (_is_driver_error(e) or isinstance(e, es.PersistenceError)):
                    raise
                if (attempt == 1 and self.postgres and not isinstance(e, _ConnectionLost)
                        and isinstance(e, es.OperationalError | es.InterfaceError)):
                    # a pooled connection the server dropped: try a new one, unless the server is gone
                    self.recorder.lost = self.recorder.probe()
                    if self.recorder.lost is None:
                        continue
                    raise self._error("read views from", _ConnectionLost(self.recorder.lost)) from e
                raise self._error("read views from", e) from e
        raise AssertionError("unreachable")

    def query_in(self, statement: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of a read on the views tables whose `column` is one of `values`; `statement` holds `{where}`
        where the condition goes. On PostgreSQL one query (an array parameter), on SQLite one per 500 values.
        """
        if not values:
            return []
        if self.postgres:  # the array in binary: a third of the time to send
            return self.query(statement.format(where=f"{column} = ANY(%b)"), [list(values)])
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _SQLITE_IN_CHUNK):
            chunk = values[start:start + _SQLITE_IN_CHUNK]
            rows += self.query(statement.format(where=f"{column} IN ({','.join('?' * len(chunk))})"), chunk)
        return rows

    def _read(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self.postgres:  # one round trip: autocommit, and the schema is on the connection's search_path
            with self._datastore.get_connection() as conn:
                return [_row(row) for row in conn.execute(statement, params).fetchall()]
        with self._datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            return [_row(row) for row in cursor.fetchall()]

    def _create_views(self) -> None:
        statements = [*(f"CREATE TABLE IF NOT EXISTS {table} ({columns})" for table, columns in _VIEWS.items()),
                      *_VIEW_INDEXES]
        if self.postgres and not self._tables_missing:
            return  # an existing ledger: a role without CREATE may open it with create=True (import)
        with self.transaction() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def clear_views(self, cursor: Any) -> None:
        for table in _VIEWS:
            cursor.execute(f"DELETE FROM {table}")


class _Cursor:
    """A cursor that speaks `?` placeholders on both databases."""

    def __init__(self, cursor: Any, store: Store) -> None:
        self._cursor = cursor
        self._store = store

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._cursor.execute(self._store._sql(statement), tuple(params))

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._cursor.executemany(self._store._sql(statement), [tuple(r) for r in rows])

    def upsert(self, table: str, key: str, rows: Sequence[tuple[Any, bytes]]) -> None:
        """Insert or replace (`key`, row) pairs of a views table keyed by `key`.

        On PostgreSQL one statement whatever the number of rows (two arrays, sent in binary); on SQLite,
        where a statement costs no round trip, one prepared statement run per row.
        """
        if not rows:
            return
        if not self._store.postgres:
            self.executemany(f"INSERT INTO {table} ({key}, row) VALUES (?, ?) "
                             f"ON CONFLICT ({key}) DO UPDATE SET row = excluded.row", rows)
            return
        keys, values = zip(*rows, strict=True)
        self._cursor.execute(f"INSERT INTO {table} ({key}, row) "
                             f"SELECT * FROM unnest(%b::{_PG_COLUMN_TYPES[table][key]}[], %b::bytea[]) "
                             f"ON CONFLICT ({key}) DO UPDATE SET row = excluded.row", (list(keys), list(values)))

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a views table: on PostgreSQL in one binary `COPY`, on SQLite one statement a row."""
        if not rows:
            return
        if not self._store.postgres:
            self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                             rows)
            return
        types = _PG_COLUMN_TYPES[table]
        with self._cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([types[c] for c in columns])
            for row in rows:
                copy.write_row(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [_row(row) for row in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        """Rows the last statement changed (eventsourcing wraps sqlite3's cursor; psycopg's is bare)."""
        return int(getattr(self._cursor, "sqlite_cursor", self._cursor).rowcount)


def _row(row: Any) -> tuple[Any, ...]:
    """A result row as a tuple: psycopg's dict rows and sqlite3's rows alike."""
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def _pending_wal(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.exists() and wal.stat().st_size > 0 and os.access(wal, os.R_OK)


def _decoded(state: bytes) -> dict[str, Any]:
    """A stored event's state, or {} when it cannot be decoded (the callers' checks then fail)."""
    try:
        decoded = decode_state(state)
    except Exception:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _log_event(row: StoredEvent) -> LogEvent:
    state = _decoded(row.state)
    wire, range_ = state.get("wire"), state.get("range")
    if not isinstance(wire, bytes) or not isinstance(range_, list):
        raise EncodingInvalid("a stored log event cannot be decoded", row.originator_version - 1)
    return LogEvent(row.originator_version, row.originator_version - 1, wire, range_)


def _origin_of(wire: bytes) -> str | None:
    """The origin named by a stored genesis, read leniently (verify checks it properly)."""
    try:
        body = msgpack.unpackb(msgpack.unpackb(wire)[0], raw=False)
        origin = body.get("origin")
        return origin if isinstance(origin, str) else None
    except Exception:
        return None


def _causes(e: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = e
    for _ in range(16):  # a chain, not a cycle
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _sqlite_code(e: BaseException) -> int | None:
    """The extended SQLite result code behind an error, if any (Python 3.11's `sqlite_errorcode`)."""
    for cause in _causes(e):
        code = getattr(cause, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code
    return None


def _pg_lock_timeout(e: BaseException) -> bool:
    return any(getattr(c, "sqlstate", None) == "55P03" for c in _causes(e))  # lock_not_available


def _is_driver_error(e: BaseException) -> bool:
    module = type(e).__module__
    return module.startswith(("sqlite3", "psycopg"))


def _first_line(e: BaseException) -> str:
    text = " ".join((str(e).strip() or type(e).__name__).splitlines()[0].split())
    return text.removeprefix("connection failed: ")


_BLOB = msgspec.msgpack.Encoder().encode  # the same msgpack bytes as msgpack.packb, several times faster


def blob(value: Any) -> bytes:
    """A view row as stored: msgpack of the fold's row list."""
    return _BLOB(value)


def unblob(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
