"""Target 4: replay, folding every statement of the log again (boards of 8, shipments of 1,000).

- `custody replay --rebuild`: rebuild every view from the log: ≥ 200,000 unit-steps/s.
- `custody replay`: the same fold in memory, nothing stored (for comparison).

Run: .venv/bin/python tests/bench/bench_replay.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import ledgers

SCRIPT = "bench_replay.py"


def replay(directory: Path, units: int, start_up: float, options: list[str]) -> list[bool | None]:
    built = ledgers.open_bench_ledger(directory / "custody.db")
    ledgers.grow(built, units)
    db = built.url
    command = common.reproduce(SCRIPT, *options)
    print(f"replay: {units:,} units, {built.unit_steps:,} unit-steps, {built.statements:,} statements ({db})")
    run, net = common.best_of(["--db", db, "replay", "--rebuild", "--json"], 3, start_up)
    result = common.report("custody replay --rebuild", built.unit_steps / net, "unit-steps/s", command,
                           target=200_000, note=f"{net:.2f} s net, peak {run.peak_rss / 2**20:.0f} MiB")
    run, net = common.best_of(["--db", db, "replay", "--json"], 3, start_up)
    common.report("custody replay (in memory)", built.unit_steps / net, "unit-steps/s", command,
                  note=f"{net:.2f} s net, peak {run.peak_rss / 2**20:.0f} MiB")
    return [result]


def main(argv: list[str] | None = None) -> list[bool | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller ledger, for a first look")
    parser.add_argument("--dir", type=Path, help="where to build the ledger (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start_up = common.startup()
        print(f"start-up (custody --version): {start_up:.3f} s")
        units = 16_000 if args.quick else 100_000
        return replay(Path(tmp), units, start_up, ["--quick"] if args.quick else [])


if __name__ == "__main__":
    print(common.machine())
    main()
