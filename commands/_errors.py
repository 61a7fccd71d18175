"""The one place where errors become DESIGN.md's exit statuses and one line on stderr (STYLE.md §4).

Every command runs inside `OneLineGroup.invoke`: a `LedgerError` anywhere below it is printed once and
exits with its family's status; usage errors from parsing print one line too, never Click's panel.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from commands import render
from ledger.errors import BadInput, IntegrityError, LedgerError, Refused, StoreError, ViolationsFound

EXIT_OK, EXIT_INTEGRITY, EXIT_USAGE, EXIT_NONCOMPLIANT = 0, 1, 2, 3


def exit_status(error: LedgerError) -> int:
    """DESIGN.md exit statuses: integrity failures and refusals 1, bad input and the store 2."""
    if isinstance(error, IntegrityError | Refused):
        return EXIT_INTEGRITY
    if isinstance(error, BadInput | StoreError):
        return EXIT_USAGE
    return EXIT_USAGE


def message(error: LedgerError) -> str:
    """What the one line says: the check and index for integrity failures, the detail otherwise."""
    if isinstance(error, ViolationsFound):
        return f"refused: {error.detail} ({' or '.join(_ways_on(error))})"
    return str(error) if isinstance(error, IntegrityError) else error.detail


def _ways_on(error: ViolationsFound) -> list[str]:
    """What `record` can do about a refusal: record anyway, or (when some units are clean) record those."""
    ways = ["use --allow-violation to record anyway"]
    if error.some_clean:
        ways.append("--skip-violating to record the clean units only")
    return ways


_OWN_PROCESS = False  # set by `commands.main.run`: the process is the command's, not a test runner's


def own_the_process() -> None:
    """Say that this process runs one command and ends with it (so its Ctrl-C handling is ours to set)."""
    global _OWN_PROCESS
    _OWN_PROCESS = True


def _no_more_interrupts() -> None:
    """Ignore Ctrl-C from here on: the command has finished or is already stopping, and what is left
    (its exit, the interpreter's clean-up of worker processes) must end with the command's own status."""
    if _OWN_PROCESS:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class OneLineGroup(TyperGroup):
    """DESIGN.md: errors are one line on stderr, with the status of their family; no panel, no traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            with warnings.catch_warnings():  # a library's warning (DSA is deprecated…) is not the user's news
                warnings.simplefilter("ignore")
                return super().invoke(ctx)
        except LedgerError as e:
            render.say(message(e))
            raise typer.Exit(exit_status(e)) from None
        except KeyboardInterrupt:
            _no_more_interrupts()  # a second Ctrl-C while this unwinds must not print a traceback
            render.say("interrupted; nothing half-written")
            raise typer.Exit(EXIT_USAGE) from None
        except BrokenPipeError:  # writes to stdout go through `render.out`, which never raises this
            render.silence_stdout()
            raise typer.Exit(EXIT_OK) from None
        except OSError as e:
            render.say(f"{e.filename or ''}: {e.strerror or e}")
            raise typer.Exit(EXIT_USAGE) from None

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            try:
                rv = super().main(args, prog_name or "custody", complete_var, standalone_mode=False,
                                  windows_expand_args=windows_expand_args, **extra)
            finally:
                _no_more_interrupts()  # the work is over: a late Ctrl-C must not turn the exit into a traceback
        except typer.TyperException as e:  # Click's usage errors and other exceptions of its own
            ctx = getattr(e, "ctx", None)  # a usage error knows its command
            command = ctx.command_path if ctx is not None else "custody"
            typer.echo(f"{command}: {render.clean(' '.join(e.format_message().split()))}", err=True)
            sys.exit(EXIT_USAGE)
        except typer.Abort:
            render.say("aborted")
            sys.exit(EXIT_USAGE)
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code
