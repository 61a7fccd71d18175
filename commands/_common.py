"""What every command shares: the store and key options, opening the store, loading a key, progress."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from ledger import keys
from ledger.errors import BadInput
from ledger.store import DEFAULT_DB, Store

DbOption = Annotated[str | None, typer.Option("--db", help="Ledger database: a file path or postgresql://… URL "
                                                "(env CUSTODY_DB; default custody.db).", show_default=False)]
LedgerOption = Annotated[str | None, typer.Option("--ledger", metavar="URL", help="A `custody serve` to submit "
                                                  "to or read from, instead of a database (env CUSTODY_LEDGER).",
                                                  show_default=False)]
KeyOption = Annotated[Path, typer.Option("--key", help="Private key file (OpenSSH or PEM).")]
PassphraseOption = Annotated[Path | None, typer.Option("--passphrase-file",
                                                       help="Read the key's passphrase from this file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")]


_GLOBAL: dict[str, str | None] = {"db": None}


def set_global_db(db: str | None) -> None:
    """`custody --db X COMMAND`: the value given before the command."""
    _GLOBAL["db"] = db


def db_url(db: str | None) -> str:
    """The command's --db, else the global --db, else CUSTODY_DB, else custody.db."""
    return db or _GLOBAL["db"] or os.environ.get("CUSTODY_DB") or DEFAULT_DB


def ledger_url(db: str | None, ledger: str | None) -> str | None:
    """The service URL when the command goes over HTTP (`--ledger`, else CUSTODY_LEDGER), None for a store.

    `--db` and `--ledger` together are a usage error; an option beats an environment variable.
    """
    db_given = db or _GLOBAL["db"]
    if ledger and db_given:
        raise BadInput("give --db or --ledger, not both")
    if ledger:
        return ledger
    if db_given:
        return None
    from_env = os.environ.get("CUSTODY_LEDGER") or None
    if from_env and os.environ.get("CUSTODY_DB"):
        raise BadInput("CUSTODY_DB and CUSTODY_LEDGER are both set: give --db or --ledger")
    return from_env


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
