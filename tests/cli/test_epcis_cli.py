"""`custody export-epcis` end to end: a ledger built through the CLI becomes a valid EPCIS 2.0 document.

Validated with jsonschema's Draft 7 epcis_validator against GS1's EPCIS-JSON-Schema.json (skipped where
../shared is absent); one event per custody statement, none for administrative statements.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import epcis
from ledger.statement import CUSTODY_STEPS, STEPS, Statement, decode
from ledger.store import Store
from tests.conftest import Ledger, schema_errors


def _statements(db: str) -> list[tuple[int, Statement]]:
    with Store(db, readonly=True) as store:
        return [(e.index, decode(e.wire)) for e in store.log(0)]


def _build(ledger: Ledger) -> None:
    """A modest ledger: clean shipments to two customers, a failed inspection, a step with findings."""
    ledger.full_flow(["E1", "E2", "E3"])
    ledger.full_flow(["E4"], customer="bytedance")
    ledger.record("fabricated", "tsmc", ["E5", "E6"], "--model", "H200-NVL-141GB", "--site", "Fab 18",
                  "--lot", "L7", ok=True)
    ledger.record("shipped-to-us", "kerry", ["E5", "E6"], "--port-of-entry", "LAX", "--waybill", "AWB 9/1",
                  ok=True)
    ledger.record("inspected", "uslab", ["E5"], "--result", "fail", "--site", "Lab 2", "--country", "US",
                  "--report", "R-fail", ok=True)
    ledger.record("received", "alibaba", ["E6"], "--site", "Hangzhou", "--allow-violation", ok=True)


def _export(ledger: Ledger, *extra: str) -> tuple[Any, dict[str, Any]]:
    out = ledger.dir / "events.jsonld"
    result = ledger.cli("export-epcis", str(out), *extra)
    assert result.exit_code == 0, result.stderr
    return result, json.loads(out.read_text(encoding="ascii"))


def test_epcis_export_validates_and_has_one_event_per_step(ledger: Ledger, epcis_validator: Any) -> None:
    _build(ledger)
    result, document = _export(ledger)
    assert schema_errors(epcis_validator, document) == []
    statements = _statements(ledger.db)
    steps = [(i, s) for i, s in statements if s.kind in STEPS]
    events = document["epcisBody"]["eventList"]
    assert len(events) == len(steps) == 16 and len(statements) == 10 + 16
    assert f"exported {len(events)} EPCIS event(s)" in result.stdout
    for event, (index, statement) in zip(events, steps, strict=True):  # in log order, one each
        assert event["custody:logIndex"] == index
        assert event["custody:statementHash"] == statement.hash.hex()
        assert event["custody:signature"] == statement.signature.hex()
        assert event["custody:signer"] == statement.signer
        assert event["eventID"] == epcis.STATEMENT_NS + statement.hash.hex()
        assert event["epcList"] == [epcis.unit_uri(statement.origin, s) for s in statement.serials]
        assert event["eventTimeZoneOffset"] == "+00:00"
    kinds = {e["custody:kind"] for e in events}
    assert kinds == set(STEPS)
    participants = {e["custody:participant"] for e in events}
    assert participants == {"tsmc", "kerry", "uslab", "cbp", "nvidia", "alibaba", "bytedance"}
    failed = next(e for e in events if e["custody:kind"] == "inspected" and e["custody:report"] == "R-fail")
    assert failed["disposition"] == "non_conformant"
    duty = next(e for e in events if e["custody:kind"] == "duty_paid")
    assert duty["type"] == "TransactionEvent" and duty["bizTransactionList"]
    assert document["@context"][1] == {"custody": epcis.EXT_NS}


def test_epcis_upto_exports_the_steps_of_the_prefix(ledger: Ledger, epcis_validator: Any) -> None:
    _build(ledger)
    _, document = _export(ledger, "--upto", "12")
    assert schema_errors(epcis_validator, document) == []
    indices = [e["custody:logIndex"] for e in document["epcisBody"]["eventList"]]
    assert indices == [10, 11, 12]  # fabricated, shipped, inspected: statements 0…9 are administrative


def test_epcis_of_a_ledger_with_no_steps_is_an_empty_event_list(ledger: Ledger, epcis_validator: Any) -> None:
    _, document = _export(ledger)
    assert document["epcisBody"]["eventList"] == []
    assert schema_errors(epcis_validator, document) == []


def test_epcis_export_refuses_bad_targets_and_writes_nothing(ledger: Ledger) -> None:
    out = ledger.dir / "none.jsonld"
    beyond = ledger.cli("export-epcis", str(out), "--upto", "10")
    assert beyond.exit_code == 2 and beyond.stdout == "" and len(beyond.stderr.splitlines()) == 1
    assert not out.exists()
    nowhere = ledger.cli("export-epcis", str(ledger.dir / "missing" / "x.jsonld"))
    assert nowhere.exit_code == 2 and nowhere.stdout == ""
    assert [p.name for p in ledger.dir.iterdir() if p.name.endswith(".tmp")] == []


def test_epcis_export_of_no_ledger_is_exit_2(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--db", str(tmp_path / "absent.db"), "export-epcis", str(tmp_path / "x")])
    assert result.exit_code == 2 and not (tmp_path / "x").exists() and not (tmp_path / "absent.db").exists()


def test_epcis_export_of_the_demo_ledger(tmp_path: Path, runner: CliRunner, epcis_validator: Any) -> None:
    if "demo" not in {c.name for c in app.registered_commands}:
        pytest.skip("`custody demo` is not built yet")
    demo = runner.invoke(app, ["demo", "--units", "80", "--dir", str(tmp_path / "demo")])
    assert demo.exit_code == 0, demo.stderr
    db = str(tmp_path / "demo" / "custody.db")
    out = tmp_path / "demo.jsonld"
    result = runner.invoke(app, ["--db", db, "export-epcis", str(out)])
    assert result.exit_code == 0, result.stderr
    document = json.loads(out.read_text(encoding="ascii"))
    assert schema_errors(epcis_validator, document) == []
    steps = [i for i, s in _statements(db) if s.kind in CUSTODY_STEPS]
    events = document["epcisBody"]["eventList"]
    assert [e["custody:logIndex"] for e in events] == steps  # declarations are not events
    by_kind = {e["custody:kind"]: e for e in events}
    assert {"located", "destroyed", "withdrawn"} <= set(by_kind)  # the new kinds, valid against GS1's schema
    assert (by_kind["destroyed"]["action"], by_kind["destroyed"]["bizStep"],
            by_kind["destroyed"]["disposition"]) == ("DELETE", "destroying", "destroyed")
    assert by_kind["destroyed"]["bizTransactionList"][0]["type"] == "cert"
    assert (by_kind["located"]["bizStep"], by_kind["located"]["disposition"]) == ("cycle_counting", "in_progress")
    assert (by_kind["withdrawn"]["bizStep"], by_kind["withdrawn"]["disposition"]) == ("void_shipping", "returned")
    duty = next(e for e in events if e["custody:kind"] == "duty_paid")
    assert duty["custody:hts"] == "9903.79.01" and duty["custody:origin_country"] == "TW"
