"""`custody report`: compliance, duty, customers, units; JSON, CSV, text; read-only databases; bad input."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger import reports, values
from ledger.errors import BadInput
from ledger.state import Customer, DutyEntry, Finding, State, UnitState
from tests.cli.test_compliance import (
    build_ledger,
)
from tests.conftest import Ledger

DAY = values.MICROS_PER_DAY
VIEW_TABLES = ("custody_position", "custody_authority", "custody_units", "custody_customers", "custody_duty",
               "custody_findings", "custody_signed")


def report(ledger: Ledger, name: str, *extra: str) -> dict[str, Any]:
    result = ledger.cli("report", name, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def csv_rows(ledger: Ledger, name: str, *extra: str) -> list[dict[str, str]]:
    result = ledger.cli("report", name, "--csv", *extra)
    assert result.exit_code == 0, result.stderr
    return list(csv.DictReader(io.StringIO(result.stdout)))


def test_duty_report_per_entry_and_total(ledger: Ledger) -> None:
    ledger.full_flow(["D1", "D2"])  # entry E-D1: $40,000 entered, $10,000 paid
    ledger.record("fabricated", "tsmc", ["D3"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                  ok=True)
    ledger.record("shipped-to-us", "kerry", ["D3"], "--port-of-entry", "LAX", "--waybill", "W", ok=True)
    ledger.record("duty-paid", "cbp", ["D3"], "--entry", "E-D3", "--entered-value", "30000.00", "--duty",
                  "5000.00", "--allow-violation", ok=True)  # $7,500 due
    ledger.record("duty-paid", "cbp", ["D3"], "--entry", "E-D3", "--entered-value", "0", "--duty", "1000.00",
                  "--allow-violation", ok=True)  # a second payment on the same entry
    document = report(ledger, "duty")
    assert set(document) == {"as_of", "log_size", "entries", "total"}
    entries = {e["entry"]: e for e in document["entries"]}
    assert entries["E-D1"] == {"entry": "E-D1", "statements": 1, "units": 2, "entered_value_cents": 4_000_000,
                               "duty_due_cents": 1_000_000, "paid_cents": 1_000_000, "shortfall_cents": 0}
    assert entries["E-D3"] == {"entry": "E-D3", "statements": 2, "units": 2, "entered_value_cents": 3_000_000,
                               "duty_due_cents": 750_000, "paid_cents": 600_000, "shortfall_cents": 150_000}
    assert document["total"] == {"entries": 2, "units": 4, "entered_value_cents": 7_000_000,
                                 "duty_due_cents": 1_750_000, "paid_cents": 1_600_000,
                                 "shortfall_cents": 150_000}
    rows = csv_rows(ledger, "duty")
    assert [r["row"] for r in rows] == ["entry", "entry", "total"]
    assert rows[1]["entry"] == "E-D3" and rows[1]["shortfall_cents"] == "150000"
    assert rows[2]["paid_cents"] == "1600000"
    text = ledger.cli("report", "duty", ok=True).stdout
    assert "$1,500.00" in text and "total (2 entries)" in text


def test_customers_report(ledger: Ledger) -> None:
    ledger.full_flow(["K1", "K2"])  # to alibaba
    ledger.full_flow([f"B{i}" for i in range(5)], customer="bytedance")
    ledger.record("fabricated", "tsmc", ["B9"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                  ok=True)
    ledger.record("re-exported", "nvidia", ["B9"], "--consignee", "bytedance", "--license", "L",
                  "--destination", "CN", "--allow-violation", ok=True)
    document = report(ledger, "customers")
    assert set(document) == {"as_of", "log_size", "customers"}
    by_id = {c["id"]: c for c in document["customers"]}
    assert by_id["alibaba"] == {"id": "alibaba", "status": "approved", "license": "LIC-1",
                                "valid_until": None, "cap": 100, "consigned": 2, "received": 2,
                                "remaining": 98, "over_cap": 0}
    assert (by_id["bytedance"]["consigned"], by_id["bytedance"]["received"], by_id["bytedance"]["remaining"],
            by_id["bytedance"]["over_cap"]) == (6, 5, 0, 1)
    rows = {r["id"]: r for r in csv_rows(ledger, "customers")}
    assert rows["bytedance"]["over_cap"] == "1" and rows["alibaba"]["valid_until"] == ""


def test_units_report_counts_steps_and_lists_overdue_oldest_first(ledger: Ledger) -> None:
    ledger.full_flow(["N1"])
    for serial, at in (("N2", "2026-01-20T00:00:00Z"), ("N3", "2026-01-05T00:00:00Z")):
        ledger.record("fabricated", "tsmc", [serial], "--model", "H200-SXM5-141GB", "--site", "F", "--lot",
                      "L", "--at", at, ok=True)
    ledger.record("shipped-to-us", "kerry", ["N2"], "--port-of-entry", "LAX", "--waybill", "W", "--at",
                  "2026-01-21T00:00:00Z", ok=True)
    document = report(ledger, "units")
    assert set(document) == {"as_of", "log_size", "total", "steps", "overdue"}
    assert document["total"] == 3
    assert document["steps"] == {"fabricated": 1, "shipped_to_us": 1, "inspected": 0, "duty_paid": 0,
                                 "re_exported": 0, "received": 1, "located": 0, "destroyed": 0,
                                 "withdrawn": 0}
    assert [o["serial"] for o in document["overdue"]] == ["N3", "N2"]  # oldest first
    assert document["overdue"][0]["since"] == "2026-01-05T00:00:00Z"
    assert document["overdue"][1]["step"] == "shipped_to_us"
    then = report(ledger, "units", "--until", "2026-02-10")
    assert [(o["serial"], o["days_waiting"]) for o in then["overdue"]] == [("N3", 36)]  # N2: 20 days
    rows = csv_rows(ledger, "units")
    assert [r["row"] for r in rows] == ["step"] * 9 + ["overdue"] * 2
    assert rows[9]["serial"] == "N3" and rows[9]["since"].endswith("Z")


def test_compliance_report_groups_by_code_with_counts(ledger: Ledger) -> None:
    ledger.record("fabricated", "tsmc", ["G1", "G2"], "--model", "B200-SXM6-192GB", "--site", "F",
                  "--lot", "L", "--allow-violation", ok=True)
    ledger.record("inspected", "uslab", ["G1"], "--result", "pass", "--site", "S", "--country", "MX",
                  "--report", "R", "--allow-violation", ok=True)
    document = report(ledger, "compliance")
    assert document["counts"] == {"PROHIBITED_MODEL": 2, "NOT_ROUTED_VIA_US": 1, "INSPECTION_OUTSIDE_US": 1}
    assert [f["code"] for f in document["findings"]] == ["PROHIBITED_MODEL", "PROHIBITED_MODEL",
                                                         "NOT_ROUTED_VIA_US", "INSPECTION_OUTSIDE_US"]
    assert document["log_size"] == 12
    rows = csv_rows(ledger, "compliance")
    assert list(rows[0]) == ["code", "serial", "index", "detail"] and len(rows) == 4
    text = ledger.cli("report", "compliance", ok=True).stdout
    assert "PROHIBITED_MODEL (2)" in text and "4 finding(s)" in text


def test_clean_ledger_reports_compliant(ledger: Ledger) -> None:
    ledger.full_flow(["OK1"])
    document = report(ledger, "compliance")
    assert document["findings"] == [] and document["counts"] == {}
    assert "no findings: compliant" in ledger.cli("report", "compliance", ok=True).stdout


# --- bad input -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_sqlite(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Ledger:
    request.getfixturevalue("fast_cli")
    directory = tmp_path_factory.mktemp("reports-bad-input")
    return build_ledger(directory, str(directory / "custody.db"))


@pytest.mark.parametrize(("args", "message"), [
    (["violations"], "unknown report 'violations'"),
    (["compliance", "--json", "--csv"], "not both"),
    (["duty", "--until", "last week"], "bad time"),
    (["units", "--until", "2026-13-01"], "no month 13"),
    ([], "Missing argument"),
])
def test_report_bad_input_is_one_line_exit_2(shared_sqlite: Ledger, args: list[str], message: str) -> None:
    result = shared_sqlite.cli("report", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_report_on_a_missing_database_is_exit_2(tmp_path: Path, runner: Any) -> None:
    from commands.main import app

    result = runner.invoke(app, ["--db", str(tmp_path / "none.db"), "report", "units"])
    assert result.exit_code == 2 and "no ledger" in result.stderr
    assert not (tmp_path / "none.db").exists()


# --- read-only databases ----------------------------------------------------------------------------------


def _views(path: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in VIEW_TABLES}
    finally:
        conn.close()


def _restore(path: str, saved: dict[str, list[tuple[Any, ...]]]) -> None:
    """Put the views back as they were: they now lag behind the log."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            for table, rows in saved.items():
                conn.execute(f"DELETE FROM {table}")
                if rows:
                    marks = ",".join("?" * len(rows[0]))
                    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    finally:
        conn.close()


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Paths appended to the list are made read-only (and restored after); as root, `access` agrees."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        if path.exists():
            path.chmod(stat.S_IRWXU if path.is_dir() else stat.S_IRUSR | stat.S_IWUSR)


def _deny_writes(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Root ignores file modes; make `os.access` answer as it would for anyone else."""
    real = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and str(Path(path).resolve()).startswith(str(directory.resolve())):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_read_only_database_reports_statements_beyond_the_views(sqlite_ledger: Ledger,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 read_only: list[Path]) -> None:
    book = sqlite_ledger
    book.full_flow(["RO1"])
    lagging = _views(book.db)
    book.full_flow(["RO2"])
    book.record("received", "bytedance", ["RO2"], "--site", "U", "--allow-violation", ok=True)
    expected = {name: report(book, name, "--until", "2100-01-01") for name in reports.REPORTS}
    _restore(book.db, lagging)
    assert _views(book.db)["custody_position"] == [(1, 16)] and report(book, "units")["total"] == 2
    directory = Path(book.db).parent
    for path in sorted(directory.glob("custody.db*")):
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        read_only.append(path)
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    read_only.append(directory)
    if os.geteuid() == 0:
        _deny_writes(monkeypatch, directory)
    before = {p.name: p.read_bytes() for p in directory.glob("custody.db*")}
    for name in reports.REPORTS:
        got = report(book, name, "--until", "2100-01-01")
        assert {k: v for k, v in got.items() if k != "as_of"} == \
            {k: v for k, v in expected[name].items() if k != "as_of"}, name
    now = report(book, "compliance")
    assert now["log_size"] == 23 and now["counts"] == {"OUT_OF_ORDER": 1, "DIVERSION": 1}
    assert json.loads(book.cli("replay", "--json", ok=True).stdout)["folded"] == 23
    assert book.cli("verify").exit_code == 3
    assert book.cli("history", "RO2", "--json", ok=True).stdout
    assert {p.name: p.read_bytes() for p in directory.glob("custody.db*")} == before  # readers never write
    if os.geteuid() != 0:  # root writes whatever the modes say
        rebuild = book.cli("replay", "--rebuild")
        assert rebuild.exit_code == 2 and len(rebuild.stderr.strip().splitlines()) == 1
        assert {p.name: p.read_bytes() for p in directory.glob("custody.db*")} == before


# --- the library ----------------------------------------------------------------------------------------


def test_reports_from_a_hand_made_state() -> None:
    state = State(size=7)
    state.units = {"A": UnitState("A", b"", 10 * DAY, 3, "fabricated"),
                   "B": UnitState("B", b"", 2 * DAY, 4, "re_exported", stage=4),
                   "C": UnitState("C", b"", 1 * DAY, 5, "received", stage=5, received=True)}
    state.customers = {"x": Customer("x", cap=3, approved=True, valid_until=40 * DAY, consigned=4,
                                     over_cap=1), "y": Customer("y")}
    state.duty = {"E": DutyEntry("E", 100, 25, 30, 1, 1)}
    state.findings = [Finding("DIVERSION", "C", 5, "d"), Finding("PROHIBITED_MODEL", "A", 3, "p")]
    compliance = reports.compliance(state, 45 * DAY)
    assert [f["code"] for f in compliance.document["findings"]] == [
        "PROHIBITED_MODEL", "DIVERSION", "OVERDUE", "OVERDUE"]
    assert compliance.document["counts"] == {"PROHIBITED_MODEL": 1, "DIVERSION": 1, "OVERDUE": 2}
    assert [f["serial"] for f in compliance.document["findings"][2:]] == ["A", "B"]  # by index within a code
    customers = {c["id"]: c for c in reports.customers(state, 45 * DAY).document["customers"]}
    assert customers["x"]["status"] == "expired" and customers["x"]["remaining"] == 0
    assert customers["y"] == {"id": "y", "status": "not approved", "license": "", "valid_until": None,
                              "cap": 0, "consigned": 0, "received": 0, "remaining": 0, "over_cap": 0}
    assert reports.duty(state, 0).document["total"]["shortfall_cents"] == 0  # overpaid owes nothing
    units = reports.units(state, 45 * DAY).document
    assert [o["serial"] for o in units["overdue"]] == ["B", "A"] and units["overdue"][0]["days_waiting"] == 43
    with pytest.raises(BadInput):
        reports.build("nope", state, 0)
