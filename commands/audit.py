"""`custody verify` and `custody history`: what auditors run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from commands._common import (
    EXIT_INTEGRITY,
    EXIT_NONCOMPLIANT,
    DbOption,
    JsonOption,
    handle_errors,
    hexify,
    open_store,
    print_json,
    progress,
)
from ledger import append, keys, limits, values
from ledger import verify as verification
from ledger.errors import BadInput
from ledger.history import unit_history
from ledger.state import Finding


def finding_json(f: Finding) -> dict[str, Any]:
    return {"code": f.code, "serial": f.serial, "index": f.index, "detail": f.detail}


def _witness(text: str) -> verification.Witness:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise BadInput(f"bad --witness {text!r}: use NAME=PUBFILE")
    return verification.Witness(name, keys.load_public(Path(path)))


def _read_note(path: Path) -> tuple[str, str]:
    try:
        return str(path), limits.read_file(path, limits.MAX_NOTE_FILE_BYTES, "checkpoint").decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"checkpoint {path} is not UTF-8 text") from e


@handle_errors
def verify(
    bundle: Annotated[Path | None, typer.Argument(help="A bundle to verify offline (default: the database).")] = None,
    trust: Annotated[list[Path] | None, typer.Option("--trust", help="Trusted authority public key.")] = None,
    checkpoint: Annotated[list[Path] | None, typer.Option("--checkpoint",
                                                          help="A checkpoint the log must extend.")] = None,
    witness: Annotated[list[str] | None, typer.Option("--witness", help="NAME=PUBFILE that must cosign.")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Time for OVERDUE (default: now).")] = None,
    json_out: JsonOption = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Processes (default: all cores).")] = None,
    db: DbOption = None,
) -> None:
    """Re-check every statement, chain, index and checkpoint; then compliance."""
    now = append.now_us()
    options = verification.Options(
        trusted=[keys.load_public(p) for p in trust] if trust else None,
        checkpoints=[_read_note(p) for p in checkpoint or []],
        witnesses=[_witness(w) for w in witness or []],
        as_of=values.parse_time(as_of) if as_of else now, now=now, workers=workers)
    if bundle is not None:
        if not bundle.exists():
            raise BadInput(f"no bundle at {bundle}")
        with progress("verifying", None) as advance:
            options.progress = advance
            report = verification.verify_bundle(bundle, options)
    else:
        with open_store(db, readonly=True) as store, progress("verifying", store.size()) as advance:
            options.progress = advance
            report = verification.verify_store(store, options)
    for warning in report.warnings:
        typer.echo(f"custody: warning: {warning}", err=True)
    if json_out:
        print_json({"intact": report.intact, "compliant": report.compliant, "log_size": report.log_size,
                    "checks": list(report.checks),
                    "failures": [{"check": f.check, "index": f.index, "detail": f.detail} for f in report.failures],
                    "violations": report.violations, "findings": [finding_json(f) for f in report.findings]})
    else:
        typer.echo(f"checks: {', '.join(report.checks)}")
        typer.echo(f"log size: {report.log_size}")
        for failure in report.failures:
            where = f" at index {failure.index}" if failure.index is not None else ""
            typer.echo(f"FAIL {failure.check}{where}: {failure.detail}")
        if report.intact:
            typer.echo("intact: yes")
            if report.findings:
                typer.echo(f"compliant: no ({report.violations} finding(s))")
                for f in report.findings[:50]:
                    typer.echo(f"  {f.code:24} {f.serial or '-':20} index {f.index}: {f.detail}")
                if report.violations > 50:
                    typer.echo(f"  … and {report.violations - 50} more (see `custody report compliance`)")
            else:
                typer.echo("compliant: yes")
        else:
            typer.echo(f"intact: NO ({len(report.failures)} failure(s) listed)")
    if not report.intact:
        first = report.failures[0]
        where = f" at index {first.index}" if first.index is not None else ""
        typer.echo(f"custody: verification failed: {first.check}{where}: {first.detail}", err=True)
        raise typer.Exit(EXIT_INTEGRITY)
    if not report.compliant:
        raise typer.Exit(EXIT_NONCOMPLIANT)


@handle_errors
def history(serial: Annotated[str, typer.Argument(help="The unit's serial.")],
            at: Annotated[str | None, typer.Option("--at", help="Show the unit as it stood then.")] = None,
            json_out: JsonOption = False, db: DbOption = None) -> None:
    """Every custody step of one unit, verified chain order."""
    values.check_serial(serial)
    until = values.parse_time(at) if at else None
    with open_store(db, readonly=True) as store:
        found = unit_history(store, serial, until=until, now_us=append.now_us())
    steps = [{"index": s.index, "kind": s.statement.kind, "at": values.format_time(s.statement.at),
              "signer": s.statement.signer, "participant": s.participant, "hash": s.statement.hash.hex(),
              "data": hexify(dict(s.statement.data))} for s in found.steps]
    if json_out:
        print_json({"serial": serial, "steps": steps, "findings": [finding_json(f) for f in found.findings]})
        return
    typer.echo(f"unit {serial}")
    for step in steps:
        details = ", ".join(f"{k}={v}" for k, v in step["data"].items())
        typer.echo(f"  #{step['index']:<6} {step['at']:24} {step['kind']:14} by {step['participant'] or '?':12} "
                   f"{details}")
    for f in found.findings:
        typer.echo(f"  ! {f.code} at index {f.index}: {f.detail}")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.command("history")(history)
