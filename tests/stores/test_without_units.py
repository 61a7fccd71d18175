"""The log's statements without units, found by the database (issue 15, item 4; `record`'s cost).

A writer folds the authority it relies on from the log's statements without units
(`driver.checked_authority`). The store finds their rows through a partial index that the database keeps
on every insert, whoever inserts (`Store.log_states_without_units`): the same rows as a scan of the whole
log for `codec.WITHOUT_UNITS`, on both stores, for a ledger made before the index too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest

from ledger import driver
from ledger.errors import RoleMissing
from ledger.parallel import stored_wire
from ledger.statement import decode
from ledger.store import Store
from ledger.store.base import WITHOUT_UNITS_INDEX
from ledger.store.codec import WITHOUT_UNITS
from tests.adversarial.test_insider_writes import NOW, SECOND, T0, _insert, _ledger, _sign


def _scanned(store: Store, start: int = 0) -> list[int]:
    """What the whole log holds: the versions whose stored state holds the bytes."""
    return [version for version, state in store.log_states(start) if WITHOUT_UNITS in state]


def _drop_index(url: str) -> None:
    with Store(url) as store, store.transaction() as cursor:
        cursor.execute(f"DROP INDEX {WITHOUT_UNITS_INDEX}" if not store.postgres
                       else f'DROP INDEX "{store.schema}".{WITHOUT_UNITS_INDEX}')


def _indexed(url: str) -> bool:
    with Store(url, readonly=True) as store:
        if store.postgres:
            found = store.query("SELECT to_regclass(%s)", [f'"{store.schema}".{WITHOUT_UNITS_INDEX}'])
            return found[0][0] is not None
        return bool(store.recorder.indexes_exist(WITHOUT_UNITS_INDEX))


def test_the_database_finds_exactly_the_statements_without_units(db_url: str) -> None:
    ks = _ledger(db_url)  # genesis, four registrations, a fabricated
    with Store(db_url) as store:
        forged = _sign(ks["kerry"], "participant_registered",
                       {"id": "kerry", "name": "kerry", "country": "US", "roles": ["carrier", "fab"],
                        "key": ks["kerry"].public}, [], T0 + 3 * SECOND)
        index = _insert(store, forged)  # out of band: the database indexes it as any other row
        found = [version for version, _ in store.log_states_without_units()]
        assert found == _scanned(store) == [1, 2, 3, 4, 5, index + 1]
        for _, state in store.log_states_without_units(chunk=2):
            wire = stored_wire(state)
            assert wire is not None and not decode(wire).units
        assert [v for v, _ in store.log_states_without_units(3, chunk=2)] == _scanned(store, 3) == [4, 5, index + 1]
        # and the writer's authority takes the forged registration in, so it refuses at its index
        with pytest.raises(RoleMissing) as caught:
            driver._CHECKED.clear()
            driver.checked_authority(store, store.size(), NOW)
        assert caught.value.index == index


def test_a_ledger_made_before_the_index_gets_it_and_reads_the_same_without_it(db_url: str) -> None:
    _ledger(db_url)
    assert _indexed(db_url)
    _drop_index(db_url)
    assert not _indexed(db_url)
    with Store(db_url, readonly=True) as store:  # a reader never writes: it reads without the index
        without = [version for version, _ in store.log_states_without_units()]
    assert not _indexed(db_url)
    Store(db_url).close()  # a writer's open adds it
    assert _indexed(db_url)
    with Store(db_url, readonly=True) as store:
        assert [version for version, _ in store.log_states_without_units()] == without == _scanned(store)


def test_sqlite_reads_them_through_the_index(tmp_path: Path) -> None:
    url = str(tmp_path / "custody.db")
    _ledger(url)
    with Store(url, readonly=True) as store:
        assert store._log_id is not None
        plan = sqlite3.connect(url).execute(
            "EXPLAIN QUERY PLAN SELECT originator_version, state FROM stored_events WHERE originator_id = ? "
            f"AND originator_version > ? AND {store.without_units} ORDER BY originator_version LIMIT 50",
            [store._log_id.hex, 0]).fetchall()
    assert WITHOUT_UNITS_INDEX in " ".join(str(row) for row in plan)


def test_postgres_reads_them_through_the_index(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    _ledger(db_url)
    with Store(db_url, readonly=True) as store:
        assert store._log_id is not None
        with psycopg.connect(db_url.split("?")[0]) as conn:
            conn.execute("SET enable_seqscan = off")  # a table this small is scanned whatever the index
            plan = conn.execute(
                f'EXPLAIN SELECT originator_version, state FROM "{store.schema}".stored_events WHERE '
                f"originator_id = %s AND originator_version > 0 AND {store.without_units} "
                "ORDER BY originator_version LIMIT 50", [store._log_id]).fetchall()
    assert WITHOUT_UNITS_INDEX in " ".join(str(row) for row in plan)


def test_a_writer_opens_an_older_ledger_while_another_holds_the_lock(tmp_path: Path) -> None:
    """The index is added when the file is free; a writer that finds it held opens without it at once."""
    url = str(tmp_path / "custody.db")
    _ledger(url)
    _drop_index(url)
    holder = sqlite3.connect(url, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer's transaction
    try:
        with Store(url) as store:
            assert not store.recorder.indexes_exist(WITHOUT_UNITS_INDEX)
            assert [version for version, _ in store.log_states_without_units()] == _scanned(store)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    Store(url).close()
    assert _indexed(url)
