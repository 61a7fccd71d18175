"""`custody declare`: a participant's declaration (a statement without units): `us-volume`."""

from __future__ import annotations

from typing import Annotated

import typer

from commands import render
from commands._common import DbOption, KeyOption, LedgerOption, PassphraseOption, ledger_url, load_key, open_store
from ledger import append, values

declare_app = typer.Typer(help="Sign and append a declaration (a statement without units).",
                          no_args_is_help=True)


@declare_app.command("us-volume")
def us_volume(
    model: Annotated[str, typer.Option("--model", help="The model, e.g. H200-SXM5-141GB.")],
    start: Annotated[str, typer.Option("--from", metavar="TIME", help="The period's start (ISO 8601).")],
    until: Annotated[str, typer.Option("--until", metavar="TIME",
                                       help="The period's end, excluded (a bare date: the next midnight UTC).")],
    units: Annotated[int, typer.Option("--units", min=0, metavar="N",
                                       help="Units of the model shipped to U.S. customers in the period.")],
    key: KeyOption,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Declare the units of a model shipped to U.S. customers in [--from, --until) (the 50 % rule)."""
    data = append.us_volume_data(model, values.parse_time(start), values.parse_period_end(until), units)
    url = ledger_url(db, ledger)
    signer = load_key(key, passphrase_file)
    if url is not None:  # signed here, submitted to the service: the key never leaves the machine
        from ledger.service import client

        with client.connect(url) as service:
            done = client.record(service, signer, "us_volume_reported", data)
    else:
        with open_store(db) as store:
            done = append.record(store, signer, "us_volume_reported", data)
    render.out(f"recorded the U.S. volume of {model} ({units} units, {values.format_time(data['from'])} to "
               f"{values.format_time(data['until'])}) at index {done.index} ({done.statement.hash.hex()})")
    if done.findings:
        codes = sorted({f.code for f in done.findings})
        render.say(f"recorded with {len(done.findings)} finding(s): {', '.join(codes)}")


def register(app: typer.Typer) -> None:
    app.add_typer(declare_app, name="declare")
