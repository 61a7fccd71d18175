"""`custody witness serve`: a standalone c2sp.org/tlog-witness over HTTP."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import KeyOption, PassphraseOption, load_key
from ledger import keys
from ledger.errors import BadInput

witness_app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                          help="Run a transparency-log witness (C2SP tlog-witness).")


def _logs(options: list[str]) -> dict[str, bytes]:
    logs: dict[str, bytes] = {}
    for option in options:
        origin, sep, pubfile = option.partition("=")
        if not sep or not origin or not pubfile:
            raise BadInput(f"--log {option!r}: expected ORIGIN=OPERATOR_PUBFILE")
        if origin in logs:
            raise BadInput(f"--log: origin {origin!r} is given twice")
        logs[origin] = keys.load_public(Path(pubfile))
    return logs


def _listen(host: str, port: int) -> socket.socket:
    """Bind now, so that a port in use is one line and exit 2, not a server's log and exit 1."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise BadInput(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


@witness_app.command("serve")
def serve(
    name: Annotated[str, typer.Option("--name", help="The witness's key name, e.g. witness.example/w1.")],
    key: KeyOption,
    state: Annotated[Path, typer.Option("--state", help="The witness's state: the latest checkpoint it cosigned "
                                        "per log (created if missing).")],
    log: Annotated[list[str], typer.Option("--log", metavar="ORIGIN=OPERATOR_PUBFILE",
                                           help="A log to witness: its origin and its operator's public key "
                                                "(repeatable).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8071,
    passphrase_file: PassphraseOption = None,
) -> None:
    """Serve POST /add-checkpoint: check each log's checkpoints and consistency proofs, and cosign them.

    Refuses (with the spec's status codes) an unknown log (404), a checkpoint without a valid operator
    signature (403), an old size that is not the one this witness cosigned last (409, naming it), and a
    proof that does not verify, a rollback or a fork (422). The state is replaced atomically before a
    cosignature is answered.
    """
    import uvicorn

    from ledger.witness_app import witness_app as make_app

    logs = _logs(log)
    from ledger.witness import Witness  # on use: the other commands' start-up need not load it

    witness = Witness(name, load_key(key, passphrase_file), logs, state)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    render.say(f"witness {name} listening on http://{host}:{bound}/add-checkpoint for {len(logs)} log(s), "
               f"state {state}")
    config = uvicorn.Config(make_app(witness), log_level="warning", timeout_keep_alive=5,
                            limit_concurrency=256, server_header=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def register(app: typer.Typer) -> None:
    app.add_typer(witness_app, name="witness")
