"""`custody export`, `import` and `export-epcis`: bundles for auditors, EPCIS 2.0 for supply-chain tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import DbOption, db_url, open_store, progress
from commands._gc import collector_paused
from ledger import keys
from ledger.store import redact

UptoOption = Annotated[int | None, typer.Option(
    "--upto", min=0, metavar="INDEX", help="Export the log prefix 0…INDEX (default: the whole log).")]


def _range(count: int) -> str:
    return f"0…{count - 1}" if count else "none"


def export(bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The bundle file to write.")],
           upto: UptoOption = None, db: DbOption = None) -> None:
    """Write an offline audit bundle: the statements, then the checkpoints that cover them."""
    from ledger import transfer  # on use: the other commands' start-up need not load it

    with open_store(db, readonly=True) as store:
        total = store.size() if upto is None else upto + 1
        with progress("exporting", total) as advance:
            done = transfer.export_bundle(store, bundle, upto=upto, progress=advance)
    render.out(f"exported statements {_range(done.statements)} ({done.statements}) and {done.checkpoints} "
               f"checkpoint(s) of {done.origin} to {done.path}; root {done.root.hex()}")


def import_bundle(bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The bundle to import.")],
                  trust: Annotated[list[Path] | None, typer.Option(
                      "--trust", help="Trusted authority public key (as verify --trust).")] = None,
                  db: DbOption = None) -> None:
    """Verify a bundle, then append it to an empty ledger or to the ledger it extends."""
    from ledger import transfer  # on use: the other commands' start-up need not load it

    url = db_url(db)
    trusted = [keys.load_public(p) for p in trust] if trust else None
    with progress("verifying", None) as advance, collector_paused():
        plan = transfer.prepare_import(url, bundle, progress=advance, trusted=trusted)
    with progress("importing", max(plan.statements - plan.target_size, 0)) as advance:
        done = transfer.run_import(plan, progress=advance)
    for warning in plan.warnings:  # after the import: a refusal stays one line
        render.warn(warning)
    where = redact(done.url)
    if done.appended:
        render.out(f"imported statements {done.present}…{done.log_size - 1} ({done.appended}) and "
                   f"{done.checkpoints} checkpoint(s) of {done.origin} into {where}; "
                   f"log size {done.log_size}")
    else:
        render.out(f"nothing to import: {where} already holds all {done.log_size} statements of {bundle}"
                   + (f"; stored {done.checkpoints} new checkpoint(s)" if done.checkpoints else ""))
    if plan.findings:
        render.say(f"note: the imported ledger has {plan.findings} compliance finding(s) (see `custody verify`)")


def export_epcis(file: Annotated[Path, typer.Argument(metavar="FILE", help="The EPCIS file to write.")],
                 upto: UptoOption = None, db: DbOption = None) -> None:
    """Write the custody steps as a GS1 EPCIS 2.0 document (one event per step)."""
    from ledger import transfer  # on use: the other commands' start-up need not load it

    with open_store(db, readonly=True) as store:
        total = store.size() if upto is None else upto + 1
        with progress("exporting", total) as advance:
            done = transfer.export_epcis(store, file, upto=upto, progress=advance)
    render.out(f"exported {done.events} EPCIS event(s) from statements {_range(done.statements)} "
               f"to {done.path}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_bundle)
    app.command("export-epcis")(export_epcis)
