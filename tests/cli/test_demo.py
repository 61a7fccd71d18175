"""`custody demo`: keys, a ledger, N units through six steps with injected violations; verified; exit 0."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import demo
from tests.conftest import ROOT

NOW = 1_780_000_000_000_000  # 2026-05-28


def test_demo_runs_verifies_and_reports_each_injected_code(tmp_path: Path, runner: CliRunner) -> None:
    directory = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--units", "80", "--dir", str(directory)])
    assert result.exit_code == 0, result.stderr
    assert str(directory / "custody.db") in result.stdout and "injected violations" in result.stdout
    assert "too few units" not in result.stdout
    assert "compliance report as of" in result.stdout
    for name in demo.KEY_NAMES:
        private = directory / "keys" / name
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        assert (directory / "keys" / f"{name}.pub").read_text().startswith("ssh-ed25519 ")
    db = str(directory / "custody.db")
    verified = runner.invoke(app, ["--db", db, "verify", "--json", "--trust", str(directory / "keys" /
                                                                                 "authority.pub")])
    assert verified.exit_code == 3, verified.stderr  # intact, not compliant
    report = json.loads(verified.stdout)
    assert report["intact"] is True and report["failures"] == []
    if (directory / "checkpoint.txt").exists():
        assert "checkpoint_root" in report["checks"]
    compliance = json.loads(runner.invoke(app, ["--db", db, "report", "compliance", "--json"]).stdout)
    # each injected code (the story lines without a finding excepted) and the new ones of issue 17, and
    # nothing else: every code DESIGN added for the regime shows
    expected = (set(demo.INJECTED) | set(demo.STORY)) - set(demo.CLEAN_STORIES)
    assert set(compliance["counts"]) == expected
    assert {"LICENSE_MISMATCH", "DESTINATION_MISMATCH", "LOCATION_MISMATCH", "AFTER_TERMINAL",
            "WRONG_TARIFF_LINE", "VOLUME_RATIO_EXCEEDED", "ATTESTATION_OVERDUE"} <= expected
    assert compliance["counts"]["DIVERSION"] == 2 and compliance["counts"]["CAP_EXCEEDED"] == 3
    injected = {v.code: v for v in demo.plan(80, NOW).injected}
    for f in compliance["findings"]:  # each finding on the units it was injected for
        if f["code"] in injected and f["serial"] is not None:
            assert f["serial"] in injected[f["code"]].serials, f
    [volume_finding] = [f for f in compliance["findings"] if f["code"] == "VOLUME_RATIO_EXCEEDED"]
    assert volume_finding["serial"] is None
    units = json.loads(runner.invoke(app, ["--db", db, "report", "units", "--json"]).stdout)
    scrapped, withdrawn = len(injected["SCRAPPED"].serials), len(injected["WITHDRAWN"].serials)
    assert units["total"] == 80 and units["overdue"] == []
    assert units["steps"]["destroyed"] == scrapped and units["steps"]["withdrawn"] == withdrawn
    assert units["steps"]["received"] + units["steps"]["located"] == 80 - scrapped - withdrawn
    volume = json.loads(runner.invoke(app, ["--db", db, "report", "volume", "--json"]).stdout)
    [period] = volume["periods"]
    assert period["exported"] > period["limit"] and period["over"] == period["exported"] - period["limit"]
    duty = json.loads(runner.invoke(app, ["--db", db, "report", "duty", "--json"]).stdout)
    assert duty["total"]["units"] == 80 - scrapped and duty["total"]["shortfall_cents"] > 0


def test_demo_plan_is_realistic() -> None:
    plan = demo.plan(2_500, NOW)
    assert plan.units == 2_500 and plan.total == 1 + len(demo.PARTICIPANTS) + 2 + len(plan.steps)
    ats = [s.at for s in plan.steps]
    assert ats == sorted(ats) and plan.admin_at < ats[0] and ats[-1] < NOW  # increasing, all in the past
    assert NOW - plan.admin_at < (demo.LAPSED_DAYS + 20) * demo.DAY  # the recent months
    fabricated = [s for s in plan.steps if s.kind == "fabricated"]
    assert max(len(s.serials) for s in fabricated) == demo.BOARD
    assert sum(len(s.serials) for s in fabricated) == 2_500
    shipped = [s for s in plan.steps if s.kind == "shipped_to_us"]
    assert max(len(s.serials) for s in shipped) <= demo.MAX_SHIPMENT and len(shipped) >= 3
    assert {v.code for v in plan.injected} == set(demo.INJECTED) | set(demo.STORY)
    by_code = {v.code: v for v in plan.injected}
    assert len(by_code["PROHIBITED_MODEL"].serials) == demo.BOARD  # one board of Blackwell parts
    assert len(by_code["SKIPPED_INSPECTION"].serials) == demo.BOARD
    assert len(by_code["SCRAPPED"].serials) == demo.BOARD  # one board fails inspection and is scrapped
    assert by_code["AFTER_TERMINAL"].serials[0] in by_code["SCRAPPED"].serials
    fates = [v for v in plan.injected if v.code in demo.INJECTED]  # each unit has one fate
    assert len({s for v in fates for s in v.serials}) == sum(len(v.serials) for v in fates)
    assert plan.steps == demo.plan(2_500, NOW).steps  # the same plan every time


def test_demo_scales_violations_down_for_few_units() -> None:
    assert demo.plan(1, NOW).injected == []
    assert [v.code for v in demo.plan(3, NOW).injected] == ["PROHIBITED_MODEL", "SKIPPED_INSPECTION"]
    small = demo.plan(12, NOW)
    assert {v.code for v in small.injected} >= set(demo.INJECTED)
    assert all(len(v.serials) == 1 for v in small.injected if v.code in demo.INJECTED)


def test_demo_with_one_unit_is_clean(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["demo", "--units", "1", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "no findings: compliant" in result.stdout and "too few units" in result.stdout
    verified = runner.invoke(app, ["--db", str(tmp_path / "custody.db"), "verify", "--json"])
    assert verified.exit_code == 0 and json.loads(verified.stdout)["log_size"] == 1 + 7 + 2 + 6 + 1  # and a location


def test_demo_bad_input_is_exit_2_and_writes_nothing(tmp_path: Path, runner: CliRunner) -> None:
    for units in ("0", "-3", "many"):
        result = runner.invoke(app, ["demo", "--units", units, "--dir", str(tmp_path / "x")])
        assert result.exit_code == 2 and result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    (tmp_path / "custody.db").write_bytes(b"precious")
    result = runner.invoke(app, ["demo", "--units", "2", "--dir", str(tmp_path)])
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert (tmp_path / "custody.db").read_bytes() == b"precious" and not (tmp_path / "keys").exists()


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`custody demo` in a real process, in `cwd`, with no CUSTODY_DB or CUSTODY_LEDGER."""
    command = [sys.executable, "-c", "from commands.main import run; run()", "demo", *args]
    return subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd=cwd,
                          timeout=120)


def _written(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_default_folder_is_the_working_directory(tmp_path: Path) -> None:
    """No --dir: custody.db, checkpoint.txt and keys/ in the working directory, where every other command
    looks by default; its hints need no --db. A second run refuses (exit 2, one line) and writes nothing."""
    first = _demo(tmp_path, "--units", "2")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # no progress bar when piped
    assert "  ledger:     custody.db (origin" in first.stdout and "  keys:       keys/ (" in first.stdout
    hints = [line.strip() for line in first.stdout.splitlines() if line.startswith("  custody ")]
    assert "custody verify" in hints and "custody report html report.html" in hints
    assert not any("--db" in h for h in hints)
    assert (tmp_path / "custody.db").is_file() and (tmp_path / demo.CHECKPOINT_FILE).is_file()
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == sorted(
        f for name in demo.KEY_NAMES for f in (name, f"{name}.pub"))
    before = _written(tmp_path)
    again = _demo(tmp_path, "--units", "2")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip() == ("custody: custody.db already exists: remove it, or give --dir a new or "
                                    "empty folder")
    assert _written(tmp_path) == before


def test_demo_refuses_a_folder_holding_any_file_it_would_write(tmp_path: Path, runner: CliRunner) -> None:
    for name in ("checkpoint.txt", "keys/bytedance", "keys/operator.pub"):
        folder = tmp_path / name.replace("/", "-")
        (folder / name).parent.mkdir(parents=True)
        (folder / name).write_text("mine")
        result = runner.invoke(app, ["demo", "--units", "2", "--dir", str(folder)])
        assert result.exit_code == 2 and result.stdout == "", name
        assert f"{folder / name} already exists: remove it" in result.stderr
        assert _written(folder) == {name: b"mine"}  # nothing written beside it


def test_demo_hints_name_the_ledger_when_it_is_not_the_default(tmp_path: Path, runner: CliRunner) -> None:
    folder = tmp_path / "my demo"
    result = runner.invoke(app, ["demo", "--units", "2", "--dir", str(folder)], env={"CUSTODY_DB": ""})
    assert result.exit_code == 0, result.stderr
    assert f"  custody --db '{folder / 'custody.db'}' verify" in result.stdout


def test_git_keeps_what_the_demo_writes_out_of_the_repository() -> None:
    """Run in a clone's root (the README's first command), the demo's files are ignored, keys/*.pub too."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    written = ["custody.db", "custody.db-wal", "checkpoint.txt", "report.html",
               *(f"keys/{f}" for name in demo.KEY_NAMES for f in (name, f"{name}.pub"))]
    checked = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(written),
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert sorted(checked.stdout.split()) == sorted(written)
    kept = subprocess.run(["git", "check-ignore", "--no-index", "keys/mylab.pub"], capture_output=True, cwd=ROOT,
                          timeout=30)
    assert kept.returncode == 1  # a participant's own public key can still be committed


def test_demo_hints_name_the_ledger_when_custody_ledger_would_send_commands_elsewhere(
        tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", "--units", "2"], env={"CUSTODY_DB": "", "CUSTODY_LEDGER": "http://x:1"})
    assert result.exit_code == 0, result.stderr
    assert "  custody --db custody.db verify" in result.stdout
