"""`custody verify` and `custody history`: what auditors run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import DbOption, JsonOption, LedgerOption, ledger_url, open_store, progress
from commands._errors import EXIT_INTEGRITY, EXIT_NONCOMPLIANT
from commands._gc import collector_paused
from ledger import append, keys, limits, values
from ledger import verify as verification
from ledger.errors import BadInput
from ledger.history import document as history_document
from ledger.history import unit_history
from ledger.state import Finding


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
    ledger: LedgerOption = None,
) -> None:
    """Re-check every statement, chain, index and checkpoint; then compliance."""
    now = append.now_us()
    options = verification.Options(
        trusted=[keys.load_public(p) for p in trust] if trust else None,
        checkpoints=[_read_note(p) for p in checkpoint or []],
        witnesses=[_witness(w) for w in witness or []],
        as_of=values.parse_time(as_of) if as_of else now, now=now, workers=workers)
    url = ledger_url(db, ledger)
    if url is not None and bundle is not None:
        raise BadInput("give a BUNDLE or --ledger, not both")
    if url is not None:
        from ledger.service import client, follow

        with client.connect(url) as service, progress("verifying", None) as advance:
            options.progress = advance
            report = follow.verify_served(service, options)
    elif bundle is not None:
        if not bundle.exists():
            raise BadInput(f"no bundle at {bundle}")
        with progress("verifying", None) as advance, collector_paused():
            options.progress = advance
            report = verification.verify_bundle(bundle, options)
    else:
        with open_store(db, readonly=True) as store, progress("verifying", store.size()) as advance, \
                collector_paused():
            options.progress = advance
            report = verification.verify_store(store, options)
    for warning in report.warnings:
        render.warn(warning)
    if json_out:
        render.print_json({
            "intact": report.intact, "compliant": report.compliant, "log_size": report.log_size,
            "checks": list(report.checks),
            "failures": [{"check": f.check, "index": f.index, "detail": f.detail} for f in report.failures],
            "violations": report.violations, "findings": [render.finding_json(f) for f in report.findings]})
    else:
        render.out_lines(_verify_lines(report))
    if not report.intact:
        first = report.failures[0]
        where = f" at index {first.index}" if first.index is not None else ""
        render.say(f"verification failed: {first.check}{where}: {first.detail}")
        raise typer.Exit(EXIT_INTEGRITY)
    if not report.compliant:
        raise typer.Exit(EXIT_NONCOMPLIANT)


def _verify_lines(report: verification.Report) -> list[str]:
    lines = [f"checks: {', '.join(report.checks)}", f"log size: {report.log_size}"]
    for failure in report.failures:
        where = f" at index {failure.index}" if failure.index is not None else ""
        lines.append(f"FAIL {failure.check}{where}: {failure.detail}")
    if not report.intact:
        return [*lines, f"intact: NO ({len(report.failures)} failure(s) listed)"]
    lines.append("intact: yes")
    if not report.findings:
        return [*lines, "compliant: yes"]
    return [*lines, f"compliant: no ({report.violations} finding(s))",
            *render.finding_lines(report.findings, report.violations)]


def history(serial: Annotated[str, typer.Argument(help="The unit's serial.")],
            at: Annotated[str | None, typer.Option("--at", help="Show the unit as it stood then.")] = None,
            json_out: JsonOption = False, db: DbOption = None, ledger: LedgerOption = None) -> None:
    """Every custody step of one unit, verified chain order."""
    values.check_serial(serial)
    until = values.parse_time(at) if at else None
    url = ledger_url(db, ledger)
    if url is not None:
        from ledger.service import client

        with client.connect(url) as service:
            document = service.unit(serial, values.format_time(until) if until is not None else None)
    else:
        with open_store(db, readonly=True) as store:
            document = history_document(unit_history(store, serial, until=until, now_us=append.now_us()))
    if json_out:
        render.print_json(document)
        return
    found = [Finding(f["code"], f["serial"], f["index"], f["detail"]) for f in document["findings"]]
    render.out_lines([f"unit {serial}", *render.step_json_lines(document["steps"]),
                      *render.unit_finding_lines(found)])


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
    app.command("history")(history)
