"""`custody replay` and `custody report`: what regulators run. Presentation only; see ledger/reports.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commands import render, report_html
from commands._common import DbOption, JsonOption, LedgerOption, ledger_url, open_store, progress
from commands._gc import collector_paused
from ledger import append, reports, values
from ledger.errors import BadInput
from ledger.policy import load_policy_file

UntilOption = Annotated[str | None, typer.Option(
    "--until", metavar="TIME", help="Fold the statements with at ≤ TIME (ISO 8601) and report as of TIME.")]


def replay(
    until: UntilOption = None,
    upto: Annotated[int | None, typer.Option("--upto", min=0, metavar="INDEX",
                                                      help="Fold the log prefix 0…INDEX.")] = None,
    policy_file: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE", help="What-if: this policy replaces every recorded one.")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild",
                                          help="Rebuild the stored views from the log.")] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Processes verifying signatures (default: all cores).")] = None,
    json_out: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Fold the log (or a prefix of it) again, in memory, and summarise; stores nothing unless --rebuild."""
    if until is not None and upto is not None:
        raise BadInput("give --until or --upto, not both")
    if rebuild and (until is not None or upto is not None or policy_file is not None):
        raise BadInput("--rebuild rebuilds the views from the whole log under the recorded policies; "
                       "it takes no --until, --upto or --policy")
    when = values.parse_time(until) if until is not None else None
    what_if = load_policy_file(policy_file) if policy_file is not None else None
    now = append.now_us()
    if rebuild:
        with open_store(db) as store, progress("rebuilding views", store.size()) as advance, collector_paused():
            summary = reports.rebuild_summary(store, now_us=now, progress=advance, workers=workers)
    else:
        with open_store(db, readonly=True) as store, progress("replaying", store.size()) as advance, \
                collector_paused():
            summary = reports.replay_summary(store, now_us=now, until=when, upto=upto, policy=what_if,
                                             progress=advance, workers=workers)
    if json_out:
        render.print_json(summary)
    else:
        render.out_lines(render.summary_lines(summary, rebuilt=rebuild))


def report(
    name: Annotated[str, typer.Argument(metavar="NAME", help="compliance, duty, customers, units, volume, or html.")],
    file: Annotated[Path | None, typer.Argument(metavar="[FILE]", help="html only: the page to write.")] = None,
    until: UntilOption = None,
    json_out: JsonOption = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="A CSV table on stdout.")] = False,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """A compliance, duty, customers, units or volume report, now or as of --until; `report html FILE` writes them
    all as one self-contained page."""
    if name == "html":
        if json_out or csv_out:
            raise BadInput("report html writes a page: it takes no --json or --csv")
        if file is None:
            raise BadInput("report html needs the FILE to write, e.g. custody report html report.html")
        report_html.write(file, until, db, ledger_url(db, ledger))
        return
    reports.check_name(name)
    if file is not None:
        raise BadInput(f"report {name} takes no FILE: only report html writes one")
    if json_out and csv_out:
        raise BadInput("give --json or --csv, not both")
    when = values.parse_time(until) if until is not None else None
    url = ledger_url(db, ledger)
    if url is not None:
        from ledger.service import client

        with client.connect(url) as service:
            built = client.report(service, name, when)
    else:
        with open_store(db, readonly=True) as store:
            built = reports.of_store(store, name, until=when, now_us=append.now_us())
    render.emit(built, json_out=json_out, csv_out=csv_out)


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("report")(report)
