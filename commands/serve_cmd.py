"""`custody serve`: the ledger service on uvicorn (the library side is `ledger/service/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commands._common import DbOption, PassphraseOption, db_url, load_key
from ledger.errors import BadInput
from ledger.store import redact


def serve(
    operator_key: Annotated[Path, typer.Option("--operator-key", help="The log operator's private key: it "
                                               "signs the checkpoints.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on (TLS belongs to a reverse "
                                      "proxy in front).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8070,
    checkpoint_every: Annotated[float, typer.Option(
        "--checkpoint-every", min=0.01, max=3600, metavar="SECONDS",
        help="Sign a checkpoint within this long of any growth of the log.")] = 1.0,
    witness: Annotated[list[str] | None, typer.Option(
        "--witness", metavar="NAME=PUBFILE[=URL]",
        help="A witness whose cosignatures the service accepts (POST /v1/cosignatures) and serves; with a URL, "
             "each new checkpoint is pushed to its C2SP tlog-witness add-checkpoint (repeatable).")] = None,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
) -> None:
    """Serve the ledger over HTTP: submissions, reads, and the log as C2SP tlog-tiles.

    Participants submit statements they signed themselves; the service holds the operator key only, to
    sign checkpoints. Several processes may serve one PostgreSQL database.
    """
    import uvicorn

    from ledger.service import server
    from ledger.service.app import build_app
    from ledger.service.submission import Ledger
    from ledger.witnessing import load_witnesses

    witnesses = load_witnesses(witness or [])
    key = load_key(operator_key, passphrase_file)
    try:
        sock = server.bind(host, port)
    except OSError as e:
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    try:
        ledger = Ledger(db_url(db), key, checkpoint_every=checkpoint_every)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()
    typer.echo(f"custody: serving {ledger.origin or 'an empty ledger'} from {redact(ledger.db)} on "
               f"http://{bound[0]}:{bound[1]} (checkpoints every {checkpoint_every:g} s"
               f"{f', {len(witnesses)} witness(es)' if witnesses else ''})", err=True)
    try:
        uvicorn.Server(server.config(build_app(ledger, witnesses=witnesses))).run(sockets=[sock])
    finally:
        ledger.close()
        sock.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
