"""The demo scenario: a season of H200 shipments to China, with a realistic handful of violations.

Keys for every party, a fresh ledger, N units taken through all six steps in realistic batches (boards
of 8 from TSMC, shipments of up to 1,000 through a U.S. port, lab and customs, re-exported under licence
to two approved customers), with times spread over the past weeks in increasing order. Into that clean
flow it injects a board that skipped inspection, an under-paid customs entry, a diversion, a customer
over its cap and a Blackwell board; then it verifies. Statements go through `append.Batch` (the
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

# The injected violations, in the order they are given up when N is too small for all of them.
SKIPPED_INSPECTION, UNDERPAID_DUTY, PROHIBITED_MODEL, DIVERSION, CAP_EXCEEDED = (
    "SKIPPED_INSPECTION", "UNDERPAID_DUTY", "PROHIBITED_MODEL", "DIVERSION", "CAP_EXCEEDED")
INJECTED = (PROHIBITED_MODEL, SKIPPED_INSPECTION, UNDERPAID_DUTY, DIVERSION, CAP_EXCEEDED)


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
             DIVERSION: 2 if n >= 20 else 1, CAP_EXCEEDED: 3 if n >= 40 else 1}
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

    def add(self, at: int, signer: str, kind: str, units: Sequence[str], data: Mapping[str, Any]) -> None:
        self.steps.append((at, len(self.steps), _Step(at, signer, kind, tuple(units), data)))

    def later(self, at: int) -> int:
        return at + self.rng.randrange(self.jitter)

    def shipment(self, k: int, shipment: list[list[str]]) -> None:
        start, fate = self.first + k * self.spacing, self.fate
        units = [s for board in shipment for s in board]
        for j, board in enumerate(shipment):
            self.lot += 1
            model = BLACKWELL if fate[board[0]] == PROHIBITED_MODEL else MODEL
            self.add(start - 6 * DAY + j * 37 * 60_000_000, "tsmc", "fabricated", board,
                     {"model": model, "site": "Fab 18, Tainan", "lot": f"N4P-{self.lot}"})
        waybill = f"{self.rng.choice(('180', '695', '297'))}-{self.rng.randrange(10**7, 10**8)}"
        self.add(self.later(start), "expeditors", "shipped_to_us", units,
                 {"port_of_entry": PORTS[k % len(PORTS)], "waybill": waybill})
        inspected = [u for u in units if fate[u] != SKIPPED_INSPECTION]
        if inspected:
            self.add(self.later(start + 2 * DAY), "uslab", "inspected", inspected,
                     {"result": "pass", "site": "San Jose, CA", "country": "US",
                      "report": f"QTL-26-{k + 1:05d}"})
        self.duty(k, start + 3 * DAY, [u for u in units if fate[u] != UNDERPAID_DUTY], None)
        self.duty(k, start + 3 * DAY + 2 * HOUR, [u for u in units if fate[u] == UNDERPAID_DUTY],
                  UNDERPAID_RATE_BP)
        default = "bytedance" if k % 4 == 2 else "alibaba"
        groups: dict[str, list[str]] = {"alibaba": [], "bytedance": []}
        for u in units:
            to = "bytedance" if fate[u] == CAP_EXCEEDED else "alibaba" if fate[u] == DIVERSION else default
            groups[to].append(u)
        for offset, (consignee, group) in enumerate(groups.items()):
            if group:
                self.consign(start + 6 * DAY + offset * HOUR, consignee, group)

    def duty(self, k: int, at: int, group: list[str], rate_bp: int | None) -> None:
        if not group:
            return
        value = len(group) * UNIT_VALUE_CENTS
        due = duty_due(default_policy(), value) if rate_bp is None else -(-value * rate_bp // 10_000)
        entry = f"NV7-{2_604_000 + 2 * k + (rate_bp is not None):07d}-{self.rng.randrange(10)}"
        self.add(self.later(at), "cbp", "duty_paid", group,
                 {"entry": entry, "entered_value": value, "duty": due})
        if rate_bp is not None:
            self.injected.append(Violation(UNDERPAID_DUTY, tuple(group),
                                           f"customs entry {entry} paid at 15 % instead of 25 %"))

    def consign(self, at: int, consignee: str, group: list[str]) -> None:
        self.consigned[consignee] += len(group)
        self.add(self.later(at), "nvidia", "re_exported", group,
                 {"consignee": consignee, "license": LICENSES[consignee], "destination": "CN"})
        kept = [u for u in group if self.fate[u] != DIVERSION]
        if kept:
            self.add(self.later(at + 3 * DAY), consignee, "received", kept, {"site": SITES[consignee]})
        diverted = [u for u in group if self.fate[u] == DIVERSION]
        if diverted:
            self.add(at + 3 * DAY + 5 * HOUR, "bytedance", "received", diverted, {"site": SITES["bytedance"]})
            self.injected.append(Violation(DIVERSION, tuple(diverted),
                                           f"consigned to {consignee}, received by bytedance"))


def plan(n: int, now_us: int, seed: int = 2026) -> Plan:
    """The demo's statements for `n` units, all in the weeks before `now_us`, in increasing time order."""
    if n < 1:
        raise BadInput(f"--units must be at least 1, not {n}")
    if n > MAX_UNITS:
        raise BadInput(f"--units {n} is more than the demo makes ({MAX_UNITS:,})")
    p = _Planner(n, now_us, seed)
    for k, shipment in enumerate(p.shipments):
        p.shipment(k, shipment)
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
    order = {code: i for i, code in enumerate(INJECTED)}
    p.injected.sort(key=lambda v: order[v.code])
    steps = [step for _, _, step in sorted(p.steps, key=lambda t: (t[0], t[1]))]
    return Plan(units=n, shipments=len(p.shipments), admin_at=p.first - 7 * DAY, caps=caps, steps=steps,
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
    """Refuse, before writing anything, a folder that already holds a ledger or any of the demo's keys."""
    db = directory / "custody.db"
    if db.exists():
        raise BadInput(f"{db} already exists: give --dir a new or empty folder")
    for name in KEY_NAMES:
        for path in (directory / "keys" / name, directory / "keys" / f"{name}.pub"):
            if path.exists():
                raise BadInput(f"{path} already exists: give --dir a new or empty folder")


def _sign_checkpoint(store: Store, operator: keys.PrivateKey, directory: Path) -> Path:
    """The operator signs (and the store keeps) a checkpoint of the whole log; a copy goes beside it."""
    signed = tree_head.sign_tree_head(store, operator)
    path = directory / "checkpoint.txt"
    path.write_text(signed.note, encoding="utf-8")
    return path


def run(directory: Path, the_plan: Plan, *, now_us: int,
        progress: Callable[[int], None] | None = None) -> DemoResult:
    """Make the keys and the ledger in `directory`, record `the_plan`, sign a checkpoint, verify.

    `progress(1)` is called after each of the plan's `total` statements. Refuses (`BadInput`) a folder
    that already holds a ledger or demo keys, before writing anything.
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
                batch = append.Batch(store)  # a fresh partial state: only the rows the next ones touch
        batch.commit()
        checkpoint = _sign_checkpoint(store, key["operator"], directory)
        report = verification.verify_store(store, verification.Options(as_of=now_us, now=append.now_us()))
        size = store.size()
    finally:
        store.close()
    return DemoResult(directory=directory, db=db, keys=key_dir, origin=ORIGIN, units=the_plan.units,
                      shipments=the_plan.shipments, statements=size, caps=dict(the_plan.caps),
                      injected=tuple(the_plan.injected), report=report, checkpoint=checkpoint)
