"""The visual report (`custody report html`): time to write, file size, time to first render in Chromium.

Goals (issue 18) at 100,000 units: under 5 s to write, under 3 s to render, a file under 15 MB. Measured on
the demo (240 units) and on two ledgers of 100,000 units (boards of 8, shipments of 1,000) where 20,000
units stopped at `re_exported` (OVERDUE) and the customer's cap is 90,000 (10,000 CAP_EXCEEDED):
- dated as a ledger in use is: 80,000 units received a week ago (their locations are not yet due), the
  20,000 re-exported 120 days ago: 30,000 findings and 100,000 timelines;
- dated 2023 as the other benchmarks' ledgers are: the same, but every received unit is also
  ATTESTATION_OVERDUE (no location attested for three years): 110,000 findings, the most a page of
  100,000 units is likely to carry.

Write: the best of three `custody report html` runs, net of the start-up of `custody --version`.
Render: headless Chromium (Debian's) opening the file: first contentful paint, and the time until the
page's script has drawn the tables (`html[data-ready]`), best of three fresh pages. Then what a person
does at that size: a serial's timeline and the findings of one code.

Run: .venv/bin/python tests/bench/bench_html.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import common
import ledgers

from ledger import append, demo, values
from tests.browser import tooling

SCRIPT = "bench_html.py"
WRITE_TARGET_S, RENDER_TARGET_S, SIZE_TARGET_MB = 5.0, 3.0, 15.0


def write(db: str, out: Path, start_up: float) -> float:
    _, net = common.best_of(["--db", db, "report", "html", str(out)], 3, start_up)
    return net


def render(browser: object, page_file: Path, serial: str, code: str) -> dict[str, float]:
    firsts, readies = [], []
    for _ in range(3):
        context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        page = context.new_page()
        began = time.perf_counter()
        page.goto(page_file.resolve().as_uri())
        page.wait_for_selector("html[data-ready='1']", timeout=60_000)
        readies.append(time.perf_counter() - began)
        paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? -1")
        firsts.append(paint / 1000)
        context.close()
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(page_file.resolve().as_uri())
    page.wait_for_selector("html[data-ready='1']", timeout=60_000)
    began = time.perf_counter()
    page.fill("#u-serial", serial)
    page.press("#u-serial", "Enter")
    page.wait_for_selector("#unit-title")
    timeline = time.perf_counter() - began
    began = time.perf_counter()
    page.select_option("#f-code", code)
    page.wait_for_function("document.querySelector('#f-status').textContent.includes('with code')")
    filtered = time.perf_counter() - began
    context.close()
    return {"paint": min(firsts), "ready": min(readies), "timeline": timeline, "filter": filtered}


def measure(name: str, db: str, directory: Path, start_up: float, browser: object, serial: str, code: str,
            options: list[str], *, targets: bool) -> list[bool | None]:
    out = directory / f"{name}.html"
    command = common.reproduce(SCRIPT, *options)
    seconds = write(db, out, start_up)
    size_mb = out.stat().st_size / 1e6
    results = [
        common.report(f"{name}: write", seconds, "s", command, target=WRITE_TARGET_S if targets else None,
                      higher=False, note=f"net of {start_up:.2f} s start-up"),
        common.report(f"{name}: file size", size_mb, "MB", command, target=SIZE_TARGET_MB if targets else None,
                      higher=False, note=f"{out.stat().st_size:,} bytes"),
    ]
    timed = render(browser, out, serial, code)
    results.append(common.report(f"{name}: render (tables drawn)", timed["ready"], "s", command,
                                 target=RENDER_TARGET_S if targets else None, higher=False,
                                 note=f"first contentful paint {timed['paint']:.2f} s"))
    common.report(f"{name}: a serial's timeline", timed["timeline"], "s", command, note=serial)
    common.report(f"{name}: findings of one code", timed["filter"], "s", command, note=code)
    return results


def big_ledger(directory: Path, units: int, start: int | None) -> ledgers.Built:
    """`units` units, a fifth of them stopped at `re_exported` (OVERDUE), a tenth over the customer's cap;
    opened at `start` (received a week before now, re-exported 120 days before), else dated 2023."""
    stuck, cap = units // 5, units * 9 // 10
    if start is None:
        built = ledgers.open_bench_ledger(directory / "custody.db", cap=cap)
        ledgers.grow(built, units - stuck)
        ledgers.grow(built, stuck, steps=5, first=units - stuck)
    else:
        now = append.now_us()
        built = ledgers.open_bench_ledger(directory / "custody.db", cap=cap, start=start)
        ledgers.grow(built, units - stuck, clock_start=now - 7 * ledgers.DAY_US)
        ledgers.grow(built, stuck, steps=5, first=units - stuck, clock_start=now - 120 * ledgers.DAY_US)
    print(f"report html, {units:,} units (opened {values.format_time(start or ledgers.START_US)[:10]}): "
          f"{built.statements:,} statements, {built.unit_steps:,} unit-steps, {stuck:,} overdue, "
          f"{units - cap:,} over the cap")
    return built


def main(argv: list[str] | None = None) -> list[bool | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller ledger, for a first look")
    parser.add_argument("--dir", type=Path, help="where to build the ledgers (default: a temporary folder)")
    args = parser.parse_args(argv)
    options = ["--quick"] if args.quick else []
    results: list[bool | None] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp, tooling.launch() as browser:
        directory = Path(tmp)
        start_up = common.startup()
        print(f"start-up (custody --version): {start_up:.3f} s")
        now = append.now_us()
        shown = demo.run(directory / "demo", demo.plan(demo.DEFAULT_UNITS, now), now_us=now)
        print(f"report html, demo: {shown.units} units, {shown.statements} statements")
        diverted = next(v.serials[0] for v in shown.injected if v.code == demo.DIVERSION)
        results += measure("demo", str(shown.db), directory, start_up, browser, diverted, demo.DIVERSION, options,
                           targets=False)
        units = 16_000 if args.quick else 100_000
        for name, start in ((f"{units:,} units", now - 200 * ledgers.DAY_US), (f"{units:,} units dated 2023", None)):
            built = big_ledger(directory / name.replace(" ", "-").replace(",", ""), units, start)
            results += measure(name, built.url, directory, start_up, browser, f"SN{units - 1:09d}", "OVERDUE",
                               options, targets=not args.quick)
    return results


if __name__ == "__main__":
    print(common.machine())
    main()
