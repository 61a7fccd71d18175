"""`custody keys new|show`."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import DbOption, db_url
from ledger import directory, keys
from ledger.errors import KeyFileError
from ledger.statement import key_id

keys_app = typer.Typer(help="Make and inspect Ed25519 keys.", no_args_is_help=True)


def _new_passphrase(name: str) -> bytes:
    env = os.environ.get(keys.PASSPHRASE_ENV)
    if env:
        return env.encode()
    if not sys.stdin.isatty():
        raise KeyFileError(f"a passphrase for {name} is needed: set {keys.PASSPHRASE_ENV}, use a terminal, "
                           "or pass --no-passphrase")
    first = getpass.getpass(f"New passphrase for {name}: ")
    if first != getpass.getpass("Again: "):
        raise KeyFileError("the passphrases differ")
    if not first:
        raise KeyFileError("an empty passphrase: use --no-passphrase for an unencrypted key")
    return first.encode()


@keys_app.command("new")
def new(name: Annotated[str, typer.Argument(help="File name of the new key.")],
        directory: Annotated[Path, typer.Option("--dir", help="Keyring folder.")] = Path("keys"),
        no_passphrase: Annotated[bool, typer.Option("--no-passphrase",
                                                    help="Leave the private key unencrypted.")] = False,
        ) -> None:
    """Write DIR/NAME (private, 0600, bcrypt-pbkdf encrypted) and DIR/NAME.pub."""
    passphrase = None if no_passphrase else _new_passphrase(name)
    key = keys.generate()
    private, public = keys.write_keypair(directory, name, key, passphrase, comment=name)
    render.out(f"{key.key_id}  {private}  {public}")


@keys_app.command("show")
def show(file: Annotated[Path, typer.Argument(help="A public or private key file.")],
         db: DbOption = None) -> None:
    """Print the key id (and the participant, if the ledger knows the key)."""
    kid = key_id(keys.public_of(file, keys.passphrase_from(os.environ, None, None)))
    owner = directory.owner_in(db_url(db), kid)
    render.out(f"{kid}  {owner}" if owner else kid)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
