"""What every command shares: the store option, key loading, output, progress and the error exit map."""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer

from ledger import keys
from ledger.errors import BadInput, IntegrityError, LedgerError, Refused, StoreError
from ledger.store import DEFAULT_DB, Store

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_INTEGRITY, EXIT_USAGE, EXIT_NONCOMPLIANT = 0, 1, 2, 3

DbOption = Annotated[str | None, typer.Option("--db", help="Ledger database: a file path or postgresql://… URL "
                                                "(env CUSTODY_DB; default custody.db).", show_default=False)]
KeyOption = Annotated[Path, typer.Option("--key", help="Private key file (OpenSSH or PEM).")]
PassphraseOption = Annotated[Path | None, typer.Option("--passphrase-file",
                                                       help="Read the key's passphrase from this file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


def exit_status(error: LedgerError) -> int:
    """DESIGN.md exit statuses, in one place."""
    if isinstance(error, IntegrityError | Refused):
        return EXIT_INTEGRITY
    if isinstance(error, BadInput | StoreError):
        return EXIT_USAGE
    return EXIT_USAGE


def fail(message: str, status: int = EXIT_USAGE) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    typer.echo(f"custody: {' '.join(message.split())}", err=True)
    return typer.Exit(status)


def handle_errors(func: F) -> F:
    """Map library errors to one line on stderr and DESIGN's exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LedgerError as e:
            raise fail(str(e) if isinstance(e, IntegrityError) else e.detail, exit_status(e)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; nothing half-written", EXIT_USAGE) from None
        except OSError as e:
            raise fail(f"{e.filename or ''}: {e.strerror or e}", EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


_GLOBAL: dict[str, str | None] = {"db": None}


def set_global_db(db: str | None) -> None:
    """`custody --db X COMMAND`: the value given before the command."""
    _GLOBAL["db"] = db


def db_url(db: str | None) -> str:
    """The command's --db, else the global --db, else CUSTODY_DB, else custody.db."""
    return db or _GLOBAL["db"] or os.environ.get("CUSTODY_DB") or DEFAULT_DB


@contextmanager
def open_store(db: str | None, *, create: bool = False, readonly: bool = False) -> Iterator[Store]:
    store = Store(db_url(db), create=create, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


def _prompt(path: Path) -> Callable[[], str] | None:
    if not sys.stdin.isatty():
        return None
    return lambda: getpass.getpass(f"Passphrase for {path}: ")


def load_key(path: Path, passphrase_file: Path | None) -> keys.PrivateKey:
    return keys.load_private(path, keys.passphrase_from(os.environ, passphrase_file, _prompt(path)))


def json_text(document: Any) -> str:
    """`json.dumps(document, indent=2, ensure_ascii=False)`, in C where msgspec can: the same text ten times
    faster (a verification's findings run to megabytes). What msgspec refuses (an integer beyond 64 bits, a
    lone surrogate) takes the standard library's way."""
    try:
        return msgspec.json.format(msgspec.json.encode(document), indent=2).decode()
    except (TypeError, ValueError, OverflowError, UnicodeError, msgspec.MsgspecError):
        return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False)


def print_json(document: Any) -> None:
    typer.echo(json_text(document))


def hexify(value: Any) -> Any:
    """Statement data as DESIGN.md shows it: bytes become hex, everything else as stored."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: hexify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hexify(v) for v in value]
    return value


@contextmanager
def progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal (stderr); silent when piped."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)
