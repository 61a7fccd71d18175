"""`custody`: the command line. Parsing and presentation only; the rules live in `ledger/`."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from commands import (
    _common,
    _errors,
    admin,
    audit,
    bundles,
    declare_cmd,
    demo_cmd,
    keys_cmd,
    record_cmd,
    reports,
    serve_cmd,
    transparency,
    witness_cmd,
)


def _version() -> str:
    try:
        return version("custody")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.1.0"


app = typer.Typer(cls=_errors.OneLineGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, add_completion=False,
                  help="A signed, hash-chained chain-of-custody ledger for export-controlled accelerators.")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"custody {_version()}")
        raise typer.Exit(0)


@app.callback()
def main(
    db: _common.DbOption = None,
    show_version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                               help="Print the version and exit.")] = False,
) -> None:
    """A signed, hash-chained chain-of-custody ledger for export-controlled accelerators."""
    _common.set_global_db(db)


keys_cmd.register(app)
admin.register(app)
record_cmd.register(app)
declare_cmd.register(app)
audit.register(app)
transparency.register(app)
bundles.register(app)
reports.register(app)
demo_cmd.register(app)
serve_cmd.register(app)
witness_cmd.register(app)


def run() -> None:
    _errors.own_the_process()
    app(prog_name="custody")
