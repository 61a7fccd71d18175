"""`custody demo`: a ledger of N units with a handful of violations, verified and reported on."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import db_url, open_store, progress
from ledger import append, reports

DEFAULT_UNITS = 240  # DESIGN.md: `demo` takes 240 units by default (ledger.demo imports on use: start-up)


def demo_command(
    units: Annotated[int, typer.Option("--units", min=1, metavar="N",
                                                  help="Units to take through the steps.")] = DEFAULT_UNITS,
    directory: Annotated[Path, typer.Option(
        "--dir", metavar="DIR",
        help="Folder for custody.db, checkpoint.txt and keys/ (default: the working directory, so that "
             "the other commands find custody.db there).")] = Path(),
) -> None:
    """Build a demo ledger: keys, N units through the steps, injected violations; verify and report."""
    from ledger import demo  # here, not at the top: every other command's start-up would pay for it

    now = append.now_us()
    plan = demo.plan(units, now)
    demo.check_directory(directory)  # before anything is written: a ledger or a demo key already there
    with progress("recording", plan.total) as advance:
        result = demo.run(directory, plan, now_us=now, progress=advance)
    db = str(result.db)
    render.out(f"custody demo: {render.count(result.units, 'unit')} through the custody steps in "
               f"{render.count(result.shipments, 'shipment')}: "
               f"{render.count(result.statements, 'signed statement')}")
    render.out(f"  ledger:     {db} (origin {result.origin})")
    render.out(f"  keys:       {result.keys}/ ({', '.join(demo.KEY_NAMES)}; unencrypted, for the demo only)")
    render.out(f"  checkpoint: {result.checkpoint} (signed by the operator)")
    render.out(f"  customers:  {', '.join(f'{c} (cap {n})' for c, n in sorted(result.caps.items()))}")
    if result.injected:
        render.out("injected violations (and what the story shows without one):")
        for v in result.injected:
            shown = ", ".join(v.serials[:3]) + (", …" if len(v.serials) > 3 else "")
            what = (f"{render.count(len(v.serials), 'unit'):>9}  {v.what} ({shown})" if v.serials
                    else f"{'a declaration':>9}  {v.what}")
            render.out(f"  {v.code:22} {what}")
    missing = [c for c in (*demo.INJECTED, *demo.STORY) if c not in {v.code for v in result.injected}]
    if missing:
        render.out(f"  (too few units for {', '.join(missing)}: give --units {demo.MIN_UNITS_FOR_ALL} or more "
                   "to see every one)")
    report = result.report
    verdict = "intact" if report.intact else f"NOT intact ({len(report.failures)} failure(s))"
    render.out(f"verify: {verdict}, {'compliant' if report.compliant else 'not compliant'} "
               f"({report.violations} finding(s); `custody verify` exits "
               f"{0 if report.compliant else 3 if report.intact else 1})")
    render.out("try:")
    # without --db when the commands would open this very ledger anyway (custody.db here, no CUSTODY_DB)
    custody = "custody" if _is_default_store(result.db) else f"custody --db {shlex.quote(db)}"
    sample = result.injected[0].serials[0] if result.injected else "1652224000001"
    scrapped = next((v.serials[0] for v in result.injected if v.code == demo.SCRAPPED), None)
    for command in ("verify", f"history {sample}", *([f"history {scrapped}"] if scrapped else []), "report duty",
                    "report customers", "report units", "report volume", "replay --upto 20",
                    "report html report.html"):
        render.out(f"  {custody} {command}")
    render.out()
    with open_store(db, readonly=True) as store:
        render.emit(reports.of_store(store, "compliance", until=None, now_us=now))


def _is_default_store(db: Path) -> bool:
    """Whether a command given no --db (nor --ledger) opens `db`: the default store resolves to it and no
    CUSTODY_LEDGER sends it to a service instead (an explicit --db beats that, so the hints give one)."""
    return not os.environ.get("CUSTODY_LEDGER") and Path(db_url(None)).resolve() == db.resolve()


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
