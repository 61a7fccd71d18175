"""`custody checkpoint`, `cosign`, `prove` and `verify-proof`: the log's transparency, for its users."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import (
    DbOption,
    JsonOption,
    KeyOption,
    LedgerOption,
    PassphraseOption,
    ledger_url,
    load_key,
    open_store,
)
from ledger import append, files, keys, limits, tree_head, values
from ledger import cosign as cosigning
from ledger import proof as proofs
from ledger.errors import BadInput, NotFound
from ledger.statement import key_id


def checkpoint(
    key: Annotated[Path | None, typer.Option("--key", help="The operator's private key (not with --ledger).")]
    = None,
    out: Annotated[Path | None, typer.Option("--out",
                                             help="Write the signed note here (default: stdout).")] = None,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Sign the log's current tree head with the operator key and store it in the ledger.

    Refuses (exit 1) if the log does not extend the latest checkpoint it signed before: statements were
    dropped or rewritten. Signing again at the same size gives the same note and stores nothing new.
    With --ledger, print (or write) the checkpoint the service serves instead; the service signs its own.
    """
    if out is not None and not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise BadInput(f"cannot write {out}: no such directory")
    url = ledger_url(db, ledger)
    if url is not None:
        if key is not None:
            raise BadInput("with --ledger the service signs its checkpoints: give no --key")
        from ledger.service import client

        with client.connect(url) as service:
            served = service.checkpoint()
        if served is None:
            raise NotFound(f"the ledger service at {url} holds no ledger yet: no checkpoint")
        if out is None:
            render.out_lines(served.splitlines())  # the service's text, shown as text: escaped
        else:
            files.write_atomic(out, served.encode())
            render.out(f"checkpoint served by {url} written to {out}")
        return
    if key is None:
        raise BadInput("give the operator's --key (or --ledger URL to print the served checkpoint)")
    signer = load_key(key, passphrase_file)
    with open_store(db) as store:
        signed = tree_head.sign_tree_head(store, signer)
    cp = signed.checkpoint
    status = "stored in the ledger" if signed.stored else "already stored in the ledger"
    if out is None:
        render.out_raw(signed.note, nl=False)
        render.say(f"checkpoint of size {cp.size} {status}")
        return
    files.write_atomic(out, signed.note.encode())
    render.out(f"checkpoint of size {cp.size} (root {cp.root.hex()}) {status}, written to {out}")


def cosign(
    name: Annotated[str, typer.Option("--name", help="The witness's key name, e.g. witness.example/w1.")],
    key: KeyOption,
    checkpoint_file: Annotated[Path | None, typer.Argument(
        metavar="CHECKPOINT", help="The signed checkpoint note; rewritten in place with the cosignature "
                                   "added.")] = None,
    ledger: Annotated[str | None, typer.Option(
        "--ledger", metavar="URL", help="Cosign the checkpoint a `custody serve` at URL serves, and post the "
                                        "cosignature back (instead of CHECKPOINT).")] = None,
    state: Annotated[Path | None, typer.Option(
        "--state", help="The witness's state: the last checkpoint it cosigned (default: witness-NAME.state "
                        "beside CHECKPOINT, or in the working directory with --ledger).")] = None,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
) -> None:
    """Cosign a checkpoint as a witness (C2SP tlog-cosignature/v1), after checking it against the ledger.

    The operator's signature must verify, the ledger's root at that size must be the checkpoint's, and a
    consistency proof must take the last checkpoint this witness cosigned (its --state file) to this one:
    a rollback or a fork is refused (exit 1). Then check it with
    `custody verify --checkpoint CHECKPOINT --witness NAME=WITNESS.pub`. With --ledger URL, the
    checkpoint and the proofs come from the service (the operator key from its genesis, trusted on first
    use), the cosigned note is printed and posted to URL/v1/cosignatures.
    """
    cosigning.check_witness_name(name)
    if ledger is not None:
        if checkpoint_file is not None or db is not None:
            raise BadInput("give CHECKPOINT (with --db) or --ledger URL, not both")
        _cosign_remote(ledger, name, key, state, passphrase_file)
        return
    if checkpoint_file is None:
        raise BadInput("give the CHECKPOINT file to cosign, or --ledger URL")
    data = limits.read_file(checkpoint_file, limits.MAX_NOTE_FILE_BYTES, "checkpoint")
    witness = load_key(key, passphrase_file)
    state_path = state or cosigning.default_state_path(checkpoint_file, name)
    with open_store(db, readonly=True) as store:
        result = cosigning.cosign(store, data, name=name, key=witness, state_path=state_path,
                                     timestamp=int(time.time()))
    files.write_atomic(checkpoint_file, result.note.encode())
    since = f" (extends size {result.previous.size})" if result.previous else " (first for this witness)"
    render.out(f"cosigned checkpoint of size {result.checkpoint.size} as {name}{since}; "
               f"wrote {checkpoint_file} and {state_path}")


def _cosign_remote(url: str, name: str, key: Path, state: Path | None, passphrase_file: Path | None) -> None:
    from ledger import witness_remote

    witness = load_key(key, passphrase_file)
    state_path = state or cosigning.default_state_path(Path("checkpoint"), name)
    result = witness_remote.cosign_ledger(url, name=name, key=witness, state_path=state_path,
                                          timestamp=int(time.time()))
    render.out_lines(result.note.splitlines())  # text from a service, shown escaped
    since = f" (extends size {result.previous.size})" if result.previous else " (first for this witness)"
    render.say(f"cosigned checkpoint of size {result.checkpoint.size} of {url} as {name}{since}; "
               f"wrote {state_path}; the service stored {result.stored} cosignature(s)")


def prove(
    serial: Annotated[str, typer.Argument(help="The unit's serial.")],
    out: Annotated[Path, typer.Option("--out", help="The proof file to write (custody-proof/1 JSON).")],
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Write a self-contained proof of one unit's history against the latest stored checkpoint.

    The file holds the unit's statements, those that authorise their signers, an inclusion proof for
    each and the checkpoint; anyone checks it offline with `custody verify-proof`. Needs no key; run
    `custody checkpoint` first if no checkpoint covers the unit's newest statement.
    """
    values.check_serial(serial)
    url = ledger_url(db, ledger)
    if url is not None:
        from ledger.service import client

        with client.connect(url) as service:
            data = service.unit_proof(serial)
        proof = proofs.parse_proof(data)  # well-formed; `verify-proof` checks it against trusted keys
    else:
        with open_store(db, readonly=True) as store:
            proof = proofs.build_proof(store, serial, now_us=append.now_us())
        data = proof.encode()
    files.write_atomic(out, data)
    steps = sum(1 for e in proof.entries if _is_step(e))
    render.out(f"proof for unit {serial}: {steps} step(s) and {len(proof.entries) - steps} authorising "
               f"statement(s) against the checkpoint of size {_size(proof)}, written to {out} "
               f"({len(data)} bytes)")


def _is_step(entry: proofs.ProofEntry) -> bool:
    return bool(proofs.decode_at(entry).units)


def _size(proof: proofs.UnitProof) -> int:
    from ledger import checkpoint as notes

    return notes.parse_note(proof.signed_checkpoint).checkpoint.size


def verify_proof(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A proof written by `custody prove`.")],
    trust: Annotated[list[Path], typer.Option("--trust", help="Trusted authority public key (repeatable); "
                                              "every genesis authority must be one.")],
    operator: Annotated[Path | None, typer.Option(
        "--operator", help="The log operator's public key (default: the one the genesis names).")] = None,
    json_out: JsonOption = False,
) -> None:
    """Check a unit's proof without the ledger, then show its verified history and findings.

    Exit 0 when the proof verifies (even if the unit's history shows findings such as
    SKIPPED_INSPECTION), 1 when it does not, 2 when FILE is not a proof or a key file is unusable.
    """
    trusted = [keys.load_public(p) for p in trust]
    operator_key = keys.load_public(operator) if operator else None
    data = limits.read_file(file, limits.MAX_PROOF_FILE_BYTES, "proof")
    result = proofs.verify_proof_file(data, trusted=trusted, operator=operator_key, now_us=append.now_us())
    cp = result.checkpoint
    if json_out:
        render.print_json({"verified": True, "serial": result.serial, "origin": result.origin,
                           "checkpoint": {"size": cp.size, "root": cp.root.hex()},
                           "operator": key_id(result.operator), "statements": result.statements,
                           "steps": [render.step_json(s) for s in result.steps],
                           "findings": [render.finding_json(f) for f in result.findings]})
        return
    render.out(f"proof verified: unit {result.serial} of {result.origin}, against the checkpoint of size "
               f"{cp.size} (root {cp.root.hex()}), {result.statements} statement(s)")
    render.out_lines(render.step_lines(result.steps))
    if result.findings:
        render.out(f"findings: {len(result.findings)}")
        render.out_lines(render.unit_finding_lines(result.findings))
    else:
        render.out("findings: none (no step skipped, as far as the checkpoint shows)")


def register(app: typer.Typer) -> None:
    app.command("checkpoint")(checkpoint)
    app.command("cosign")(cosign)
    app.command("prove")(prove)
    app.command("verify-proof")(verify_proof)
