"""`custody report html FILE [--until TIME]`: the visual report, written as one self-contained page.

Presentation only: `ledger.visual` gathers the page's data, `ledger.visual_html` renders it; this writes it
all at once (a failure leaves no half-written file) and says what it wrote.
"""

from __future__ import annotations

from pathlib import Path

from commands import render
from commands._common import open_store
from ledger import append, files, values
from ledger.errors import BadInput


def write(file: Path, until: str | None, db: str | None, ledger: str | None = None) -> None:
    """Write the page for the ledger at `db` (or served at `ledger`), as of `until` (default: now), to `file`."""
    if file.is_dir():
        raise BadInput(f"cannot write {file}: it is a folder")
    when = values.parse_time(until) if until is not None else None
    if ledger is not None:
        from ledger.service import client

        with client.connect(ledger) as service:
            data = service.page(values.format_time(when) if when is not None else None)
        files.write_atomic(file, data)
        render.out(f"wrote {file} ({len(data):,} bytes) as the ledger service at {ledger} made it")
        return
    from ledger import visual, visual_html  # on use: the other commands' start-up need not load them

    now = append.now_us()
    with open_store(db, readonly=True) as store:
        page = visual.build(store, until=when, now_us=now)
    data = visual_html.render(page).encode()
    files.write_atomic(file, data)
    found = len(page.reports["compliance"]["findings"])
    verdict = "intact" if page.verification.intact else "NOT intact"
    render.out(f"wrote {file} ({len(data):,} bytes): ledger {verdict}, {page.log_size:,} statements, "
               f"{found:,} finding(s), as of {values.format_time(page.as_of)}")
