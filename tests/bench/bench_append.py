"""Target 3: appending.

- `custody record` of one 1,000-unit shipment on a ledger already holding 100,000 units: ≤ 0.5 s beyond
  start-up (the fastest of three shipments, each of fresh units).
- Bulk appends (`append.Batch`, many statements per transaction, as `demo` and `import` do), signing
  included: unit-steps/s ÷ the unit-step rate of a bare `eventsourcing` application saving one
  msgpack-transcoded event per unit-step through `Application.save`, 1,000 aggregates per call, to the
  same store (`baselines.eventsourcing_save_rate`): ≥ 1.

Run: .venv/bin/python tests/bench/bench_append.py [--quick] [--only record|bulk] [--pg URL] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import baselines
import common
import ledgers

SCRIPT = "bench_append.py"


def record(directory: Path, units: int, start_up: float, options: list[str]) -> list[bool | None]:
    built = ledgers.open_bench_ledger(directory / "custody.db")
    ledgers.grow(built, units, steps=1)  # every unit fabricated, in boards of 8
    db = built.url
    print(f"record: one 1,000-unit shipment on a ledger holding {units:,} units ({db})")
    seconds, starts = [], [start_up]  # a --version before each record: start-up taken in the same turns
    for n in range(3):
        serials = directory / f"shipment-{n}.txt"
        serials.write_text("".join(f"SN{i:09d}\n" for i in range(n * 1000, (n + 1) * 1000)))
        starts.append(common.custody("--version").seconds)
        run = common.custody("--db", db, "record", "shipped-to-us", "--key", str(built.keys_dir / "kerry"),
                             "--serials-file", str(serials), "--port-of-entry", "DFW", "--waybill", f"W-{n}")
        if "recorded shipped-to-us for 1000 units" not in run.stdout:
            raise SystemExit(f"record did not record: {run.stdout}")
        seconds.append(run.seconds)
    start_up = min(starts)
    nets = [s - start_up for s in seconds]
    command = common.reproduce(SCRIPT, "--only", "record", *options)
    return [common.report("custody record, 1,000 units", min(nets), "s beyond start-up", command,
                          target=0.5, higher=False,
                          note=f"best of 3; median {statistics.median(nets):.3f} s; "
                               f"start-up {start_up:.2f} s")]


def bulk(directory: Path, units: int, postgres: str | None, options: list[str]) -> list[bool | None]:
    if postgres:
        import conftest_pg

        url = conftest_pg.fresh_schema(postgres)
        built = ledgers.open_bench_ledger(url, keys_dir=directory / "keys")
    else:
        built = ledgers.open_bench_ledger(directory / "custody.db")
    where = "PostgreSQL" if postgres else "SQLite"
    print(f"bulk append ({where}): {units:,} units through six steps, boards of 8 and shipments of 1,000, "
          "signing included")
    ledgers.grow(built, units)
    rate = built.unit_steps / built.seconds
    if postgres:
        import conftest_pg

        conftest_pg.drop_schema(built.url)
    base = baselines.eventsourcing_save_rate(built.unit_steps, postgres)
    command = common.reproduce(SCRIPT, "--only", "bulk", *options)
    common.report(f"append.Batch ({where})", rate, "unit-steps/s", command,
                  note=f"{built.unit_steps:,} unit-steps in {built.seconds:.1f} s")
    common.report(f"bare eventsourcing Application.save ({where})", base, "events/s", command)
    return [common.report(f"ratio bulk append ÷ bare save ({where})", rate / base, "", command, target=1.0)]


def main(argv: list[str] | None = None) -> list[bool | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller ledgers, for a first look")
    parser.add_argument("--only", choices=["record", "bulk"])
    parser.add_argument("--pg", metavar="URL", help="also measure bulk appends on PostgreSQL at URL")
    parser.add_argument("--dir", type=Path, help="where to build the ledgers (default: a temporary folder)")
    args = parser.parse_args(argv)
    options = ["--quick"] if args.quick else []
    results: list[bool | None] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start_up = common.startup()
        print(f"start-up (custody --version): {start_up:.3f} s")
        if args.only in (None, "record"):
            results += record(Path(tmp) / "record", 20_000 if args.quick else 100_000, start_up, options)
        if args.only in (None, "bulk"):
            units = 10_000 if args.quick else 50_000
            results += bulk(Path(tmp) / "bulk", units, None, options)
            if args.pg:
                results += bulk(Path(tmp) / "bulk-pg", units, args.pg, [*options, "--pg", args.pg])
    return results


if __name__ == "__main__":
    print(common.machine())
    main()
