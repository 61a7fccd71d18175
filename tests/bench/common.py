"""What every benchmark shares: running the CLI, timing it net of start-up, peak memory, reporting.

Times are wall-clock seconds of a real `custody` process minus the median start-up of `custody --version`
measured in the same run. Peak memory is the largest resident set of the process and its workers
together, sampled every 10 ms from /proc.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent  # the virtualenv's: .venv/bin
CUSTODY = str(BIN / "custody")
PYTHON = sys.executable


@dataclass(frozen=True)
class Run:
    seconds: float  # wall clock, start-up included
    peak_rss: int  # bytes, the process tree at its largest
    stdout: str
    status: int


def _tree_rss(pid: int) -> int:
    total = 0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    pending += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def run(args: Sequence[str], *, env: dict[str, str] | None = None, check: bool = True,
        show_stderr: bool = False) -> Run:
    """Run a command to completion, timing it and sampling its memory."""
    began = time.perf_counter()
    proc = subprocess.Popen(list(args), stdout=subprocess.PIPE,
                            stderr=None if show_stderr else subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - began
    stop.set()
    sampler.join()
    if check and proc.returncode not in (0, 3):
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{err}")
    return Run(seconds, peak, out, proc.returncode)


def custody(*args: str, check: bool = True) -> Run:
    return run([CUSTODY, *args], check=check)


def startup(repeat: int = 7) -> float:
    """The fastest of a few `custody --version`: what every command pays before it starts work (the
    fastest, as each figure it is taken from is the fastest of its runs)."""
    return min(custody("--version").seconds for _ in range(repeat))


def best_of(args: Sequence[str], repeat: int, start_up: float) -> tuple[Run, float]:
    """The fastest of `repeat` runs (the machine is shared: the others waited for a core) and its seconds
    net of start-up: the fastest of `start_up` and a `custody --version` run before each of them, so a
    machine that slows down or speeds up meanwhile weighs on the command and its start-up alike."""
    runs, starts = [], [start_up]
    for _ in range(repeat):
        starts.append(custody("--version").seconds)
        runs.append(custody(*args))
    run = min(runs, key=lambda r: r.seconds)
    return run, run.seconds - min(starts)


def reproduce(script: str, *options: str) -> str:
    return " ".join([".venv/bin/python", f"tests/bench/{script}", *options])


def report(name: str, value: float, unit: str, command: str, *, target: float | None = None,
           higher: bool = True, note: str = "") -> bool | None:
    """Print one figure with its target (if any) and the command that reproduces it."""
    verdict = ""
    ok: bool | None = None
    if target is not None:
        ok = value >= target if higher else value <= target
        if ok:
            verdict = f"target {'≥' if higher else '≤'} {target:g}: met"
        else:
            gap = (target - value) / target if higher else (value - target) / target
            verdict = f"target {'≥' if higher else '≤'} {target:g}: MISSED by {gap:.0%}"
    figure = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    print(f"  {name}: {figure} {unit}" + (f"   [{verdict}]" if verdict else "")
          + (f"  ({note})" if note else ""))
    print(f"      $ {command}")
    sys.stdout.flush()
    return ok


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return f"{cores} cores ({model}), Python {sys.version.split()[0]}, load average {load:.1f} at start"
