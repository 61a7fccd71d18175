"""The one place where errors become DESIGN.md's exit statuses and one line on stderr (STYLE.md §4).

Every command runs inside `OneLineGroup.invoke`: a `LedgerError` anywhere below it is printed once and
exits with its family's status; usage errors from parsing print one line too, never Click's panel.
"""

from __future__ import annotations

import signal
import sys
import warnings
from collections.abc import Sequence
from types import FrameType
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
_STOPPING = False  # an interrupt has been raised as KeyboardInterrupt and is on its way to `invoke`


def own_the_process() -> None:
    """Say that this process runs one command and ends with it, so its Ctrl-C handling is ours to set.

    Python's own handler raises KeyboardInterrupt in whatever code runs when the signal arrives. In a
    finalizer (a `__del__`: a pipe to a worker dropped, the database closed as the command's frames are
    freed) the interpreter cannot raise it: it prints it with a traceback and carries on, as if there had
    been no Ctrl-C. So `_interrupted` does not raise it in a `__del__`, and `_swallowed` keeps quiet about
    one that a finalizer of another kind swallowed: either way the command goes on, and the next Ctrl-C
    stops it.
    """
    global _OWN_PROCESS
    _OWN_PROCESS = True
    signal.signal(signal.SIGINT, _interrupted)
    sys.unraisablehook = _swallowed


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C: raised once as KeyboardInterrupt, in the command's own code; more while that one is on its
    way change nothing."""
    global _STOPPING
    if _STOPPING or _in_finalizer(frame):
        return
    _STOPPING = True
    raise KeyboardInterrupt


def _in_finalizer(frame: FrameType | None) -> bool:
    """Whether Python runs this code as a `__del__`, where an exception cannot be raised to its caller."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _swallowed(unraisable: Any) -> None:
    """An exception a finalizer could not raise (a weak reference's callback, a generator's clean-up): if
    it is our interrupt, say nothing; the command goes on, ready for the next Ctrl-C."""
    global _STOPPING
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is _interrupted:
        _STOPPING = False
        return
    sys.__unraisablehook__(unraisable)


def _no_more_interrupts() -> None:
    """Ignore Ctrl-C from here on: the command has finished or is already stopping, and what is left
    (its exit, the interpreter's clean-up of worker processes) must end with the command's own status.
    An interrupt already received and not yet raised is raised here (by `signal.signal`), so a caller
    still inside `OneLineGroup.invoke` reports it."""
    if _OWN_PROCESS:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


class OneLineGroup(TyperGroup):
    """DESIGN.md: errors are one line on stderr, with the status of their family; no panel, no traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            try:
                with warnings.catch_warnings():  # a library's warning (DSA is deprecated…) is not the user's news
                    warnings.simplefilter("ignore")
                    return super().invoke(ctx)
            finally:  # the work is over: an interrupt not raised by now is one this `try` still catches
                _no_more_interrupts()
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
