"""`custody`: the command line. Parsing and presentation only; the rules live in `ledger/`."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from typer import exceptions as typer_exceptions
from typer._click import exceptions as click_exceptions
from typer.core import TyperGroup

from commands import _common, admin, audit, bundles, demo_cmd, keys_cmd, record_cmd, reports, transparency


def _version() -> str:
    try:
        return version("custody")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "0.1.0"


class _OneLineGroup(TyperGroup):
    """DESIGN.md: errors are one line on stderr; no usage panel, no traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name or "custody", complete_var, standalone_mode=False, **extra)
        except click_exceptions.UsageError as e:
            command = e.ctx.command_path if e.ctx else "custody"
            typer.echo(f"{command}: {' '.join(e.format_message().split())}", err=True)
            sys.exit(_common.EXIT_USAGE)
        except click_exceptions.ClickException as e:
            typer.echo(f"custody: {' '.join(e.format_message().split())}", err=True)
            sys.exit(_common.EXIT_USAGE)
        except typer_exceptions.Abort:
            typer.echo("custody: aborted", err=True)
            sys.exit(_common.EXIT_USAGE)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(cls=_OneLineGroup, no_args_is_help=True, pretty_exceptions_enable=False,
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
audit.register(app)
transparency.register(app)
bundles.register(app)
reports.register(app)
demo_cmd.register(app)


def run() -> None:
    app(prog_name="custody")
