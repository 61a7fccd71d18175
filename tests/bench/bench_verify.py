"""Targets 1 and 2: `custody verify` of a database and of a bundle, against signature verification alone.

1. One unit per statement (20,000 statements): statements/s of `custody verify` ÷ statements/s of a bare
   PyNaCl loop verifying as many signatures in as many processes (`baselines.nacl_verify_seconds`): ≥ 0.8.
2. Boards of 8 units (`fabricated`) and shipments of 1,000 (every later step), as `demo` builds them:
   ≥ 100,000 unit-steps/s verifying the database, ≥ 150,000 verifying a bundle.

Run: .venv/bin/python tests/bench/bench_verify.py [--quick] [--only single|boards] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines
import common
import ledgers

from ledger.parallel import stored_wire
from ledger.statement import decode, signed_message
from ledger.store import Store

SCRIPT = "bench_verify.py"


def _mib(run: common.Run) -> str:
    return f"{run.peak_rss / 2**20:.0f}"


def _verified(run: common.Run) -> None:
    document = json.loads(run.stdout)
    if not document["intact"]:
        raise SystemExit(f"the benchmark ledger did not verify: {document['failures'][:3]}")


def signed_bytes(url: str) -> int:
    """The mean length of the messages the ledger's signers signed (prefix and body), for the baseline."""
    store = Store(url, readonly=True)
    try:
        lengths = [len(signed_message(decode(stored_wire(state) or b"").body)) for _, state in store.log_states(0)]
    finally:
        store.close()
    return round(sum(lengths) / len(lengths))


def single(directory: Path, statements: int, start_up: float, quick: bool) -> list[bool | None]:
    built = ledgers.open_bench_ledger(directory / "custody.db")
    ledgers.grow(built, statements // 5, board=1, shipment=1, steps=5)
    db = built.url
    cores = len(os.sched_getaffinity(0))
    options = ["--quick"] if quick else []
    size = signed_bytes(db)
    print(f"verify, one unit per statement: {built.statements:,} statements, {size} signed bytes each on "
          f"average ({db})")
    # start-up, verify and the baseline take turns, so a machine that speeds up or slows down meanwhile
    # (shared cores do) weighs on all three alike; the best of each counts
    runs, bases, starts = [], [], [start_up]
    for _ in range(7):
        starts.append(common.custody("--version").seconds)
        runs.append(common.custody("--db", db, "verify", "--json"))
        bases.append(baselines.nacl_verify_seconds(built.statements, cores, size))
    run = min(runs, key=lambda r: r.seconds)
    _verified(run)
    start_up = min(starts)
    net = run.seconds - start_up
    rate = built.statements / net
    base = built.statements / min(bases)
    _, one = common.best_of(["--db", db, "verify", "--json", "--workers", "1"], 2, start_up)
    command = common.reproduce(SCRIPT, "--only", "single", *options)
    common.report("custody verify", rate, "statements/s", command,
                  note=f"{net:.2f} s net of {start_up:.2f} s start-up, {cores} workers, peak "
                       f"{run.peak_rss / 2**20:.0f} MiB")
    common.report("custody verify --workers 1", built.statements / one, "statements/s",
                  command)
    common.report(f"bare PyNaCl loop, {cores} processes", base, "signatures/s", command)
    rounds = sorted(b / (r.seconds - s) for r, b, s in zip(runs, bases, starts[1:], strict=True))
    return [common.report("ratio verify ÷ bare loop", rate / base, "", command, target=0.8,
                          note=f"best against best; round by round {rounds[0]:.2f}–{rounds[-1]:.2f}, "
                               f"median {rounds[len(rounds) // 2]:.2f}")]


def boards(directory: Path, units: int, start_up: float, quick: bool) -> list[bool | None]:
    built = ledgers.open_bench_ledger(directory / "custody.db")
    ledgers.grow(built, units, board=8, shipment=1000, steps=6)
    db = built.url
    bundle = str(directory / "ledger.bundle")
    common.custody("--db", db, "export", bundle)
    options = ["--quick"] if quick else []
    command = common.reproduce(SCRIPT, "--only", "boards", *options)
    print(f"verify, boards of 8 and shipments of 1,000: {units:,} units, {built.unit_steps:,} unit-steps, "
          f"{built.statements:,} statements ({db})")
    results = []
    run, net = common.best_of(["--db", db, "verify", "--json"], 3, start_up)
    _verified(run)
    results.append(common.report("custody verify (database)", built.unit_steps / net, "unit-steps/s", command,
                                 target=100_000, note=f"{net:.2f} s net, peak {_mib(run)} MiB"))
    _, one = common.best_of(["--db", db, "verify", "--json", "--workers", "1"], 1, start_up)
    common.report("custody verify --workers 1 (database)", built.unit_steps / one,
                  "unit-steps/s", command)
    run, net = common.best_of(["verify", bundle, "--json"], 3, start_up)
    _verified(run)
    results.append(common.report("custody verify BUNDLE", built.unit_steps / net, "unit-steps/s", command,
                                 target=150_000, note=f"{net:.2f} s net, peak {_mib(run)} MiB"))
    _, one = common.best_of(["verify", bundle, "--json", "--workers", "1"], 1, start_up)
    common.report("custody verify BUNDLE --workers 1", built.unit_steps / one,
                  "unit-steps/s", command)
    return results


def main(argv: list[str] | None = None) -> list[bool | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller ledgers, for a first look")
    parser.add_argument("--only", choices=["single", "boards"])
    parser.add_argument("--dir", type=Path, help="where to build the ledgers (default: a temporary folder)")
    args = parser.parse_args(argv)
    results: list[bool | None] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start_up = common.startup()
        print(f"start-up (custody --version): {start_up:.3f} s")
        if args.only in (None, "single"):
            results += single(Path(tmp) / "single", 4_000 if args.quick else 20_000, start_up, args.quick)
        if args.only in (None, "boards"):
            results += boards(Path(tmp) / "boards", 16_000 if args.quick else 100_000, start_up, args.quick)
    return results


if __name__ == "__main__":
    print(common.machine())
    main()
