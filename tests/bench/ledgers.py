"""Building big ledgers for the benchmarks through the library (`append.Batch`), not the CLI.

Every participant key is generated fresh (`keys.generate()`); the keys are written to `DIR/keys/` so a
benchmark (or a person) can record more steps with the CLI afterwards.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledger import append, keys
from ledger.keys import PrivateKey
from ledger.statement import Statement
from ledger.store import Store

ORIGIN = "custody.bench/h200-cn"
DAY_US = 86_400 * 1_000_000
PARTICIPANTS = {  # id: (role, country)
    "tsmc": ("fab", "TW"),
    "kerry": ("carrier", "US"),
    "uslab": ("inspector", "US"),
    "cbp": ("customs", "US"),
    "nvidia": ("exporter", "US"),
    "alibaba": ("customer", "CN"),
}
STEP_DATA = {
    "shipped_to_us": {"port_of_entry": "DFW", "waybill": "W-1"},
    "inspected": {"result": "pass", "site": "Lab", "country": "US", "report": "R-1"},
    "re_exported": {"consignee": "alibaba", "license": "LIC-1", "destination": "CN"},
    "received": {"site": "Hangzhou"},
}
STEP_SIGNER = {"fabricated": "tsmc", "shipped_to_us": "kerry", "inspected": "uslab", "duty_paid": "cbp",
               "re_exported": "nvidia", "received": "alibaba"}
UNIT_VALUE_CENTS = 2_000_000
# The benchmarks' ledgers open on 2023-11-14 and their steps follow a day later (`grow`'s default clock),
# unless told otherwise: as of now their received units are ATTESTATION_OVERDUE (the default policy asks
# for a location every 90 days) and their units stopped short of `received` are OVERDUE. The figures in
# docs/performance.md were measured on ledgers dated so.
START_US = 1_700_000_000_000_000


@dataclass
class Built:
    url: str  # a SQLite path or a postgresql:// URL
    keys_dir: Path
    statements: int = 0
    unit_steps: int = 0
    units: int = 0
    seconds: float = 0.0
    keys: dict[str, PrivateKey] = field(default_factory=dict)


def _write_keys(directory: Path, named: dict[str, PrivateKey]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, key in named.items():
        if not (directory / name).exists():
            keys.write_keypair(directory, name, key, None, comment=name)


def open_bench_ledger(url: str | Path, *, keys_dir: Path | None = None, cap: int = 10**9,
                      start: int = START_US) -> Built:
    """A new ledger at `url`, opened at `start`, with the six participants and one customer of cap `cap`;
    its keys (without passphrases) in `keys_dir`, by default `keys/` beside a SQLite file."""
    url = str(url)
    keys_dir = keys_dir or Path(url).parent / "keys"
    named = {name: keys.generate() for name in ["authority", "operator", *PARTICIPANTS]}
    _write_keys(keys_dir, named)
    with Store(url, create=True) as store:
        append.open_ledger(store, named["authority"], origin=ORIGIN, co_authorities=(),
                           operator=named["operator"].public, policy_text=_policy(), at=start)
        batch = append.Batch(store)
        authority = named["authority"]
        for pid, (role, country) in PARTICIPANTS.items():
            batch.add(append.sign_statement(authority, origin=ORIGIN, kind="participant_registered", at=start,
                                            units=(), data={"id": pid, "name": pid, "country": country,
                                                            "roles": [role], "key": named[pid].public}))
        batch.add(append.sign_statement(authority, origin=ORIGIN, kind="customer_approved", at=start,
                                        units=(), data={"id": "alibaba", "cap": cap, "license": "LIC-1"}))
        batch.commit()
    return Built(url=url, keys_dir=keys_dir, statements=len(PARTICIPANTS) + 2, keys=named)


def _policy() -> str:
    from ledger.policy import default_policy
    return default_policy().source


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def step_statements(built: Built, batch: append.Batch, kind: str, serials: Sequence[str], at: int,
                    n: int) -> Statement:
    key = built.keys[STEP_SIGNER[kind]]
    if kind == "fabricated":
        data: dict[str, object] = {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": f"L{n}"}
    elif kind == "duty_paid":
        value = UNIT_VALUE_CENTS * len(serials)
        data = {"entry": f"E-{n}", "entered_value": value, "duty": value // 4}
    else:
        data = dict(STEP_DATA[kind])
    return append.sign_statement(key, origin=ORIGIN, kind=kind, at=at, units=batch.heads(serials),
                                 data=data)


def grow(built: Built, units: int, *, board: int = 8, shipment: int = 1000, steps: int = 6,
         first: int = 0, per_commit: int = 20_000, clock_start: int | None = None,
         progress: bool = False) -> Built:
    """Take `units` new units (serials first…first+units-1) through the first `steps` steps.

    `fabricated` covers `board` units per statement, the later steps `shipment` units per statement;
    statements are committed `per_commit` unit-steps at a time (a bulk append, as `demo` and `import`
    do). Heads are asked for a commit's worth of units at once, as a bulk writer would.
    """
    serials = [f"SN{first + i:09d}" for i in range(units)]
    at = clock_start or START_US + DAY_US
    kinds = ["fabricated", "shipped_to_us", "inspected", "duty_paid", "re_exported", "received"][:steps]
    began = time.perf_counter()
    with Store(built.url) as store:
        batch: append.Batch | None = None
        for kind in kinds:
            size = board if kind == "fabricated" else shipment
            batch = append.Batch(store, after=batch)
            groups = list(_chunks(serials, size))
            per = max(1, per_commit // size)
            for start in range(0, len(groups), per):
                window = groups[start:start + per]
                batch.heads([s for group in window for s in group])  # one read for the window
                for n, group in enumerate(window, start):
                    batch.add(step_statements(built, batch, kind, group, at, first + n))
                    built.statements += 1
                    built.unit_steps += len(group)
                batch.commit()
                if progress:
                    print(f"    {kind}: {min(len(serials), (start + per) * size):,} units, "
                          f"{built.unit_steps / (time.perf_counter() - began):,.0f} unit-steps/s",
                          file=sys.stderr, flush=True)
            at += 1_000_000
    built.units += units
    built.seconds += time.perf_counter() - began
    return built
