"""`custody report html FILE [--until TIME]`: usage, errors, and a page written all at once on each store."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import Ledger


def _data(page: Path) -> dict[str, object]:
    found = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page.read_text(), re.S)
    assert len(found) == 1
    return dict(json.loads(found[0]))


def test_report_html_writes_the_page_on_each_store(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["A1", "A2"])
    ledger.record("fabricated", "tsmc", ["B1"], "--model", "B200-SXM6-192GB", "--site", "Fab 18", "--lot", "L2",
                  "--allow-violation", ok=True)
    page = tmp_path / "out" / "report.html"
    page.parent.mkdir()
    result = ledger.cli("report", "html", str(page))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"wrote {page} (") and "ledger intact" in result.stdout
    assert "1 finding(s)" in result.stdout and result.stderr == ""
    data = _data(page)
    assert sorted(data["serials"]) == ["A1", "A2", "B1"]  # type: ignore[call-overload]
    assert data["codes"] == ["PROHIBITED_MODEL"]
    text = page.read_text()
    compliance = json.loads(ledger.cli("report", "compliance", "--json").stdout)
    assert f'id="findings-total">{len(compliance["findings"])}<' in text
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temporary file left behind


def test_report_html_until_is_the_reports_until(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.full_flow(["A1"], at="2026-01-10")
    sqlite_ledger.full_flow(["B1"], at="2026-02-10")
    page = tmp_path / "then.html"
    result = sqlite_ledger.cli("report", "html", str(page), "--until", "2026-01-31")
    assert result.exit_code == 0, result.stderr
    assert "as of 2026-01-31T00:00:00Z" in result.stdout
    assert _data(page)["serials"] == ["A1"]
    units = json.loads(sqlite_ledger.cli("report", "units", "--json", "--until", "2026-01-31").stdout)
    assert f'id="flow-total">{units["total"]}<' in page.read_text()


def test_report_html_usage_errors_are_one_line_and_write_nothing(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    page = tmp_path / "p.html"
    cases = [
        (["report", "html"], "report html needs the FILE"),
        (["report", "html", str(page), "--json"], "takes no --json or --csv"),
        (["report", "html", str(page), "--csv"], "takes no --json or --csv"),
        (["report", "compliance", str(page)], "report compliance takes no FILE"),
        (["report", "html", str(page), "--until", "yesterday"], "yesterday"),
        (["report", "html", str(tmp_path)], "it is a folder"),
        (["report", "html", str(tmp_path / "missing" / "p.html")], "cannot write"),
    ]
    for args, message in cases:
        result = sqlite_ledger.cli(*args)
        assert result.exit_code == 2, (args, result.stdout)
        assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
        assert result.stdout == ""
    assert not page.exists()


def test_report_html_on_no_ledger_is_exit_2(tmp_path: Path, runner: object) -> None:
    from typer.testing import CliRunner

    from commands.main import app

    result = CliRunner().invoke(app, ["--db", str(tmp_path / "none.db"), "report", "html", str(tmp_path / "p.html")])
    assert result.exit_code == 2 and "no ledger" in result.stderr
    assert not (tmp_path / "p.html").exists() and not (tmp_path / "none.db").exists()
