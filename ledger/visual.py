"""The visual report's data (DESIGN.md "The visual report"): everything the page shows, gathered in one place.

The numbers are the report documents themselves: `reports.build` for every report name, over the state that
`custody report NAME --json` reads for the same `--until` (`reports.state_of_store`), so the page and the JSON
agree by construction. The page adds what no report carries: the banner (the latest checkpoint and a fresh
verification of the whole ledger), findings per week, and every unit's chain of steps for its timeline.

Everything is bounded: at most `MAX_TIMELINE_UNITS` units get a timeline (a larger ledger's page says so
and keeps every count), and the verification lists at most `verify.MAX_FAILURES` failures.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import checkpoint as notes
from ledger import fold, reports
from ledger import verify as verification
from ledger.errors import LedgerError
from ledger.state import Finding, State
from ledger.statement import Statement
from ledger.store import Store
from ledger.values import MICROS_PER_DAY, format_time

MAX_TIMELINE_UNITS = 1_000_000  # a timeline per unit up to here: about 40 MB of page at 13-character serials
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday: days since the epoch + 3, mod 7, is 0 on Mondays
# where a step happened, by the first of these `data` fields it has (a new kind with none shows no place)
PLACE_FIELDS = ("site", "port_of_entry", "destination", "country")
_DETAIL_LIMIT = 200  # characters of one `data` value shown in a timeline
MONEY_FIELDS = frozenset({"entered_value", "duty"})  # DESIGN.md: `duty_paid` money, integer cents


@dataclass(frozen=True)
class Cosigner:
    """A signature line on the checkpoint other than the operator's: its key name and, for a well-formed
    tlog-cosignature/v1 line, the time it claims (not verified here: that needs the witness's key)."""

    name: str
    seconds: int | None  # the cosignature's timestamp: seconds since the epoch


@dataclass(frozen=True)
class CheckpointInfo:
    """The latest stored checkpoint the page covers."""

    size: int
    root: bytes
    operator: str  # the name on the operator's line (the origin)
    operator_verified: bool  # its signature verifies under the ledger's operator key
    cosigners: tuple[Cosigner, ...]
    note: str


@dataclass(frozen=True)
class Verification:
    """`verify` of the whole ledger when the page was made (genesis authorities trusted on first use)."""

    intact: bool
    log_size: int
    checks: tuple[str, ...]
    failures: tuple[verification.Failure, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Step:
    """One custody statement as a timeline draws it."""

    index: int
    kind: str
    at: int
    signer: str  # key id
    participant: str | None
    hash: bytes
    place: str
    details: tuple[tuple[str, str], ...]  # the statement's other `data` fields, as text


@dataclass(frozen=True)
class Timelines:
    """Every unit's chain of steps (those with `at` ≤ the report time). Units whose chains are the same
    statements (a board, a shipment) share one chain: `chain_of[i]` is the chain of `serials[i]`."""

    steps: Mapping[int, Step]
    chains: tuple[tuple[int, ...], ...]
    serials: tuple[str, ...]
    chain_of: tuple[int, ...]
    units: int  # units in the ledger as of the report time
    omitted: bool  # more than MAX_TIMELINE_UNITS units: no timelines


@dataclass(frozen=True)
class WeekCount:
    week: str  # the Monday (UTC) that starts it, YYYY-MM-DD
    code: str
    count: int


@dataclass(frozen=True)
class Page:
    """What the visual report shows, as of `as_of`."""

    origin: str | None
    as_of: int
    until: int | None
    made: int
    log_size: int  # statements the reports fold: each report's `log_size`
    ledger_size: int  # statements in the ledger when the page was made
    policy: str
    reports: Mapping[str, Mapping[str, Any]]  # name -> the `report NAME --json` document
    verification: Verification
    checkpoint: CheckpointInfo | None
    weeks: tuple[WeekCount, ...]
    timelines: Timelines


def build(store: Store, *, until: int | None, now_us: int, workers: int | None = None) -> Page:
    """The page's data for the ledger in `store`, as of `until` (default: now).

    One `verify` of the whole ledger gives the banner, and in the same pass each statement's time, every
    unit's chain and, with `until`, the fold of the statements with `at` ≤ `until` (what `replay --until`
    folds once the rules passed: `report --until` reads it). As of now and intact, verify's own fold is the
    state the reports read (the views hold the same fold) and its findings are theirs. So the log is read
    once; only a ledger that is not intact is read again, as `report` reads it.
    """
    log = _LogReader(until, store.origin)
    options = verification.Options(as_of=now_us, now=now_us, workers=workers, folded=log.statement)
    checked = verification.verify_store(store, options)
    found: list[Finding] | None = None
    if checked.intact and until is None:
        state, as_of, log_size = checked.state, now_us, checked.state.size
        found = reports.in_report_order(checked.findings)  # verify's: the log's and the timed, as of now_us
    elif checked.intact and until is not None:
        state, as_of, log_size = log.until_state, until, log.folded
    else:
        state, as_of, log_size = reports.state_of_store(store, until=until, now_us=now_us)
    documents = {name: (reports.compliance(state, as_of, log_size, found=found) if name == "compliance"
                        else reports.build(name, state, as_of, log_size)).document for name in reports.REPORTS}
    verified = Verification(intact=checked.intact, log_size=checked.log_size, checks=checked.checks,
                            failures=tuple(checked.failures), warnings=checked.warnings)
    findings = documents["compliance"]["findings"]
    return Page(origin=store.origin, as_of=as_of, until=until, made=now_us, log_size=log_size,
                ledger_size=store.size(), policy=state.policy.name, reports=documents, verification=verified,
                checkpoint=_latest_checkpoint(store, log_size, state.operator), weeks=_weeks(findings, log.times),
                timelines=log.timelines(state.participant_of, len(state.units)))


def week_of(at: int) -> str:
    """The Monday (UTC) of the week of `at`, as YYYY-MM-DD (the epoch itself for its first, partial week)."""
    days = at // MICROS_PER_DAY
    return format_time(max(days - (days + _EPOCH_WEEKDAY) % 7, 0) * MICROS_PER_DAY)[:10]


def _weeks(findings: Sequence[Mapping[str, Any]], times: Mapping[int, int]) -> tuple[WeekCount, ...]:
    """Findings per week of the statement that shows them, then per code in the report's order."""
    order = {code: i for i, code in enumerate(dict.fromkeys(f["code"] for f in findings))}
    per_statement = Counter(map(_INDEX_CODE, findings))  # many findings share a statement (a shipment's)
    seen: Counter[tuple[str, str]] = Counter()
    weeks: dict[int, str] = {}  # day -> its week: a ledger's statements fall on far fewer days
    for (index, code), n in per_statement.items():
        at = times.get(index)
        if at is None:
            continue
        day = at // MICROS_PER_DAY
        week = weeks.get(day) or weeks.setdefault(day, week_of(at))
        seen[week, code] += n
    return tuple(WeekCount(week, code, n) for (week, code), n in
                 sorted(seen.items(), key=lambda item: (item[0][0], order[item[0][1]])))


_INDEX_CODE = operator.itemgetter("index", "code")


def place_of(data: Mapping[str, Any]) -> str:
    """Where a step happened: its site (with its country, for an inspection or a location), port or
    destination."""
    for name in PLACE_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            country = data.get("country")
            if name == "site" and isinstance(country, str):
                return f"{value}, {country}"
            return value
    return ""


def dollars(cents: int) -> str:
    """Integer cents as dollars with two decimals and thousands separators: 5400000 → "$54,000.00"."""
    whole, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}${whole:,}.{rest:02d}"


def _text(name: str, value: Any) -> str:
    if name in MONEY_FIELDS and isinstance(value, int):
        return f"{dollars(value)} ({value} cents)"
    text = value.hex() if isinstance(value, bytes) else str(value)
    return text if len(text) <= _DETAIL_LIMIT else text[:_DETAIL_LIMIT - 1] + "…"


def _step(index: int, statement: Statement, participant: str | None) -> Step:
    data = statement.data
    place = place_of(data)
    shown = {name for name in PLACE_FIELDS if place and isinstance(data.get(name), str)} if place else set()
    details = tuple((k, _text(k, v)) for k, v in data.items() if k not in shown)
    return Step(index=index, kind=statement.kind, at=statement.at, signer=statement.signer,
                participant=participant, hash=statement.hash, place=place, details=details)


class _LogReader:
    """Collects, statement by statement in log order, each one's time and every unit's chain of steps (those
    with `at` ≤ `until`), and with `until` folds those statements into a state of their own. `verify` calls
    it with each statement that passed every rule: once all did, that state is what `replay --until` folds."""

    def __init__(self, until: int | None, origin: str | None) -> None:
        self.until = until
        self.times: dict[int, int] = {}
        self.steps: dict[int, Statement] = {}
        self.node_of: dict[str, int] = {}  # serial -> the last node of its chain so far
        self.nodes: list[tuple[int | None, int]] = []  # node -> (the node before it, a log index)
        self.until_state = State(origin=origin)  # with `until`: the statements dated up to then, folded
        self.folded = 0  # statements folded into `until_state`

    def statement(self, index: int, statement: Statement) -> None:
        self.times[index] = statement.at
        if self.until is not None:
            if statement.at > self.until:
                return
            fold.apply(self.until_state, index, statement)
            self.folded += 1
        if not statement.units:
            return
        self.steps[index] = statement
        # Units that moved together so far (a board, a shipment) have the same chain: one node for all of
        # them, extended by one new node per chain the statement's units had before it (a shipment of
        # 1,000 units from 125 boards: 125 nodes). Per unit, only lookups done whole by `map` and `update`.
        serials = statement.serials
        before = list(map(self.node_of.get, serials))
        nodes, after = self.nodes, {}
        for node in dict.fromkeys(before):
            after[node] = len(nodes)
            nodes.append((node, index))
        self.node_of.update(zip(serials, map(after.__getitem__, before), strict=True))

    def timelines(self, participant_of: Callable[[str], str | None], units: int) -> Timelines:
        if units > MAX_TIMELINE_UNITS:
            return Timelines(steps={}, chains=(), serials=(), chain_of=(), units=units, omitted=True)
        last = {node: n for n, node in enumerate(dict.fromkeys(self.node_of.values()))}  # in order of first use
        chains = []
        for node in last:
            links: list[int] = []
            at: int | None = node
            while at is not None:
                at, index = self.nodes[at]
                links.append(index)
            chains.append(tuple(reversed(links)))
        steps = {i: _step(i, s, participant_of(s.signer)) for i, s in self.steps.items()}
        return Timelines(steps=steps, chains=tuple(chains), serials=tuple(self.node_of),
                         chain_of=tuple(map(last.__getitem__, self.node_of.values())), units=units, omitted=False)


def _latest_checkpoint(store: Store, log_size: int, operator: bytes | None) -> CheckpointInfo | None:
    """The largest stored checkpoint of at most `log_size` statements, with who signed and cosigned it."""
    best: tuple[int, str] | None = None
    for _, size, note in store.checkpoints():
        if 0 < size <= log_size and (best is None or size >= best[0]):
            best = (size, note)
    if best is None or store.origin is None:
        return None
    return checkpoint_info(best[1], store.origin, operator)


def checkpoint_info(note: str, origin: str, operator: bytes | None) -> CheckpointInfo | None:
    """A checkpoint note of the ledger `origin` as the banner shows it: its operator's signature checked
    under `operator`, its other signature lines as cosigners. None for a malformed note (`verify`, in the
    banner, names it)."""
    try:
        parsed = notes.parse_note(note)
    except LedgerError:
        return None
    verified = False
    if operator is not None:
        try:
            notes.verify_operator(parsed, origin, operator)
            verified = True
        except LedgerError:
            verified = False
    operator_hash = notes.note_key_hash(origin, operator) if operator is not None else None
    cosigners = []
    for sig in parsed.signatures:
        if sig.name == origin and sig.key_hash == operator_hash:
            continue
        stamp = None
        if len(sig.payload) == notes.TIMESTAMP_SIZE + notes.ED25519_SIGNATURE_SIZE:
            stamp = int.from_bytes(sig.payload[:notes.TIMESTAMP_SIZE], "big")
        cosigners.append(Cosigner(sig.name, stamp))
    return CheckpointInfo(size=parsed.checkpoint.size, root=parsed.checkpoint.root, operator=origin,
                          operator_verified=verified, cosigners=tuple(cosigners), note=parsed.text)
