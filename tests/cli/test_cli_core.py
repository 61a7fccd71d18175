"""End-to-end: the core commands through Typer's CliRunner, on both stores."""

from __future__ import annotations

import json

from tests.conftest import Ledger


def test_clean_flow_verifies_and_is_compliant(ledger: Ledger) -> None:
    ledger.full_flow(["A1", "A2"])
    result = ledger.cli("verify", "--json", "--trust", ledger.pub("authority"))
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["intact"] and report["compliant"]
    assert report["log_size"] == 10 + 6
    assert "genesis_trust" in report["checks"] and "unit_links" in report["checks"]
    assert report["failures"] == [] and report["violations"] == 0


def test_history_lists_each_step(ledger: Ledger) -> None:
    ledger.full_flow(["H1"])
    result = ledger.cli("history", "H1", "--json", ok=True)
    steps = json.loads(result.stdout)["steps"]
    assert [s["kind"] for s in steps] == ["fabricated", "shipped_to_us", "inspected", "duty_paid",
                                          "re_exported", "received"]
    assert steps[1]["participant"] == "kerry"
    assert steps[3]["data"]["duty"] == 500000
    assert all(s["at"].endswith("Z") for s in steps)


def test_step_without_chain_is_refused(ledger: Ledger) -> None:
    result = ledger.record("shipped-to-us", "kerry", ["NOPE"], "--port-of-entry", "DFW", "--waybill", "W")
    assert result.exit_code == 1
    assert "chain" in result.stderr and result.stdout == ""
    assert json.loads(ledger.cli("verify", "--json").stdout)["log_size"] == 10
