"""`custody report html FILE [--until TIME]`: the visual report, written as one self-contained page.

Presentation only: `ledger.visual` gathers the page's data from a store (`ledger.service.report_page` from a
service's JSON routes and tiles), `ledger.visual_html` renders it; this writes it all at once (a failure
leaves no half-written file) and says what it wrote.
"""

from __future__ import annotations

from pathlib import Path

from commands import render
from commands._common import open_store
from commands._gc import collector_paused
from ledger import append, files, values
from ledger.errors import BadInput


def write(file: Path, until: str | None, db: str | None, ledger: str | None = None) -> None:
    """Write the page for the ledger at `db` (or served at `ledger`), as of `until` (default: now), to `file`."""
    if file.is_dir():
        raise BadInput(f"cannot write {file}: it is a folder")
    when = values.parse_time(until) if until is not None else None
    now = append.now_us()
    if ledger is not None:
        from ledger.service import client, report_page  # on use, as below

        with client.connect(ledger) as service:
            page, data = report_page.page_html(service, until=when, now_us=now)
        source = f" from the ledger service at {ledger}"
    else:
        from ledger import visual, visual_html  # on use: the other commands' start-up need not load them

        with collector_paused():  # the page folds the whole log, as `verify` does
            with open_store(db, readonly=True) as store:
                page = visual.build(store, until=when, now_us=now)
            data = visual_html.render(page).encode()
        source = ""
    files.write_atomic(file, data)
    found = len(page.reports["compliance"]["findings"])
    verdict = "intact" if page.verification.intact else "NOT intact"
    render.out(f"wrote {file} ({len(data):,} bytes){source}: ledger {verdict}, {page.log_size:,} statements, "
               f"{found:,} finding(s), as of {values.format_time(page.as_of)}")
