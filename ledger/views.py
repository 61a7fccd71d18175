"""Materialised views: the fold's state kept as rows in the ledger's own database.

Writers keep them: after each append they fold the new statements on top of the rows those
statements touch and write the rows back with the new position, in one transaction that locks the
position row and writes only if it still holds the position the writer folded from (tracking: a
statement is never applied twice, even when another writer caught the views up in between). Readers
never write: they load the rows and fold, in memory, whatever the log holds beyond the position.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ledger import driver, heads, parallel
from ledger.errors import Conflict, IntegrityError, StoreError
from ledger.state import VIEWS_VERSION, Customer, DutyEntry, Finding, State, UnitState
from ledger.statement import Statement, key_id
from ledger.store import Store, blob, unblob


def position(store: Store) -> int:
    rows = store.query("SELECT position FROM custody_position WHERE id = 1")
    return int(rows[0][0]) if rows else 0


def _load_authority(store: Store, state: State) -> None:
    rows = store.query("SELECT row FROM custody_authority WHERE id = 1")
    if rows:
        state.load_authority_row(unblob(rows[0][0]))
    state.size = position(store)


def stale(store: Store) -> bool:
    """Whether the stored views were written by an older version (`state.VIEWS_VERSION`): their rows lack
    what the fold now keeps, so readers fold the log instead and writers rebuild them first."""
    rows = store.query("SELECT row FROM custody_authority WHERE id = 1")
    return bool(rows) and State.row_version(unblob(rows[0][0])) < VIEWS_VERSION


def load_rows(store: Store, table: str, column: str, keys: Iterable[str]) -> list[Any]:
    return [unblob(r[0]) for r in store.query_in(f"SELECT row FROM {table} WHERE {{where}}", column,
                                                 sorted(set(keys)))]


def load_partial(store: Store, statements: Sequence[Statement], authority: State | None = None) -> State:
    """The state rows that folding `statements` reads or writes: a writer's partial state. Its authority
    part is `authority`'s (a writer's, checked from the log) where given, else the views' row."""
    state = State(origin=store.origin)
    if authority is None:
        _load_authority(store, state)
    else:
        state.adopt_authority(authority)
        state.size = position(store)
        rows = store.query("SELECT row FROM custody_authority WHERE id = 1")
        if rows:
            state.load_volume_row(unblob(rows[0][0]))
    state.customers = {r[0]: Customer.from_row(r)
                       for r in (unblob(x[0]) for x in store.query("SELECT row FROM custody_customers"))}
    serials: set[str] = set()
    entries: set[str] = set()
    for statement in statements:
        serials.update(statement.serials)
        if statement.kind == "duty_paid":
            entries.add(statement.data["entry"])
        if statement.kind == "key_revoked":
            kid = key_id(statement.data["key"])
            signed = [(i, at, tuple(unblob(s))) for i, at, s in store.query(
                f"SELECT idx, at, serials FROM custody_signed WHERE key_id = {store.param} ORDER BY idx", [kid])]
            state.signed[kid] = signed
            for _, _, more in signed:
                serials.update(more)
    state.units = {r[0]: UnitState.from_row(r) for r in load_rows(store, "custody_units", "serial", serials)}
    state.duty = {r[0]: DutyEntry.from_row(r) for r in load_rows(store, "custody_duty", "entry", entries)}
    return state


def save(store: Store, state: State, statements: Sequence[tuple[int, Statement]], start: int) -> None:
    """Write the rows of a partial `state` that folded `statements` from position `start`.

    Raises `Conflict` (and writes nothing) when another writer moved the position first.
    """
    with store.transaction() as cursor:
        save_in(cursor, store.param, state, statements, start)


def save_in(cursor: Any, param: str, state: State, statements: Sequence[tuple[int, Statement]], start: int) -> None:
    """`save` in a write transaction the caller holds (`cursor`; `param` the store's placeholder): the
    writer's, which stores the statements in the same one (`append.Batch.commit`). `Conflict` is raised
    before anything is written."""
    # Take the row's write lock first (a no-op update), then read: the position cannot move between
    # the check and the write, and a writer that already folded these statements is told apart.
    cursor.execute("UPDATE custody_position SET position = position WHERE id = 1")
    cursor.execute("SELECT position FROM custody_position WHERE id = 1")
    found = cursor.fetchall()
    if not found:
        if start != 0:
            raise Conflict("views have no position row")
        cursor.execute(f"INSERT INTO custody_position (id, position) VALUES (1, {param})", [state.size])
    elif found[0][0] != start:
        raise Conflict("views moved on")
    else:
        cursor.execute(f"UPDATE custody_position SET position = {param} WHERE id = 1", [state.size])
    _write_rows(cursor, state, statements)


_SIGNED_COLUMNS = ("key_id", "idx", "at", "serials")


def _write_rows(cursor: Any, state: State, statements: Sequence[tuple[int, Statement]], *,
                fresh: bool = False) -> None:
    """The rows `state` holds, each table in one bulk write (see the backends' `upsert` and `insert`);
    `fresh`: into emptied tables, so plain inserts."""
    write = (lambda table, key, rows: cursor.insert(table, (key, "row"), rows)) if fresh else cursor.upsert
    write("custody_authority", "id", [(1, blob(state.authority_row()))])
    write("custody_units", "serial", [(u.serial, blob(u.to_row())) for u in state.units.values()])
    write("custody_customers", "id", [(c.id, blob(c.to_row())) for c in state.customers.values()])
    write("custody_duty", "entry", [(d.entry, blob(d.to_row())) for d in state.duty.values()])
    cursor.insert("custody_findings", ("idx", "serial", "code", "detail"),
                  [(f.index, f.serial, f.code, f.detail) for f in state.findings])
    cursor.insert("custody_signed", _SIGNED_COLUMNS,
                  [(s.signer, i, s.at, blob(list(s.serials))) for i, s in statements])


def load_full(store: Store) -> State:
    """Every view row: the state as of the views' position."""
    state = State(origin=store.origin)
    _load_authority(store, state)
    state.customers = {r[0]: Customer.from_row(r)
                       for r in (unblob(x[0]) for x in store.query("SELECT row FROM custody_customers"))}
    state.units = {r[0]: UnitState.from_row(r)
                   for r in (unblob(x[0]) for x in store.query("SELECT row FROM custody_units"))}
    state.duty = {r[0]: DutyEntry.from_row(r)
                  for r in (unblob(x[0]) for x in store.query("SELECT row FROM custody_duty"))}
    state.findings = [Finding(code, serial, idx, detail) for idx, serial, code, detail in store.query(
        "SELECT idx, serial, code, detail FROM custody_findings ORDER BY idx")]
    signed = store.query("SELECT key_id, idx, at, serials FROM custody_signed ORDER BY idx")
    for kid, idx, at, serials in signed:
        state.signed.setdefault(kid, []).append((idx, at, tuple(unblob(serials))))
    return state


def current(store: Store, now_us: int) -> State:
    """The state as of the whole log: the views plus, in memory, the statements beyond them (the whole
    log, when the views are `stale`)."""
    state = State(origin=store.origin) if stale(store) else load_full(store)
    fold_tail(store, state, now_us)
    return state


def fold_tail(store: Store, state: State, now_us: int) -> list[tuple[int, Statement]]:
    """Fold the log beyond `state.size` into `state`, checking each statement; return them."""
    return list(driver.admit_log(store, state, driver.reader_clock(now_us)))


def catch_up(store: Store, now_us: int) -> tuple[State, int]:
    """Bring the views up to the log (a writer's first step); a lost race is left to the winner.

    A writer never builds on what it has not checked: the authority it relies on (keys, roles,
    revocations) is folded from the log's own statements, each checked (`driver.checked_authority`),
    never read from view rows that a participant may edit; every statement beyond the views is checked
    against the hard rules, its signature included, before it is folded. Returns that checked state (its
    authority part is what the writer may rely on) and the log position it stands for. Raises the
    `IntegrityError` of the first statement that breaks a rule, and writes nothing then. Views an older
    version wrote are rebuilt first (`stale`).
    """
    if stale(store):
        rebuild(store, now_us, workers=1)
    start = position(store)
    size = store.size()
    try:
        authority = driver.checked_authority(store, min(start, size), now_us)
        if start >= size:
            return authority, start
        tail = [(e.index, driver.decode_at(e.wire, e.index)) for e in store.log(start)]
        state = load_partial(store, [s for _, s in tail], authority)
        heads.check_rows(store, state.units, {serial for _, s in tail for serial in s.serials}, start, authority)
        clock = driver.reader_clock(now_us)
        for index, statement in tail:
            driver.admit(state, index, statement, clock)
    except IntegrityError as e:
        if position(store) != start:  # another writer saved the views meanwhile: rows newer than `start`
            raise Conflict("the views moved while this writer caught them up") from e
        e.detail = f"{e.detail}; {driver.NOT_VERIFIED}"
        raise
    with contextlib.suppress(Conflict):  # a lost race is left to the winner
        save(store, state, tail, start)
    return state, state.size


def rebuild(store: Store, now_us: int, progress: Callable[[int], None] | None = None,
            workers: int | None = None) -> State:
    """Drop every view row and fold the whole log again (`replay --rebuild`), in one transaction.

    The rows come out exactly as the writers would have left them: the same fold, the same row encoding.
    A writer that appends meanwhile is folded in by the next writer's catch-up.
    """
    if store.readonly:
        raise StoreError("replay --rebuild needs a writable database; this one is open read-only")
    state = State(origin=store.origin)
    clock = driver.reader_clock(now_us)
    # decoded, and signatures verified, in `workers` processes; every other rule checked here, in order
    log = parallel.decoded_log(store, workers)
    try:
        for item in log:
            driver.admit_item(state, item, clock)
            if progress is not None:
                progress(1)
    finally:
        log.close()  # stop the workers now, not whenever the generator is collected
    with store.transaction() as cursor:
        store.clear_views(cursor)
        cursor.execute(f"INSERT INTO custody_position (id, position) VALUES (1, {store.param})", [state.size])
        _write_rows(cursor, state, [], fresh=True)
        # what each key signed, from the fold (the same rows the statements would give, none kept)
        cursor.insert("custody_signed", _SIGNED_COLUMNS, [(kid, i, at, blob(list(serials)))
                                                          for kid, signed in state.signed.items()
                                                          for i, at, serials in signed])
    return state
