"""The writer: sign statements, check the hard rules and the pre-check, append atomically, retry.

A `Batch` holds a writer's partial state (the view rows its statements touch) and the stored events it
will write; `commit` writes the statements, all their unit links and the view rows they change in one
transaction (one commit). `record` is one statement in a batch, retried with backoff when another writer wins the race:
it re-reads the heads, re-runs the pre-check, restamps `at` (unless given) and re-signs.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.persistence import StoredEvent

from ledger import driver, fold, heads, limits, merkle, rules, views
from ledger.checkpoint import check_origin
from ledger.errors import (
    BadInput,
    ChainBroken,
    Conflict,
    EncodingInvalid,
    IntegrityError,
    LedgerError,
    OperatorKeyRefused,
    Refused,
    StoreError,
    ViolationsFound,
)
from ledger.keys import PrivateKey
from ledger.policy import duty_due, parse_policy
from ledger.state import DutyEntry, Finding, Period, State, UnitState, Volume
from ledger.statement import (
    MAX_WIRE_BYTES,
    ZERO_HASH,
    Statement,
    assemble,
    encode_body,
    key_id,
    signed_message,
    split_units,
    wire_size,
)
from ledger.store import Store
from ledger.store.codec import stored_log_event, stored_unit_link

WRITTEN_HEADS = 1 << 18  # units whose heads a batch remembers appending (about 40 MB at most)
MAX_ATTEMPTS = 25  # tries of `record` when other writers keep winning the race
RETRY_BUDGET_S = 60.0  # and the time it may spend on them
BACKOFF_FIRST_S, BACKOFF_CAP_S = 0.02, 1.0  # the wait after a lost race doubles up to the cap, ×[1, 2)


def now_us() -> int:
    return time.time_ns() // 1000


def sign_statement(key: PrivateKey, *, origin: str, kind: str, at: int,
                   units: Sequence[tuple[str, bytes]], data: Mapping[str, Any]) -> Statement:
    try:
        body = encode_body(origin=origin, kind=kind, at=at, signer=key.key_id, units=units, data=data)
    except EncodingInvalid as e:  # a value no statement can carry (text that is not UTF-8, a huge number)
        raise BadInput(f"cannot make the {kind} statement: {e.detail}") from e
    if wire_size(len(body)) > MAX_WIRE_BYTES:
        raise BadInput(f"the {kind} statement would be {wire_size(len(body)):,} bytes, more than the "
                       f"{MAX_WIRE_BYTES:,} a statement may hold: shorten its text")
    return assemble(body, key.sign(signed_message(body)))


class Batch:
    """Statements appended together: their events and view rows in one transaction."""

    def __init__(self, store: Store, clock: Callable[[], int] = now_us, *, after: Batch | None = None) -> None:
        """`after`: the batch this one follows in this process on the same store (a bulk append that starts
        a fresh partial state): the heads it appended are this batch's own, as if it had appended them (a
        view row that still says what was appended needs no reading of the log; one that another writer
        or an edit changed since is checked)."""
        self.store = store
        self.clock = clock
        checked, reached = views.catch_up(store, clock())
        self.start = views.position(store)
        if self.start != reached:
            raise Conflict("the views moved while this writer caught them up")
        self.state = views.load_partial(store, [], checked)  # the authority checked from the log
        head = store.head()
        self.size = head.index + 1 if head else 0
        if self.size != self.start:
            raise Conflict("the log moved while the views caught up")
        hashes = tuple(head.range) if head else ()
        self.range = merkle.CompactRange(self.size, hashes)
        self.stored_head: tuple[bytes, ...] = hashes  # the stored tree head this batch extends
        self.origin = store.origin
        self.statements: list[tuple[int, Statement]] = []
        self._events: list[Any] = []
        self._signed_loaded: set[str] = set()
        self._absent: set[str] = set()  # serials the views were asked for and lack
        self._absent_entries: set[str] = set()  # the same for duty entries
        # serial -> (head, at, index, links) this batch appended: its view row needs no reading of the log
        self._written: dict[str, tuple[bytes, int, int, int]] = (
            after._written if after is not None and after.store is store else {})
        self._now = datetime.now(UTC)

    def _ensure(self, statement: Statement) -> None:
        """Load the view rows `statement` touches that this batch has not loaded yet.

        Each unit and duty entry is asked for once per commit (a bulk append touches it again and again);
        only a revocation, which looks back at everything its key signed, takes the general path.
        """
        if statement.kind == "key_revoked":
            self._ensure_revocation(statement)
            return
        self._ensure_serials(statement.serials)
        if statement.kind == "duty_paid":
            entry = statement.data["entry"]
            if entry not in self.state.duty and entry not in self._absent_entries:
                for row in views.load_rows(self.store, "custody_duty", "entry", [entry]):
                    self.state.duty[row[0]] = DutyEntry.from_row(row)
                if entry not in self.state.duty:
                    self._absent_entries.add(entry)

    def _ensure_revocation(self, statement: Statement) -> None:
        fresh = views.load_partial(self.store, [statement], self.state)
        new = {serial: unit for serial, unit in fresh.units.items() if serial not in self.state.units}
        self._check_heads(new, list(new))
        self.state.units.update(new)
        for entry, duty in fresh.duty.items():
            self.state.duty.setdefault(entry, duty)
        for kid, signed in fresh.signed.items():
            if kid not in self._signed_loaded:  # stored rows, then what this batch signed since
                self._signed_loaded.add(kid)
                stored = {row[0] for row in signed}
                self.state.signed[kid] = signed + [r for r in self.state.signed.get(kid, [])
                                                   if r[0] not in stored]

    def _ensure_serials(self, serials: Sequence[str]) -> None:
        units, absent = self.state.units, self._absent
        missing = [s for s in serials if s not in units and s not in absent]
        if missing:
            loaded = {row[0]: UnitState.from_row(row)
                      for row in views.load_rows(self.store, "custody_units", "serial", missing)}
            written = self._written
            unchecked = [s for s in missing if s not in loaded or written.get(s) != _head_of(loaded[s])]
            self._check_heads({s: loaded[s] for s in unchecked if s in loaded}, unchecked)
            units.update(loaded)
            absent.update(s for s in missing if s not in units)

    def _check_heads(self, rows: Mapping[str, UnitState], serials: Collection[str]) -> None:
        """Rely on no unit's view row that is not its head in the log (`heads.check_rows`)."""
        try:
            heads.check_rows(self.store, rows, serials, self.size, self.state)
        except IntegrityError as e:
            e.detail = f"{e.detail}; {driver.NOT_VERIFIED}"
            raise

    def head(self, serial: str) -> bytes:
        self._ensure_serials([serial])
        unit = self.state.units.get(serial)
        return unit.head if unit else ZERO_HASH

    def heads(self, serials: Sequence[str]) -> list[tuple[str, bytes]]:
        self._ensure_serials(serials)
        return [(s, self.state.units[s].head if s in self.state.units else ZERO_HASH) for s in serials]

    def check(self, statement: Statement) -> None:
        """The hard rules for `statement` as the next log entry; raises the broken rule."""
        self._ensure(statement)
        rules.check(self.state, statement, self.size, self.clock())

    def check_limits(self, statement: Statement) -> None:
        """Refuse what an honest writer never logs though the hard rules allow it: the operator's key
        registered to a participant (`OperatorKeyRefused`: it signs checkpoints only, DESIGN.md "Who may
        sign"); amounts beyond `limits.MAX_STATEMENT_CENTS`, or an entry's totals beyond
        `limits.MAX_TOTAL_CENTS` (`BadInput`)."""
        if statement.kind == "participant_registered" and statement.data["key"] == self.state.operator:
            raise OperatorKeyRefused(f"key {key_id(statement.data['key'])} is the log operator's: the "
                                     "operator's key signs checkpoints only, never statements; register "
                                     "another key")
        limits.check_amounts(statement.kind, statement.data)
        if statement.kind != "duty_paid":
            return
        self._ensure(statement)
        data = statement.data
        entry = self.state.duty.get(data["entry"]) or DutyEntry(data["entry"])
        limits.check_totals(entry.entry, {
            "entered value": entry.entered_value + data["entered_value"],
            "duty due": entry.duty_due + duty_due(self.state.policy, data["entered_value"]),
            "duty paid": entry.paid + data["duty"]})

    def preview(self, statement: Statement) -> list[Finding]:
        """The findings `statement` would add, computed on copies: the pre-check."""
        self._ensure(statement)
        units, duty = self.state.units, self.state.duty
        # copies of just the rows the fold may change: this statement's units and duty entry, the customers
        entry = statement.data.get("entry") if statement.kind == "duty_paid" else None
        scratch = State(size=self.size, origin=self.state.origin, operator=self.state.operator,
                        policy=self.state.policy, keys=self.state.keys,
                        participants=self.state.participants,
                        customers=copy.deepcopy(self.state.customers),
                        units={s: UnitState.from_row(units[s].to_row()) for s in statement.serials
                               if s in units},
                        duty={entry: DutyEntry.from_row(duty[entry].to_row())} if entry in duty else {},
                        periods={k: Period.from_row(p.to_row()) for k, p in self.state.periods.items()},
                        volume={m: Volume.from_row(v.to_row()) for m, v in self.state.volume.items()}
                        if statement.kind == "re_exported" else {})
        return fold.apply(scratch, self.size, statement)

    def add(self, statement: Statement, *, verified: bytes | None = None) -> list[Finding]:
        """Check and fold `statement` as the next entry and queue its events; `verified` is the key its
        signature was just checked under (by `check`), so that it is not checked twice."""
        self._ensure(statement)
        index = self.size
        found = driver.admit(self.state, index, statement, self.clock(), verified=verified)
        if index == 0:
            self.origin = self.state.origin
        self.range = self.range.append(merkle.leaf_hash(statement.wire))
        assert self.origin is not None
        self._events.append(stored_log_event(self.origin, index, statement.wire, list(self.range.hashes),
                                             self._now))
        written = self._written
        if len(written) + len(statement.serials) > WRITTEN_HEADS:
            written.clear()  # bounded memory: the units met before are checked against the log again
        for serial in statement.serials:
            unit = self.state.units[serial]
            self._events.append(stored_unit_link(self.origin, serial, unit.links, index, statement.hash,
                                                 statement.at, self._now))
            written[serial] = _head_of(unit)
        self.statements.append((index, statement))
        self.size += 1
        return found

    def commit(self, seal: Seal | None = None) -> None:
        """Write the queued statements and their view rows, in one transaction (one commit): all or nothing.
        `seal(batch)`, if given, is called in that transaction once they are in, and the events it returns
        (a checkpoint that covers them, `tree_head.seal`) are stored in it too. A store without views
        tables gets the statements alone (the next writer's `views.catch_up` makes the views).

        The views' position is checked in the transaction: were it not where this batch folded from (no
        writer moves it without appending first, which this insert would have clashed with), the rows are
        left to the next writer's catch-up, as when another writer catches them up first."""
        if not self.statements:
            return
        with_views = self.store.views_exist()

        def then(cursor: Any) -> Sequence[StoredEvent]:
            if with_views:
                with contextlib.suppress(Conflict):  # raised before anything is written
                    views.save_in(cursor, self.store.param, self.state, self.statements, self.start)
            return seal(self) if seal is not None else ()

        self.store.write(self._events, then=then)
        self.start = self.size
        self.statements, self._events = [], []
        # The views now hold these rows: forget them, so a long bulk append neither rewrites them at every
        # commit nor keeps them all in memory (what a later statement touches is loaded again).
        self.state.findings = []
        self.state.units, self.state.duty, self.state.signed = {}, {}, {}
        self._signed_loaded, self._absent, self._absent_entries = set(), set(), set()
        self._now = datetime.now(UTC)


def _head_of(unit: UnitState) -> tuple[bytes, int, int, int]:
    """What `heads.check_rows` compares of a unit's row with the log."""
    return unit.head, unit.at, unit.index, unit.links


Seal = Callable[[Batch], Sequence[StoredEvent]]  # what a batch's transaction stores beside its statements


@dataclass(frozen=True)
class Recorded:
    """What `record` logged: `statement` at `index`, or, when the units did not fit in one statement,
    `statements` (the first is `statement`) at `index`, `index` + 1, …, in one transaction."""

    index: int
    statement: Statement
    findings: tuple[Finding, ...]
    skipped: tuple[str, ...]
    attempts: int
    statements: tuple[Statement, ...] = ()

    def __post_init__(self) -> None:
        if not self.statements:
            object.__setattr__(self, "statements", (self.statement,))


def us_volume_data(model: str, start: int, until: int, us_units: int) -> dict[str, Any]:
    """The `data` of a `us_volume_reported` declaration; `BadInput` for an empty period or no model."""
    if not model:
        raise BadInput("--model must not be empty")
    if until <= start:
        raise BadInput("--until must be after --from (the period [from, until) would be empty)")
    if us_units < 0:
        raise BadInput(f"--units must be at least 0, not {us_units}")
    return {"model": model, "from": start, "until": until, "us_units": us_units}


def _runs(store: Store, key: PrivateKey, kind: str, data: Mapping[str, Any],
          serials: Sequence[str]) -> list[list[str]]:
    assert store.origin is not None
    return runs_of(store.origin, key, kind, data, serials)


def runs_of(origin: str, key: PrivateKey, kind: str, data: Mapping[str, Any],
            serials: Sequence[str]) -> list[list[str]]:
    """`serials` in runs that each fit one statement (DESIGN.md "Statements", Size); `duty_paid`, whose
    money cannot be split, and data too large for even one unit are `BadInput`."""
    if not serials:
        return [[]]
    runs = split_units(origin=origin, kind=kind, signer=key.key_id, data=data, serials=serials)
    if not runs:
        raise BadInput(f"a {kind} statement with this data does not fit {MAX_WIRE_BYTES:,} bytes "
                       "even with one unit: shorten the text fields")
    if len(runs) > 1 and kind == "duty_paid":
        raise BadInput(f"{len(serials):,} units do not fit in one duty_paid statement of at most "
                       f"{MAX_WIRE_BYTES:,} bytes: {len(runs[0]):,} fit; an entry's money cannot be split "
                       "across statements, so record them as several entries")
    return runs


@dataclass(frozen=True)
class Rejected:
    """A statement signed elsewhere that `append_signed` refused: the error, and for a `chain` failure the
    heads of its units as they stood (None: the unit has no chain)."""

    statement: Statement
    error: LedgerError
    heads: tuple[tuple[str, bytes | None], ...] = ()


def record(store: Store, key: PrivateKey, kind: str, data: Mapping[str, Any], serials: Sequence[str] = (),
           *, at: int | None = None, mode: str = "refuse", clock: Callable[[], int] = now_us,
           attempts: int = MAX_ATTEMPTS) -> Recorded:
    """Append one statement by `key`; `mode` is "refuse", "allow" or "skip" for the pre-check.

    Units that do not fit in one statement go in several, each with the same data, in one transaction
    (all or nothing); `duty_paid` is refused instead (`_runs`). A writer that loses the race (`Conflict`)
    starts again from the heads as they now are: it re-runs the pre-check, restamps `at` (unless given)
    and re-signs, after a jittered exponential backoff, and gives up after `attempts` tries or
    `RETRY_BUDGET_S` seconds. A refusal after a lost race says so: the unit moved on (someone else
    recorded the step first).
    """
    if not store.opened or store.origin is None:
        raise StoreError("the ledger is not initialised (run `custody init`)")
    limits.check_amounts(kind, data)
    runs = _runs(store, key, kind, data, serials)
    started = time.monotonic()
    delay = BACKOFF_FIRST_S
    raced = False  # an earlier attempt passed every check and lost the race
    for attempt in range(1, attempts + 1):
        checked = False
        try:
            batch = Batch(store, clock)
            first = batch.size
            statements: list[Statement] = []
            found: list[Finding] = []
            skipped: list[str] = []
            refused: list[Finding] = []
            for run in runs:
                chosen = list(run)
                statement: Statement | None = None
                while True:
                    statement = sign_statement(key, origin=store.origin, kind=kind,
                                               at=at if at is not None else clock(),
                                               units=batch.heads(chosen), data=data)
                    batch.check(statement)
                    batch.check_limits(statement)
                    findings = batch.preview(statement) if statement.units else []
                    if not findings or mode == "allow":
                        break
                    bad = {f.serial for f in findings}
                    if mode == "refuse":
                        raise ViolationsFound(_describe(findings), tuple(findings),
                                              some_clean=bool(set(chosen) - bad))
                    skipped += [s for s in chosen if s in bad]
                    chosen = [s for s in chosen if s not in bad]
                    if not chosen:  # every unit of this run violates: no statement for it
                        refused += findings
                        statement = None
                        break
                if statement is not None:
                    found += batch.add(statement)
                    statements.append(statement)
            if not statements:
                raise ViolationsFound(_describe(refused), tuple(refused), some_clean=False)
            checked = True
            _commit(store, batch, statements[-1], hint=statements[0])
            return Recorded(statement=statements[0], index=first, findings=tuple(found),
                            skipped=tuple(skipped), attempts=attempt, statements=tuple(statements))
        except Conflict as e:
            raced = raced or checked
            elapsed = time.monotonic() - started
            if attempt == attempts or elapsed + delay > RETRY_BUDGET_S:
                tries = f"{attempt} attempt{'s' if attempt > 1 else ''}"
                raise Conflict(f"gave up after {tries} in {elapsed:.1f} s: other writers kept appending "
                               f"first ({e.detail}); try again") from e
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, BACKOFF_CAP_S)
        except ViolationsFound as e:
            if raced:
                raise ViolationsFound(f"another writer appended first, and now {e.detail}", e.findings,
                                     some_clean=e.some_clean) from e
            raise
        except IntegrityError as e:
            if raced:
                e.detail = f"{e.detail} (another writer appended first)"
            raise
    raise AssertionError("unreachable")


def append_signed(store: Store, statements: Sequence[tuple[Statement, str]], *,
                  clock: Callable[[], int] = now_us, attempts: int = MAX_ATTEMPTS,
                  seal: Seal | None = None) -> list[Recorded | Rejected]:
    """Append statements signed elsewhere (the service's submissions), in order, in one transaction.

    Each is (statement, findings): the hard rules and the writer's bounds (`Batch.check_limits`, as
    `record` applies them) apply to all; with findings "refuse" a custody step that would add findings is
    refused (`ViolationsFound`, their index the log size at the attempt) as `record`'s pre-check refuses
    it. A refused statement is left out and its error returned in its place; the others are appended. A
    lost race (`Conflict`) redoes the whole group on the heads as they now are; nothing is re-signed, so a
    statement whose unit moved on is then refused (`chain`). `seal` (see `Batch.commit`) stores a
    checkpoint of the group in its transaction.
    """
    started = time.monotonic()
    delay = BACKOFF_FIRST_S
    serials = [s for statement, _ in statements for s in statement.serials]
    for attempt in range(1, attempts + 1):
        try:
            batch = Batch(store, clock)
            # the units' view rows in one read for the whole group, not one per statement; a unit whose row
            # is refused (`heads.check_rows`) is met again, and refused, by its own statement's check below
            with contextlib.suppress(IntegrityError, Refused):
                batch.heads(serials)
            out: list[Recorded | Rejected] = []
            last: Statement | None = None
            for statement, findings in statements:
                try:
                    batch.check(statement)
                    batch.check_limits(statement)
                    if findings == "refuse" and statement.units:
                        found = batch.preview(statement)
                        if found:
                            raise ViolationsFound(_describe(found), tuple(found))
                    signer = batch.state.keys.get(statement.signer)
                    added = batch.add(statement, verified=signer.public if signer is not None else None)
                except IntegrityError as e:
                    heads: tuple[tuple[str, bytes | None], ...] = ()
                    if isinstance(e, ChainBroken):
                        units = batch.state.units
                        heads = tuple((s, units[s].head if s in units else None) for s in statement.serials)
                    out.append(Rejected(statement, e, heads))
                    continue
                except Conflict:
                    raise  # the log moved: the whole group is redone
                except (Refused, BadInput) as e:  # the pre-check's findings, or beyond the writer's bounds
                    out.append(Rejected(statement, e))
                    continue
                out.append(Recorded(batch.size - 1, statement, tuple(added), (), attempt))
                last = statement
            if last is not None:
                _commit(store, batch, last, seal=seal)
            return out
        except Conflict as e:
            elapsed = time.monotonic() - started
            if attempt == attempts or elapsed + delay > RETRY_BUDGET_S:
                raise Conflict(f"gave up after {attempt} attempts in {elapsed:.1f} s: other writers kept "
                               f"appending first ({e.detail})") from e
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, BACKOFF_CAP_S)
    raise AssertionError("unreachable")


def _commit(store: Store, batch: Batch, statement: Statement, *, hint: Statement | None = None,
            seal: Seal | None = None) -> None:
    """Commit `batch`, whose last statement is `statement`: recorded once the log holds it at its index.
    A failure that leaves this unknown names a unit of `hint` (default `statement`) to check.

    What fails after the events are in (the views, which the next writer catches up) or hides that they
    are in (a lost acknowledgement, so the driver's retry collides with its own insert) is no failure.
    """
    index = batch.size - 1
    try:
        batch.commit(seal)
    except (Conflict, StoreError) as e:
        try:
            landed = any(event.wire == statement.wire for event in store.log(index, index + 1))
        except StoreError as lost:
            first = e if isinstance(e, StoreError) else lost
            named = hint or statement
            where = f" (check with `custody history {named.serials[0]}`)" if named.serials else ""
            raise StoreError(f"{first.detail}; statement {statement.hash.hex()} may or may not have been "
                             f"recorded{where}") from e
        if not landed:
            raise


def _describe(findings: Sequence[Finding]) -> str:
    by_code: dict[str, list[str]] = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f.serial or "-")
    parts = [f"{code} ({len(s)}: {', '.join(s[:5])}{', …' if len(s) > 5 else ''})"
             for code, s in sorted(by_code.items())]
    return "the step would add findings: " + "; ".join(parts)


def genesis(key: PrivateKey, *, origin: str, co_authorities: Sequence[bytes], operator: bytes,
            policy_text: str, at: int) -> Statement:
    """The signed genesis `ledger_opened` (`key` is the first authority), or `BadInput` for anything that
    would make a bad one: an origin no checkpoint can carry (`checkpoint.check_origin`), an operator that
    is also an authority (DESIGN.md: the operator's key signs checkpoints only), a policy that is not one,
    a statement too large. It touches no store: `init` calls it before it creates anything."""
    check_origin(origin)
    authorities = [key.public, *[k for k in co_authorities if k != key.public]]
    if operator in authorities:
        raise BadInput(f"the operator key {key_id(operator)} is also an authority's: the operator's key signs "
                       "checkpoints only; give the log operator a key of its own")
    parse_policy(policy_text)
    return sign_statement(key, origin=origin, kind="ledger_opened", at=at, units=(),
                          data={"authorities": authorities, "operator": operator, "policy": policy_text})


def open_ledger(store: Store, key: PrivateKey, *, origin: str, co_authorities: Sequence[bytes],
                operator: bytes, policy_text: str, at: int | None = None,
                clock: Callable[[], int] = now_us) -> Recorded:
    """Append the genesis `ledger_opened` (see `genesis`) to an empty store; `key` is the first authority."""
    if store.opened:
        raise Refused(f"{store.url} already holds a ledger ({store.origin})")
    statement = genesis(key, origin=origin, co_authorities=co_authorities, operator=operator,
                        policy_text=policy_text, at=at if at is not None else clock())
    batch = Batch(store, clock)
    batch.add(statement)
    batch.commit()
    return Recorded(index=0, statement=statement, findings=(), skipped=(), attempts=1)
