"""Target 5, the scale run: 1,000,000 units through all six steps (boards of 8, shipments of 1,000).

Reports the time and peak memory (the process and its workers) of building the ledger through the
library, of `custody verify` (database and bundle), of `custody replay --rebuild` and `custody replay`,
of one more 1,000-unit `custody record` on the full ledger, and the database size. Verify and replay must
stay under 2 GiB. It takes a while: run it in the background and read the log.

    nohup .venv/bin/python tests/bench/scale.py --dir /tmp/scale > scale.log 2>&1 &

`--units N` scales it down (for a dry run); `--keep` leaves the ledger in DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import ledgers

SCRIPT = "scale.py"
GIB = 2**30


def _build(url: str, units: int) -> None:
    """Runs in its own process, so that its peak memory is its own."""
    built = ledgers.open_bench_ledger(url)
    ledgers.grow(built, units, progress=True)
    print(json.dumps({"statements": built.statements, "unit_steps": built.unit_steps,
                      "seconds": built.seconds}))


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="a folder for the ledger (several GB)")
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the ledger afterwards")
    parser.add_argument("--ledger", type=Path, help="measure this ledger (built before, keys beside it) "
                                                    "instead of building one; it is changed by --rebuild")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    directory = args.ledger.parent if args.ledger else args.dir / f"scale-{args.units}"
    db = args.ledger or directory / "custody.db"
    if args.build_only:
        _build(str(db), args.units)
        return 0
    print(common.machine(), flush=True)
    if not args.ledger:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    results: dict[str, object] = {"units": args.units, "machine": common.machine()}
    command = common.reproduce(SCRIPT, "--dir", str(args.dir), *(["--units", str(args.units)]
                                                                if args.units != 1_000_000 else []))
    began = time.perf_counter()

    if args.ledger:
        unit_steps = args.units * 6
        print(f"measuring {db} ({args.units:,} units, built before)", flush=True)
    else:
        print(f"building {args.units:,} units through six steps into {db} …", flush=True)
        run = common.run([common.PYTHON, __file__, "--dir", str(args.dir), "--units", str(args.units),
                          "--build-only"], show_stderr=True)
        built = json.loads(run.stdout.strip().splitlines()[-1])
        unit_steps = built["unit_steps"]
        results.update(statements=built["statements"], build_seconds=run.seconds, build_peak=run.peak_rss)
        common.report("build (append.Batch, signing included)", run.seconds, "s", command,
                      note=f"{unit_steps / built['seconds']:,.0f} unit-steps/s, {built['statements']:,} "
                           f"statements, peak {run.peak_rss / 2**20:,.0f} MiB")
    results.update(unit_steps=unit_steps, db_bytes=_size(db))
    common.report("database size", _size(db) / 2**20, "MiB", command,
                  note=f"{_size(db) / unit_steps:.0f} bytes per unit-step")

    start_up = common.startup()
    results["start_up"] = start_up

    def timed(name: str, key: str, args_: list[str], limit: int | None = GIB * 2) -> None:
        run = common.custody(*args_)
        net = run.seconds - start_up
        results[f"{key}_seconds"] = net
        results[f"{key}_peak"] = run.peak_rss
        common.report(name, net, "s", command,
                      note=f"{unit_steps / net:,.0f} unit-steps/s, peak {run.peak_rss / 2**20:,.0f} MiB")
        if limit is not None:
            common.report(f"{name}: peak memory", run.peak_rss / GIB, "GiB", command, target=limit / GIB,
                          higher=False)
        if key.startswith("verify") and not json.loads(run.stdout)["intact"]:
            raise SystemExit(f"the scale ledger did not verify: {run.stdout[:2000]}")

    timed("custody verify (database)", "verify", ["--db", str(db), "verify", "--json"])
    bundle = directory / "ledger.bundle"
    export = common.custody("--db", str(db), "export", str(bundle))
    results["export_seconds"] = export.seconds - start_up
    results["bundle_bytes"] = bundle.stat().st_size
    common.report("custody export", export.seconds - start_up, "s", command,
                  note=f"{bundle.stat().st_size / 2**20:,.0f} MiB bundle")
    timed("custody verify BUNDLE", "verify_bundle", ["verify", str(bundle), "--json"])
    bundle.unlink()
    timed("custody replay --rebuild", "rebuild", ["--db", str(db), "replay", "--rebuild", "--json"])
    timed("custody replay (in memory)", "replay", ["--db", str(db), "replay", "--json"])

    serials = directory / "more.txt"
    serials.write_text("".join(f"SX{i:09d}\n" for i in range(1000)))
    run = common.custody("--db", str(db), "record", "fabricated", "--key", str(directory / "keys" / "tsmc"),
                         "--serials-file", str(serials), "--model", "H200-SXM5-141GB", "--site", "Fab 18",
                         "--lot", "L-more")
    if "recorded fabricated for 1000 units" not in run.stdout:
        raise SystemExit(f"record did not record: {run.stdout}")
    results["record_seconds"] = run.seconds - start_up
    common.report("custody record, 1,000 more units, on the full ledger", run.seconds - start_up, "s",
                  command, target=0.5, higher=False, note=f"{run.seconds:.2f} s with start-up")
    results["total_seconds"] = time.perf_counter() - began
    print("RESULTS " + json.dumps(results), flush=True)
    if not args.keep and not args.ledger:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
