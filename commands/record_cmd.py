"""`custody record STEP`: a participant signs and appends one custody step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from commands import render
from commands._common import DbOption, KeyOption, LedgerOption, PassphraseOption, ledger_url, load_key, open_store
from ledger import append, values
from ledger.statement import CUSTODY_STEPS, MAX_WIRE_BYTES, data_fields, optional_fields

STEPS = {kind.replace("_", "-"): kind for kind in CUSTODY_STEPS}  # `shipped-to-us` → `shipped_to_us`, …

# the step options each step needs (DESIGN's data fields, `--entered-value` for `entered_value`) and takes
NEEDS = {kind: data_fields(kind) for kind in CUSTODY_STEPS}
TAKES = {kind: optional_fields(kind) for kind in CUSTODY_STEPS}


def _option(field: str) -> str:
    return "--" + field.replace("_", "-")


def _data(kind: str, given: dict[str, str | None]) -> dict[str, Any]:
    extra = [f for f, v in given.items() if v is not None and f not in NEEDS[kind] and f not in TAKES[kind]]
    if extra:
        raise typer.BadParameter(f"{_option(extra[0])} does not apply to {kind.replace('_', '-')}")
    data: dict[str, Any] = {}
    for field in (*NEEDS[kind], *TAKES[kind]):
        value = given.get(field)
        if value is None:
            if field in TAKES[kind]:
                continue  # optional: absent, never empty
            raise typer.BadParameter(f"{kind.replace('_', '-')} needs {_option(field)}")
        if field in ("entered_value", "duty"):
            data[field] = values.parse_money(value)
        elif field in ("country", "destination", "origin_country"):
            data[field] = values.parse_country(value)
        elif field == "consignee":
            data[field] = values.parse_id(value, "consignee")
        elif field == "result":
            if value not in ("pass", "fail"):
                raise typer.BadParameter(f"--result must be pass or fail, not {value!r}")
            data[field] = value
        else:
            data[field] = values.parse_text(value, _option(field))
    return data


def record(
    step: Annotated[str, typer.Argument(metavar="STEP", help="fabricated, shipped-to-us, inspected, duty-paid, "
                                                           "re-exported, received, located, destroyed or "
                                                           "withdrawn.")],
    key: KeyOption,
    serial: Annotated[list[str] | None, typer.Option("--serial", help="A unit's serial; repeatable.")] = None,
    serials_file: Annotated[Path | None, typer.Option("--serials-file", help="One serial per line.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="When the step happened (default: now).")] = None,
    allow_violation: Annotated[bool, typer.Option("--allow-violation", help="Record even with findings.")] = False,
    skip_violating: Annotated[bool, typer.Option("--skip-violating",
                                                 help="Record the clean units only.")] = False,
    model: Annotated[str | None, typer.Option("--model")] = None,
    site: Annotated[str | None, typer.Option("--site")] = None,
    lot: Annotated[str | None, typer.Option("--lot")] = None,
    port_of_entry: Annotated[str | None, typer.Option("--port-of-entry")] = None,
    waybill: Annotated[str | None, typer.Option("--waybill")] = None,
    result: Annotated[str | None, typer.Option("--result", help="pass or fail")] = None,
    country: Annotated[str | None, typer.Option("--country")] = None,
    report: Annotated[str | None, typer.Option("--report")] = None,
    entry: Annotated[str | None, typer.Option("--entry", help="Customs entry number.")] = None,
    entered_value: Annotated[str | None, typer.Option("--entered-value", help="USD, e.g. 216000.00")] = None,
    duty: Annotated[str | None, typer.Option("--duty", help="USD, e.g. 54000.00")] = None,
    consignee: Annotated[str | None, typer.Option("--consignee")] = None,
    license_: Annotated[str | None, typer.Option("--license")] = None,
    destination: Annotated[str | None, typer.Option("--destination")] = None,
    method: Annotated[str | None, typer.Option("--method", help="located: how the location was "
                                               "established; destroyed: how it was destroyed.")] = None,
    certificate: Annotated[str | None, typer.Option("--certificate",
                                                    help="The destruction certificate.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why the unit was withdrawn.")] = None,
    hts: Annotated[str | None, typer.Option("--hts", help="duty-paid: the tariff line, e.g. 9903.79.01.")] = None,
    importer: Annotated[str | None, typer.Option("--importer", help="duty-paid: the importer of record.")] = None,
    origin_country: Annotated[str | None, typer.Option("--origin-country",
                                                       help="duty-paid: the country of origin.")] = None,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Sign and append one custody step for one or more units."""
    kind = STEPS.get(step.replace("_", "-"))  # `shipped-to-us`, or `shipped_to_us` as history shows it
    if kind is None:
        raise typer.BadParameter(f"unknown step {step!r}: use {', '.join(STEPS)}", param_hint="STEP")
    if allow_violation and skip_violating:
        raise typer.BadParameter("give --allow-violation or --skip-violating, not both")
    data = _data(kind, {"model": model, "site": site, "lot": lot, "port_of_entry": port_of_entry,
                        "waybill": waybill, "result": result, "country": country, "report": report,
                        "entry": entry, "entered_value": entered_value, "duty": duty, "consignee": consignee,
                        "license": license_, "destination": destination, "method": method,
                        "certificate": certificate, "reason": reason, "hts": hts, "importer": importer,
                        "origin_country": origin_country})
    serials = [values.check_serial(s) for s in serial or []]
    if serials_file is not None:
        serials += values.read_serials_file(serials_file)
    if not serials:
        raise typer.BadParameter("give --serial or --serials-file")
    if len(set(serials)) != len(serials):
        raise typer.BadParameter("a serial is given twice")
    when = values.parse_time(at) if at else None
    mode = "allow" if allow_violation else "skip" if skip_violating else "refuse"
    url = ledger_url(db, ledger)
    signer = load_key(key, passphrase_file)
    if url is not None:
        from ledger.service import client

        with client.connect(url) as service:
            done = client.record(service, signer, kind, data, serials, at=when, mode=mode)
    else:
        with open_store(db) as store:
            done = append.record(store, signer, kind, data, serials, at=when, mode=mode)
    units = sum(len(s.units) for s in done.statements)
    if len(done.statements) == 1:
        render.out(f"recorded {step} for {render.count(units, 'unit')} at index {done.index} "
                   f"({done.statement.hash.hex()})")
    else:
        render.out(f"recorded {step} for {units} units as {len(done.statements)} statements, at indexes "
                   f"{done.index}…{done.index + len(done.statements) - 1}, in one transaction (a statement "
                   f"holds at most {MAX_WIRE_BYTES:,} bytes):")
        for offset, statement in enumerate(done.statements):
            render.out(f"  index {done.index + offset}: {render.count(len(statement.units), 'unit')} "
                       f"({statement.hash.hex()})")
    if done.skipped:
        render.out(f"skipped {len(done.skipped)} violating unit(s): {', '.join(done.skipped)}")
    if done.findings:
        codes = sorted({f.code for f in done.findings})
        render.say(f"recorded with {len(done.findings)} finding(s): {', '.join(codes)}")


def register(app: typer.Typer) -> None:
    app.command("record")(record)
