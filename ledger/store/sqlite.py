"""The SQLite backend: a file, `custody.db` by default, on `eventsourcing`'s SQLite recorder.

Files run in WAL mode (eventsourcing's choice); a second writer waits `CUSTODY_LOCK_TIMEOUT` seconds for
the first, then fails as locked. A read-only store never writes, not even a journal: a file it may not
write to is opened `immutable=1`, or, when a write-ahead log holds commits, read from a private copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from eventsourcing import persistence as es
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteDatastore

from ledger.errors import Conflict, LedgerError, NotALedger, StoreError
from ledger.store import codec
from ledger.store.address import redact
from ledger.store.base import (
    EVENTS_TABLE,
    GENESIS_INDEX,
    IN_CHUNK,
    WITHOUT_UNITS_INDEX,
    Store,
    Then,
    ViewsCursorBase,
    first_line,
    genesis_index,
    without_units_index,
)

SQLITE_BUSY_SNAPSHOT = 517  # sqlite3.h: SQLITE_BUSY | (2 << 8), a stale read snapshot; never waited for
SQLITE_BUSY_CODES = (5, 6, 261)  # SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY
SQLITE_NOTADB = 26  # sqlite3.h: the file is not a database

# a row's state holds `codec.WITHOUT_UNITS`: `instr` is a byte search when both are BLOBs
WITHOUT_UNITS = f"instr(state, X'{codec.WITHOUT_UNITS.hex()}') > 0"


class LedgerRecorder(SQLiteApplicationRecorder):
    """eventsourcing's SQLite application recorder, plus the genesis index and reads that return rows as
    plain tuples."""

    def construct_create_table_statements(self) -> list[str]:
        return [*super().construct_create_table_statements(), genesis_index(self.events_table_name),
                without_units_index(self.events_table_name, WITHOUT_UNITS)]

    def insert_events(self, stored_events: Sequence[es.StoredEvent], *, then: Then | None = None,
                      **kwargs: Any) -> Sequence[int] | None:
        """eventsourcing's insert, plus the events `then` returns once these are in, in the same
        transaction (`Store.write`)."""
        with self.datastore.transaction(commit=True) as c:
            self._insert_events(c, stored_events, **kwargs)
            more = then(_Cursor(c.sqlite_cursor)) if then is not None else ()
            if more:
                self._insert_events(c, more, **kwargs)
        return None

    def select_rows(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of one read in a read transaction, as tuples: eventsourcing's `sqlite3.Row`s cost half a
        microsecond each, which a million-row walk of the unit links would feel."""
        with self.datastore.transaction(commit=False) as library_cursor, library_cursor as raw:
            cursor = raw.connection.cursor()  # our own cursor, in the same transaction
            cursor.row_factory = None
            try:
                cursor.execute(statement, tuple(params))
                rows: list[tuple[Any, ...]] = cursor.fetchall()
                return rows
            finally:
                cursor.close()

    def table_exists(self, name: str) -> bool:
        return bool(self.select_rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]))

    def indexes_exist(self, *names: str) -> bool:
        found = self.select_rows(f"SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN "
                                 f"({', '.join('?' * len(names))})", names)
        return bool(found[0][0] == len(names))


class _Cursor(ViewsCursorBase):
    """The views transaction's cursor: a plain `sqlite3` cursor inside eventsourcing's transaction."""

    _cursor: sqlite3.Cursor

    def upsert(self, table: str, key: str, rows: Sequence[tuple[Any, bytes]]) -> None:
        """Insert or replace (`key`, row) pairs of a views table keyed by `key`: one prepared statement
        run per row (a statement costs no round trip here)."""
        self.executemany(f"INSERT INTO {table} ({key}, row) VALUES (?, ?) "
                         f"ON CONFLICT ({key}) DO UPDATE SET row = excluded.row", rows)

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Append rows to a views table."""
        self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._cursor.fetchall()]

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class SqliteStore(Store):
    """A ledger in an SQLite file."""

    without_units = WITHOUT_UNITS

    recorder: LedgerRecorder
    _has_views: bool

    def _open(self, *, create: bool) -> None:
        url, readonly = self.url, self.readonly
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
        self._datastore = SQLiteDatastore(name, lock_timeout=self.lock_timeout)
        self.recorder = LedgerRecorder(self._datastore, events_table_name=EVENTS_TABLE)
        try:
            if create:
                self.recorder.create_table()
            elif not self.recorder.table_exists(EVENTS_TABLE):
                raise NotALedger(f"{url} is not a custody ledger")
            elif not readonly and not self.recorder.indexes_exist(GENESIS_INDEX, WITHOUT_UNITS_INDEX):
                self._add_indexes()
            self._has_views = self.recorder.table_exists("custody_position")
        except (es.PersistenceError, sqlite3.Error) as e:
            self.close()
            code = _sqlite_code(e)
            if code == SQLITE_NOTADB:
                raise NotALedger(f"{url} is not a custody ledger ({first_line(e)})") from e
            if code in SQLITE_BUSY_CODES:
                raise self._locked() from e
            raise StoreError(f"cannot open database {url}: {first_line(e)}") from e

    def _add_indexes(self) -> None:
        """A ledger made before these indexes: add them, unless another writer holds the file just now;
        reads then go without them (the database scans for the same rows) and the next writer tries again."""
        try:
            self.recorder.create_table()
        except (es.PersistenceError, sqlite3.Error) as e:
            if _sqlite_code(e) not in (*SQLITE_BUSY_CODES, SQLITE_BUSY_SNAPSHOT):
                raise

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
            self._datastore.close()
        if getattr(self, "_tempdir", None):
            shutil.rmtree(self._tempdir, ignore_errors=True)

    def _error(self, doing: str, e: BaseException) -> LedgerError:
        code = _sqlite_code(e)
        if code == SQLITE_BUSY_SNAPSHOT:
            return Conflict("another writer appended first")
        if code in SQLITE_BUSY_CODES:
            return self._locked()
        return StoreError(f"cannot {doing} {redact(self.url)}: {first_line(e)}")

    def _rows(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.recorder.select_rows(statement, params)
        return rows

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[_Cursor]:
        with self._datastore.transaction(commit=True) as library_cursor, library_cursor as raw:
            yield _Cursor(raw)
        if not self._has_views:  # the transaction that created them
            self._has_views = self.recorder.table_exists("custody_position")

    def _views_exist(self) -> bool:
        return self._has_views

    def query_in(self, statement: str, column: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
        """One read per 500 values: SQLite caps the number of parameters."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), IN_CHUNK):
            chunk = values[start:start + IN_CHUNK]
            rows += self.query(statement.format(where=f"{column} IN ({','.join('?' * len(chunk))})"), chunk)
        return rows


def _pending_wal(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return wal.exists() and wal.stat().st_size > 0 and os.access(wal, os.R_OK)


def _sqlite_code(e: BaseException) -> int | None:
    """The extended SQLite result code behind an error, if any (`sqlite3.Error.sqlite_errorcode`)."""
    seen: BaseException | None = e
    for _ in range(16):  # a chain, not a cycle
        if seen is None:
            return None
        if isinstance(seen, sqlite3.Error):
            return seen.sqlite_errorcode
        seen = seen.__cause__ or seen.__context__
    return None
