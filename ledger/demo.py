"""The demo scenario: a season of H200 shipments to China, with a realistic handful of violations.

Keys for every party, a fresh ledger, N units taken through all six steps in realistic batches (boards
of 8 from TSMC, shipments of up to 1,000 through a U.S. port, lab and customs, re-exported under licence
to two approved customers, whose location the customers attest a week after receipt), with times spread
over the past weeks in increasing order (the first shipment months earlier). Into that clean flow it
injects a board that skipped inspection, an under-paid customs entry, a diversion, a customer over its
cap and a Blackwell board; a board that fails inspection and is scrapped (one of its units later
"reappears" in China), units withdrawn to the U.S. market, a re-export under the other customer's
licence, one by way of Singapore, an entry under the wrong tariff line, a location attested from the wrong
country, the first shipment's lapsed attestations and a U.S. volume declaration that China-bound exports
exceed; then it verifies. Statements go through `append.Batch` (the
writer's own checks and fold), committed every few hundred, so a demo of 100,000 units takes seconds.
The plan is a pure function of N and a seed; only the keys (and so the signatures) are fresh.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import append, keys, tree_head
from ledger import verify as verification
from ledger.errors import BadInput
from ledger.policy import DEFAULT_POLICY_TEXT, default_policy, duty_due
from ledger.store import Store
from ledger.values import MICROS_PER_DAY

ORIGIN = "custody.example/h200-cn-demo"
DEFAULT_UNITS = 240
MAX_UNITS = 10_000_000  # a few GiB and minutes; more is a typo, not a demo
BOARD = 8  # GPUs per HGX board: TSMC's fabricated statements cover one board
MAX_SHIPMENT = 1_000
COMMIT_EVERY = 300  # statements per transaction
MODEL = "H200-SXM5-141GB"
BLACKWELL = "B200-SXM6-192GB"
UNIT_VALUE_CENTS = 2_700_000  # entered value per unit: $27,000
UNDERPAID_RATE_BP = 1_500  # the broker applied 15 % instead of 25 %
HOUR = 3_600 * 1_000_000
DAY = MICROS_PER_DAY

# (id, name, roles, country); the key files are named after the id
PARTICIPANTS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("tsmc", "Taiwan Semiconductor Manufacturing Co.", ("fab",), "TW"),
    ("expeditors", "Expeditors International (air freight)", ("carrier",), "US"),
    ("uslab", "Qualified third-party test lab, San Jose", ("inspector",), "US"),
    ("cbp", "U.S. Customs and Border Protection", ("customs",), "US"),
    ("nvidia", "NVIDIA Corporation", ("exporter",), "US"),
    ("alibaba", "Alibaba Cloud", ("customer",), "CN"),
    ("bytedance", "ByteDance", ("customer",), "CN"),
)
KEY_NAMES = ("authority", "operator", *(p[0] for p in PARTICIPANTS))
LICENSES = {"alibaba": "BIS-D-2026-000114", "bytedance": "BIS-D-2026-000131"}
SITES = {"alibaba": "Hangzhou DC-3", "bytedance": "Ulanqab DC-1"}
PORTS = ("LAX", "SFO", "ANC", "DFW")

HTS_LINE = "9903.79.01"  # the Section 232 line for these chips (the policy's hts_lines)
WRONG_HTS_LINE = "9903.88.15"  # a Section 301 line: the broker picked the wrong one
IMPORTER = "NVIDIA Corporation"
LAPSED_DAYS = 130  # the first shipment, received this long ago and never attested since
ATTEST_AFTER = 7 * MICROS_PER_DAY  # customers attest where their units are a week after receipt

# The injected violations and story lines, in the order they are kept while N allows (later ones are
# given up first when N is too small for all of them).
SKIPPED_INSPECTION, UNDERPAID_DUTY, PROHIBITED_MODEL, DIVERSION, CAP_EXCEEDED = (
    "SKIPPED_INSPECTION", "UNDERPAID_DUTY", "PROHIBITED_MODEL", "DIVERSION", "CAP_EXCEEDED")
SCRAPPED, WITHDRAWN, LICENSE_MISMATCH, DESTINATION_MISMATCH, WRONG_TARIFF_LINE, LOCATION_MISMATCH = (
    "SCRAPPED", "WITHDRAWN", "LICENSE_MISMATCH", "DESTINATION_MISMATCH", "WRONG_TARIFF_LINE",
    "LOCATION_MISMATCH")
AFTER_TERMINAL, VOLUME_RATIO_EXCEEDED, ATTESTATION_OVERDUE = (
    "AFTER_TERMINAL", "VOLUME_RATIO_EXCEEDED", "ATTESTATION_OVERDUE")
INJECTED = (PROHIBITED_MODEL, SKIPPED_INSPECTION, UNDERPAID_DUTY, DIVERSION, CAP_EXCEEDED, SCRAPPED,
            WITHDRAWN, LICENSE_MISMATCH, DESTINATION_MISMATCH, WRONG_TARIFF_LINE, LOCATION_MISMATCH)
# what the story shows besides the fates above: codes that follow from them or from the season
STORY = (AFTER_TERMINAL, VOLUME_RATIO_EXCEEDED, ATTESTATION_OVERDUE)
# story lines that are no violation: the code a `Violation` of them carries is "" (none expected)
CLEAN_STORIES = (SCRAPPED, WITHDRAWN)
MIN_UNITS_FOR_ALL = 80  # with fewer units, some of the story is given up
CHECKPOINT_FILE = "checkpoint.txt"  # beside custody.db: the operator's checkpoint of the demo's log


@dataclass(frozen=True)
class Violation:
    """One injected violation: the code it must produce, the units concerned, what happened."""

    code: str
    serials: tuple[str, ...]
    what: str


@dataclass(frozen=True)
class _Step:
    at: int
    signer: str
    kind: str
    serials: tuple[str, ...]
    data: Mapping[str, Any]


@dataclass
class Plan:
    """Every statement of the demo, in log order, and what was injected."""

    units: int
    shipments: int
    admin_at: int
    caps: dict[str, int]
    steps: list[_Step] = field(default_factory=list)
    injected: list[Violation] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Statements the demo signs: genesis, registrations, approvals and the custody steps."""
        return 1 + len(PARTICIPANTS) + len(self.caps) + len(self.steps)


@dataclass(frozen=True)
class DemoResult:
    directory: Path
    db: Path
    keys: Path
    origin: str
    units: int
    shipments: int
    statements: int
    caps: Mapping[str, int]
    injected: tuple[Violation, ...]
    report: verification.Report
    checkpoint: Path


def _fates(n: int) -> list[str]:
    """Each unit's fate ("" for a clean one): violations spread through the list, over-cap units last."""
    board_size = BOARD if n >= 10 * BOARD else max(1, n // 10)
    sizes = {PROHIBITED_MODEL: board_size, SKIPPED_INSPECTION: board_size, UNDERPAID_DUTY: board_size,
             DIVERSION: 2 if n >= 20 else 1, CAP_EXCEEDED: 3 if n >= 40 else 1, SCRAPPED: board_size,
             WITHDRAWN: 4 if n >= 80 else 1, LICENSE_MISMATCH: 2 if n >= 80 else 1,
             DESTINATION_MISMATCH: 2 if n >= 80 else 1, WRONG_TARIFF_LINE: 2 if n >= 80 else 1,
             LOCATION_MISMATCH: 1}
    chosen: list[str] = []
    used = 0
    for code in INJECTED:  # keep at least one clean unit; give up the later violations first
        if used + sizes[code] <= n - 1:
            chosen.append(code)
            used += sizes[code]
    fates = [""] * n
    spread = [c for c in chosen if c != CAP_EXCEEDED]
    gap = (n - used) // (len(spread) + 1)
    cursor = 0
    for code in spread:
        cursor += gap
        for i in range(cursor, cursor + sizes[code]):
            fates[i] = code
        cursor += sizes[code]
    if CAP_EXCEEDED in chosen:  # the last units consigned to the capped customer
        for i in range(n - sizes[CAP_EXCEEDED], n):
            fates[i] = CAP_EXCEEDED
    return fates


def _boards(serials: Sequence[str], fates: Sequence[str]) -> list[list[str]]:
    """Boards of 8, never mixing units of different fates (a Blackwell board is a board of its own)."""
    boards: list[list[str]] = []
    previous = None
    for serial, fate in zip(serials, fates, strict=True):
        if boards and len(boards[-1]) < BOARD and fate == previous:
            boards[-1].append(serial)
        else:
            boards.append([serial])
        previous = fate
    return boards


def _shipments(boards: list[list[str]], n: int, rng: random.Random) -> list[list[list[str]]]:
    """Consecutive boards grouped into shipments of about a fifth of the units, at most 1,000."""
    target = min(MAX_SHIPMENT, max(BOARD, n // 5))
    shipments: list[list[list[str]]] = []
    at = 0
    while at < len(boards):
        size = min(MAX_SHIPMENT, max(BOARD, round(target * rng.uniform(0.6, 1.4))))
        shipment = [boards[at]]
        at += 1
        while at < len(boards) and sum(map(len, shipment)) + len(boards[at]) <= size:
            shipment.append(boards[at])
            at += 1
        shipments.append(shipment)
    return shipments


class _Planner:
    """Builds one shipment's statements at a time; `steps` is sorted into log order at the end."""

    def __init__(self, n: int, now_us: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = now_us
        self.serials = [f"1652224{i:06d}" for i in range(1, n + 1)]
        fates = _fates(n)
        self.fate = dict(zip(self.serials, fates, strict=True))
        self.shipments = _shipments(_boards(self.serials, fates), n, self.rng)
        self.first, last = now_us - 56 * DAY, now_us - 12 * DAY
        self.spacing = (last - self.first) // max(1, len(self.shipments) - 1)
        self.jitter = max(1, min(HOUR, self.spacing // 8))
        self.steps: list[tuple[int, int, _Step]] = []
        self.consigned = {"alibaba": 0, "bytedance": 0}
        self.injected: list[Violation] = []
        self.lot = 2601_0000
        self.exports: list[tuple[int, str]] = []  # (at, serial) of the H200s re-exported to China
        self.lapsed: list[str] = []  # received in the first shipment, never attested since

    def start_of(self, k: int) -> int:
        """When shipment `k` leaves for the U.S.; the first one long before the others (when there are
        several), so that its units' location attestations have lapsed by now."""
        if k == 0 and len(self.shipments) > 1:
            return self.now - LAPSED_DAYS * DAY
        return self.first + k * self.spacing

    def found(self, code: str, serials: Sequence[str], what: str) -> None:
        if serials:
            self.injected.append(Violation(code, tuple(serials), what))

    def add(self, at: int, signer: str, kind: str, units: Sequence[str], data: Mapping[str, Any]) -> None:
        self.steps.append((at, len(self.steps), _Step(at, signer, kind, tuple(units), data)))

    def later(self, at: int) -> int:
        return at + self.rng.randrange(self.jitter)

    def shipment(self, k: int, shipment: list[list[str]]) -> None:
        start, fate = self.start_of(k), self.fate
        units = [s for board in shipment for s in board]
        for j, board in enumerate(shipment):
            self.lot += 1
            model = BLACKWELL if fate[board[0]] == PROHIBITED_MODEL else MODEL
            self.add(start - 6 * DAY + j * 37 * 60_000_000, "tsmc", "fabricated", board,
                     {"model": model, "site": "Fab 18, Tainan", "lot": f"N4P-{self.lot}"})
        waybill = f"{self.rng.choice(('180', '695', '297'))}-{self.rng.randrange(10**7, 10**8)}"
        self.add(self.later(start), "expeditors", "shipped_to_us", units,
                 {"port_of_entry": PORTS[k % len(PORTS)], "waybill": waybill})
        inspected = [u for u in units if fate[u] not in (SKIPPED_INSPECTION, SCRAPPED)]
        if inspected:
            self.add(self.later(start + 2 * DAY), "uslab", "inspected", inspected,
                     {"result": "pass", "site": "San Jose, CA", "country": "US",
                      "report": f"QTL-26-{k + 1:05d}"})
        self.scrap(k, start, [u for u in units if fate[u] == SCRAPPED])
        units = [u for u in units if fate[u] != SCRAPPED]
        self.duty(k, start + 3 * DAY, [u for u in units if fate[u] not in (UNDERPAID_DUTY, WRONG_TARIFF_LINE)],
                  None)
        self.duty(k, start + 3 * DAY + 2 * HOUR, [u for u in units if fate[u] == UNDERPAID_DUTY],
                  UNDERPAID_RATE_BP)
        self.duty(k, start + 3 * DAY + 3 * HOUR, [u for u in units if fate[u] == WRONG_TARIFF_LINE], None,
                  WRONG_HTS_LINE)
        withdrawn = [u for u in units if fate[u] == WITHDRAWN]
        if withdrawn:
            self.add(self.later(start + 5 * DAY), "nvidia", "withdrawn", withdrawn,
                     {"reason": "sold to a U.S. cloud provider instead", "destination": "US"})
            self.found(WITHDRAWN, withdrawn, "withdrawn from the export flow to the U.S. market "
                                             "(no finding: never overdue)")
        units = [u for u in units if fate[u] != WITHDRAWN]
        default = "bytedance" if k % 4 == 2 else "alibaba"
        groups: dict[str, list[str]] = {"alibaba": [], "bytedance": []}
        for u in units:
            to = ("bytedance" if fate[u] == CAP_EXCEEDED else
                  "alibaba" if fate[u] in (DIVERSION, LICENSE_MISMATCH, DESTINATION_MISMATCH) else default)
            groups[to].append(u)
        for offset, (consignee, group) in enumerate(groups.items()):
            if group:
                self.consign(k, start + 6 * DAY + offset * HOUR, consignee, group)

    def scrap(self, k: int, start: int, scrapped: list[str]) -> None:
        """A board that fails the lab's inspection and is destroyed there; one of its units "reappears"
        later, attested in China by a customer."""
        if not scrapped:
            return
        self.add(self.later(start + 2 * DAY + 2 * HOUR), "uslab", "inspected", scrapped,
                 {"result": "fail", "site": "San Jose, CA", "country": "US", "report": f"QTL-26-{k + 1:05d}-F"})
        self.add(start + 2 * DAY + 8 * HOUR, "uslab", "destroyed", scrapped,
                 {"method": "shredded", "site": "San Jose, CA", "certificate": f"COD-26-{k + 1:05d}"})
        self.found(SCRAPPED, scrapped, "a board that failed inspection, destroyed at the lab "
                                       "(no finding: never overdue)")
        ghost = scrapped[:1]
        self.add(start + 9 * DAY, "bytedance", "located", ghost,
                 {"site": SITES["bytedance"], "country": "CN", "method": "network-latency"})
        self.found(AFTER_TERMINAL, ghost, "a scrapped unit attested in China afterwards")

    def duty(self, k: int, at: int, group: list[str], rate_bp: int | None, hts: str = HTS_LINE) -> None:
        if not group:
            return
        value = len(group) * UNIT_VALUE_CENTS
        due = duty_due(default_policy(), value) if rate_bp is None else -(-value * rate_bp // 10_000)
        number = 2_604_000 + 3 * k + (rate_bp is not None) + 2 * (hts != HTS_LINE)
        entry = f"NV7-{number:07d}-{self.rng.randrange(10)}"
        self.add(self.later(at), "cbp", "duty_paid", group,
                 {"entry": entry, "entered_value": value, "duty": due, "hts": hts, "importer": IMPORTER,
                  "origin_country": "TW"})
        if rate_bp is not None:
            self.found(UNDERPAID_DUTY, group, f"customs entry {entry} paid at 15 % instead of 25 %")
        if hts != HTS_LINE:
            self.found(WRONG_TARIFF_LINE, group, f"customs entry {entry} under tariff line {hts}, not {HTS_LINE}")

    def consign(self, k: int, at: int, consignee: str, group: list[str]) -> None:
        self.consigned[consignee] += len(group)
        fate = self.fate
        runs = {"": [u for u in group if fate[u] not in (LICENSE_MISMATCH, DESTINATION_MISMATCH)],
                LICENSE_MISMATCH: [u for u in group if fate[u] == LICENSE_MISMATCH],
                DESTINATION_MISMATCH: [u for u in group if fate[u] == DESTINATION_MISMATCH]}
        for offset, (code, run) in enumerate(runs.items()):
            if not run:
                continue
            other = "bytedance" if consignee == "alibaba" else "alibaba"
            license_ = LICENSES[other] if code == LICENSE_MISMATCH else LICENSES[consignee]
            destination = "SG" if code == DESTINATION_MISMATCH else "CN"
            when = self.later(at + offset * 10 * 60_000_000)
            self.add(when, "nvidia", "re_exported", run,
                     {"consignee": consignee, "license": license_, "destination": destination})
            if destination == "CN":
                self.exports += [(when, u) for u in run if fate[u] != PROHIBITED_MODEL]
            if code == LICENSE_MISMATCH:
                self.found(code, run, f"re-exported to {consignee} under {other}'s licence {license_}")
            elif code == DESTINATION_MISMATCH:
                self.found(code, run, f"re-exported to {consignee} (registered in CN) by way of Singapore")
        kept = [u for u in group if fate[u] != DIVERSION]
        if kept:
            received = self.later(at + 3 * DAY)
            self.add(received, consignee, "received", kept, {"site": SITES[consignee]})
            self.attest(k, received, consignee, kept)
        diverted = [u for u in group if fate[u] == DIVERSION]
        if diverted:
            self.add(at + 3 * DAY + 5 * HOUR, "bytedance", "received", diverted, {"site": SITES["bytedance"]})
            self.found(DIVERSION, diverted, f"consigned to {consignee}, received by bytedance")

    def attest(self, k: int, received: int, customer: str, units: list[str]) -> None:
        """The customer attests where its units are a week after receipt (not yet, if that is still to
        come); the first shipment's never are: by now their attestations have lapsed. One unit is
        attested from the wrong country."""
        if k == 0 and len(self.shipments) > 1:
            self.lapsed += units
            return
        at = min(received + ATTEST_AFTER, self.now - HOUR)
        wrong = [u for u in units if self.fate[u] == LOCATION_MISMATCH]
        right = [u for u in units if self.fate[u] != LOCATION_MISMATCH]
        if right:
            self.add(at, customer, "located", right,
                     {"site": SITES[customer], "country": "CN", "method": "network-latency"})
        if wrong:
            self.add(at + 60_000_000, customer, "located", wrong,
                     {"site": "Johor Bahru DC-2", "country": "MY", "method": "network-latency"})
            self.found(LOCATION_MISMATCH, wrong, f"{customer} (registered in CN) attested a unit in Malaysia")

    def volume(self) -> None:
        """The exporter's U.S. volume for the first half of the season, declared once it is over: too low
        for what went to China in it, so the declaration is flagged (the 50 % rule)."""
        if len(self.shipments) < 2 or not self.exports:
            return
        start = (self.start_of(0) // DAY) * DAY
        until = (self.start_of(len(self.shipments) // 2) // DAY) * DAY
        exported = len({u for at, u in self.exports if start <= at < until})
        if exported < 2:
            return
        us_units = 2 * (exported - 1)  # the limit, half of it, is one unit short
        self.add(until + DAY, "nvidia", "us_volume_reported", (),
                 {"model": MODEL, "from": start, "until": until, "us_units": us_units})
        self.injected.append(Violation(VOLUME_RATIO_EXCEEDED, (),
                                       f"{exported} {MODEL} exported to China in the period against "
                                       f"{us_units} declared to U.S. customers (limit {us_units // 2})"))


def plan(n: int, now_us: int, seed: int = 2026) -> Plan:
    """The demo's statements for `n` units, all in the weeks before `now_us`, in increasing time order."""
    if n < 1:
        raise BadInput(f"--units must be at least 1, not {n}")
    if n > MAX_UNITS:
        raise BadInput(f"--units {n} is more than the demo makes ({MAX_UNITS:,})")
    p = _Planner(n, now_us, seed)
    for k, shipment in enumerate(p.shipments):
        p.shipment(k, shipment)
    p.volume()
    if p.lapsed:
        p.injected.append(Violation(ATTESTATION_OVERDUE, tuple(p.lapsed),
                                    f"received {LAPSED_DAYS - 9} days ago, never attested since "
                                    f"(the policy asks every {default_policy().attestation_days} days)"))
    over = tuple(s for s in p.serials if p.fate[s] == CAP_EXCEEDED)
    bytedance = p.consigned["bytedance"]
    caps = {"alibaba": (p.consigned["alibaba"] // 50 + 1) * 50,
            "bytedance": bytedance - len(over) if over else bytedance + 20}
    for code, what in ((PROHIBITED_MODEL, f"a board of Blackwell parts ({BLACKWELL}) among the H200s"),
                       (SKIPPED_INSPECTION, "a board re-exported without the U.S. lab's inspection")):
        chosen = tuple(s for s in p.serials if p.fate[s] == code)
        if chosen:
            p.injected.append(Violation(code, chosen, what))
    if over:
        p.injected.append(Violation(CAP_EXCEEDED, over, f"bytedance consigned {bytedance} units against a "
                                                        f"cap of {caps['bytedance']}"))
    order = {code: i for i, code in enumerate((*INJECTED, *STORY))}
    p.injected.sort(key=lambda v: order[v.code])
    steps = [step for _, _, step in sorted(p.steps, key=lambda t: (t[0], t[1]))]
    return Plan(units=n, shipments=len(p.shipments), admin_at=min(p.first, p.start_of(0)) - 7 * DAY,
                caps=caps, steps=steps,
                injected=p.injected)


def _admin(plan: Plan, key: Mapping[str, keys.PrivateKey]) -> list[_Step]:
    at = plan.admin_at
    steps = [_Step(at + (i + 1) * 60_000_000, "authority", "participant_registered", (),
                   {"id": pid, "name": name, "country": country, "roles": list(roles),
                    "key": key[pid].public})
             for i, (pid, name, roles, country) in enumerate(PARTICIPANTS)]
    for i, (customer, cap) in enumerate(sorted(plan.caps.items())):
        steps.append(_Step(at + HOUR + i * 60_000_000, "authority", "customer_approved", (),
                           {"id": customer, "cap": cap, "license": LICENSES[customer]}))
    return steps


def check_directory(directory: Path) -> None:
    """Refuse, before writing anything, a folder that already holds a ledger, a checkpoint or any of the
    demo's keys: the demo writes into the working directory by default, and never over what is there."""
    for path in (directory / "custody.db", directory / CHECKPOINT_FILE,
                 *(directory / "keys" / f for name in KEY_NAMES for f in (name, f"{name}.pub"))):
        if path.exists() or path.is_symlink():
            raise BadInput(f"{path} already exists: remove it, or give --dir a new or empty folder")


def _sign_checkpoint(store: Store, operator: keys.PrivateKey, directory: Path) -> Path:
    """The operator signs (and the store keeps) a checkpoint of the whole log; a copy goes beside it."""
    signed = tree_head.sign_tree_head(store, operator)
    path = directory / CHECKPOINT_FILE
    path.write_text(signed.note, encoding="utf-8")
    return path


def run(directory: Path, the_plan: Plan, *, now_us: int,
        progress: Callable[[int], None] | None = None) -> DemoResult:
    """Make the keys and the ledger in `directory`, record `the_plan`, sign a checkpoint, verify.

    `progress(1)` is called after each of the plan's `total` statements. Refuses (`BadInput`) a folder
    that already holds a ledger, a checkpoint or demo keys, before writing anything.
    """
    directory.mkdir(parents=True, exist_ok=True)
    check_directory(directory)
    key_dir = directory / "keys"
    key: dict[str, keys.PrivateKey] = {}
    for name in KEY_NAMES:
        key[name] = keys.generate()
        keys.write_keypair(key_dir, name, key[name], None, comment=f"{name} (custody demo)")
    db = directory / "custody.db"
    store = Store(str(db), create=True)
    try:
        append.open_ledger(store, key["authority"], origin=ORIGIN, co_authorities=(),
                           operator=key["operator"].public, policy_text=DEFAULT_POLICY_TEXT,
                           at=the_plan.admin_at)
        if progress is not None:
            progress(1)
        batch = append.Batch(store)
        for step in [*_admin(the_plan, key), *the_plan.steps]:
            statement = append.sign_statement(key[step.signer], origin=ORIGIN, kind=step.kind, at=step.at,
                                              units=batch.heads(step.serials), data=step.data)
            batch.add(statement)
            if progress is not None:
                progress(1)
            if len(batch.statements) >= COMMIT_EVERY:
                batch.commit()
                batch = append.Batch(store, after=batch)  # a fresh partial state: only the rows the next ones touch
        batch.commit()
        checkpoint = _sign_checkpoint(store, key["operator"], directory)
        report = verification.verify_store(store, verification.Options(as_of=now_us, now=append.now_us()))
        size = store.size()
    finally:
        store.close()
    return DemoResult(directory=directory, db=db, keys=key_dir, origin=ORIGIN, units=the_plan.units,
                      shipments=the_plan.shipments, statements=size, caps=dict(the_plan.caps),
                      injected=tuple(the_plan.injected), report=report, checkpoint=checkpoint)
