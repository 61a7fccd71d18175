"""Every benchmark of issue 7, with the figures, the ratios against same-run baselines, and the targets.

    .venv/bin/python tests/bench/run.py [--quick] [--pg URL] [--dir DIR]

Each figure is printed with the command that reproduces it alone. `--quick` builds smaller ledgers (a
first look in a few minutes; the targets are stated for the full sizes). The scale run (target 5) is
separate and long: `.venv/bin/python tests/bench/scale.py`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_append
import bench_replay
import bench_verify
import common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller ledgers, for a first look")
    parser.add_argument("--pg", metavar="URL", help="also measure bulk appends on PostgreSQL at URL")
    parser.add_argument("--dir", type=Path, help="where to build the ledgers (default: a temporary folder)")
    args = parser.parse_args()
    common_args = (["--quick"] if args.quick else []) + (["--dir", str(args.dir)] if args.dir else [])
    print(common.machine())
    began = time.perf_counter()
    results = bench_verify.main(common_args)
    results += bench_append.main(common_args + (["--pg", args.pg] if args.pg else []))
    results += bench_replay.main(common_args)
    met = sum(1 for r in results if r)
    print(f"targets met: {met} of {len(results)} ({time.perf_counter() - began:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
