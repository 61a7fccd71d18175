"""The one seam to the database: `eventsourcing` recorders for events, plain SQL for the views.

SQLite (a file path) is the embedded default; `postgresql://…` selects PostgreSQL. Everything above
this module sees `Store` only: stored events in, stored events out, and a transaction for view rows.
Driver errors are re-raised as `StoreError` (or `Conflict`, for a lost race) `from` the original.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import msgpack
from eventsourcing import persistence as es
from eventsourcing.persistence import InfrastructureFactory, StoredEvent

from ledger.aggregates import (
    CHECKPOINT_TOPICS,
    LOG_TOPICS,
    UNIT_TOPICS,
    checkpoints_id,
    decode_state,
    unit_id,
)
from ledger.errors import Conflict, NotALedger, StoreError

DEFAULT_DB = "custody.db"
SQLITE_LOCK_TIMEOUT_S = 15  # a second writer waits this long for the file lock, then retries
_VIEW_TABLES = ("custody_position", "custody_authority", "custody_units", "custody_customers",
                "custody_duty", "custody_findings", "custody_signed")


@dataclass(frozen=True)
class LogEvent:
    """One stored log event: the statement at `index` as the database holds it."""

    version: int
    index: int
    wire: bytes
    range: list[bytes]


def _is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def _postgres_env(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    password = unquote(parts.password) if parts.password else os.environ.get("PGPASSWORD", "")
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname or not parts.hostname:
        raise StoreError(f"bad database URL {redact(url)}: use postgresql://USER@HOST[:PORT]/DBNAME")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or os.environ.get("PGUSER", "postgres")),
        "POSTGRES_PASSWORD": password,
        "POSTGRES_CONNECT_TIMEOUT": "5",
        "POSTGRES_LOCK_TIMEOUT": "30",
        "POSTGRES_POOL_SIZE": "2",
    }
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"][0]
    return env


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


class Store:
    """An opened ledger database. `readonly` stores never write, not even a journal file."""

    def __init__(self, url: str, *, create: bool = False, readonly: bool = False) -> None:
        self.url = url
        self.readonly = readonly
        self.postgres = _is_postgres(url)
        env = self._env(url, create=create, readonly=readonly)
        try:
            self._factory = InfrastructureFactory.construct(env=env)
            self.recorder: Any = self._factory.application_recorder()
        except (es.PersistenceError, OSError) as e:
            raise StoreError(f"cannot open database {redact(url)}: {_first_line(e)}") from e
        self._datastore: Any = self._factory.datastore  # type: ignore[attr-defined]
        self._log_id: UUID | None = None
        self.origin: str | None = None
        if create:
            self._create_views()
        self._find_log()

    # --- opening -----------------------------------------------------------------------------------

    def _env(self, url: str, *, create: bool, readonly: bool) -> dict[str, str]:
        common = {"CREATE_TABLE": "true" if create else "false"}
        if self.postgres:
            return {**_postgres_env(url), **common}
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
            name = f"file:{name}?mode=ro" if writable else f"file:{name}?immutable=1"
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": name,
                "SQLITE_LOCK_TIMEOUT": str(SQLITE_LOCK_TIMEOUT_S), **common}

    def _find_log(self) -> None:
        """Find the log by its creation event; an empty store has none yet."""
        try:
            first = self.recorder.select_notifications(None, 1, topics=[LOG_TOPICS[0]])
        except es.PersistenceError as e:
            if "no such table" in str(e) or "does not exist" in str(e):
                raise NotALedger(f"{redact(self.url)} is not a custody ledger") from e
            raise StoreError(f"cannot read database {redact(self.url)}: {_first_line(e)}") from e
        except Exception as e:  # sqlite3.DatabaseError for a file that is not a database
            raise NotALedger(f"{redact(self.url)} is not a custody ledger ({_first_line(e)})") from e
        if first:
            self._log_id = first[0].originator_id
            state = decode_state(first[0].state)
            self.origin = _origin_of(state["wire"])

    @property
    def opened(self) -> bool:
        return self._log_id is not None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._factory.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            raise StoreError(f"cannot write to {redact(self.url)}: {_first_line(e)}") from e
        if self._log_id is None:
            log_events = [e for e in events if e.topic == LOG_TOPICS[0]]
            if log_events:
                self._log_id = log_events[0].originator_id
                self.origin = _origin_of(decode_state(log_events[0].state)["wire"])

    def _select(self, originator: UUID, **kwargs: Any) -> Sequence[StoredEvent]:
        try:
            return self.recorder.select_events(originator, **kwargs)  # type: ignore[no-any-return]
        except es.PersistenceError as e:
            raise StoreError(f"cannot read {redact(self.url)}: {_first_line(e)}") from e

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
        return [{**decode_state(r.state), "version": r.originator_version} for r in rows]

    def all_unit_links(self, chunk: int = 5000) -> Iterator[tuple[UUID, int, dict[str, Any]]]:
        """Every stored unit link in insertion order: (unit id, version, state)."""
        start: int | None = None
        while True:
            try:
                rows = self.recorder.select_notifications(start, chunk, topics=list(UNIT_TOPICS),
                                                          inclusive_of_start=False)
            except es.PersistenceError as e:
                raise StoreError(f"cannot read {redact(self.url)}: {_first_line(e)}") from e
            for row in rows:
                yield row.originator_id, row.originator_version, decode_state(row.state)
            if len(rows) < chunk:
                return
            start = rows[-1].id

    def checkpoints(self) -> list[tuple[int, int, str]]:
        """Stored checkpoints as (version, size, note text), in the order they were signed."""
        if self.origin is None:
            return []
        out = []
        for row in self._select(checkpoints_id(self.origin)):
            state = decode_state(row.state)
            out.append((row.originator_version, state["size"], state["note"]))
        return out

    # --- views: plain tables beside the events -----------------------------------------------------

    def _scope(self, cursor: Any) -> None:
        """On PostgreSQL, the views live in the same schema as the events."""
        if self.postgres:
            schema = self._datastore.schema or "public"
            cursor.execute(f'SET LOCAL search_path TO "{schema}"')

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s").replace("BLOB", "BYTEA") if self.postgres else statement

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction on the views tables; yields an object with `execute(sql, params)`."""
        if self.readonly:
            raise StoreError("this store is open read-only")
        try:
            with self._datastore.transaction(commit=True) as cursor:
                self._scope(cursor)
                yield _Cursor(cursor, self)
        except es.PersistenceError as e:
            raise StoreError(f"cannot write views to {redact(self.url)}: {_first_line(e)}") from e
        except Exception as e:
            if _is_driver_error(e):
                raise StoreError(f"cannot write views to {redact(self.url)}: {_first_line(e)}") from e
            raise

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on the views tables; an absent table reads as no rows."""
        try:
            with self._datastore.transaction(commit=False) as cursor:
                self._scope(cursor)
                cursor.execute(self._sql(statement), tuple(params))
                return [_row(row) for row in cursor.fetchall()]
        except Exception as e:
            if "no such table" in str(e) or "does not exist" in str(e):
                return []
            if _is_driver_error(e) or isinstance(e, es.PersistenceError):
                raise StoreError(f"cannot read views from {redact(self.url)}: {_first_line(e)}") from e
            raise

    def _create_views(self) -> None:
        statements = [
            "CREATE TABLE IF NOT EXISTS custody_position (id INTEGER PRIMARY KEY, position INTEGER)",
            "CREATE TABLE IF NOT EXISTS custody_authority (id INTEGER PRIMARY KEY, row BLOB)",
            "CREATE TABLE IF NOT EXISTS custody_units (serial TEXT PRIMARY KEY, row BLOB)",
            "CREATE TABLE IF NOT EXISTS custody_customers (id TEXT PRIMARY KEY, row BLOB)",
            "CREATE TABLE IF NOT EXISTS custody_duty (entry TEXT PRIMARY KEY, row BLOB)",
            "CREATE TABLE IF NOT EXISTS custody_findings (idx INTEGER, serial TEXT, code TEXT, detail TEXT)",
            "CREATE INDEX IF NOT EXISTS custody_findings_idx ON custody_findings (idx)",
            "CREATE TABLE IF NOT EXISTS custody_signed (key_id TEXT, idx INTEGER, at BIGINT, serials BLOB)",
            "CREATE INDEX IF NOT EXISTS custody_signed_key ON custody_signed (key_id)",
        ]
        with self.transaction() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def clear_views(self, cursor: Any) -> None:
        for table in _VIEW_TABLES:
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

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [_row(row) for row in self._cursor.fetchall()]


def _row(row: Any) -> tuple[Any, ...]:
    """A result row as a tuple: psycopg's dict rows and sqlite3's rows alike."""
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def _log_event(row: StoredEvent) -> LogEvent:
    state = decode_state(row.state)
    return LogEvent(row.originator_version, row.originator_version - 1, state["wire"], state["range"])


def _origin_of(wire: bytes) -> str | None:
    """The origin named by a stored genesis, read leniently (verify checks it properly)."""
    try:
        body = msgpack.unpackb(msgpack.unpackb(wire)[0], raw=False)
        origin = body.get("origin")
        return origin if isinstance(origin, str) else None
    except Exception:
        return None


def _is_driver_error(e: BaseException) -> bool:
    module = type(e).__module__
    return module.startswith(("sqlite3", "psycopg"))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def blob(value: Any) -> bytes:
    """A view row as stored: msgpack of the fold's row list."""
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unblob(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)
