"""Per-unit proofs of issue 17's steps: a proof of a `located` or `destroyed` unit shows those steps and
the findings they give; a proof carries each consignee's registration, so `DESTINATION_MISMATCH` is
derived from it alone; declarations are never in a proof."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.test_transparency import MODEL, checkpoint, proof_kinds
from tests.conftest import Ledger

SHIP = ("--port-of-entry", "LAX", "--waybill", "W-1")
FAIL = ("--result", "fail", "--site", "Lab", "--country", "US", "--report", "R-F")
ALLOW = "--allow-violation"


def _index(result: Any) -> int:
    assert result.exit_code == 0, result.stderr
    return int(result.stdout.split("at index ")[1].split()[0])


def _proven(ledger: Ledger, serial: str, out: Path) -> dict[str, Any]:
    ledger.cli("prove", serial, "--out", str(out), ok=True)
    result = ledger.cli("verify-proof", str(out), "--trust", ledger.pub("authority"), "--json")
    assert result.exit_code in (0, 3), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["verified"] is True and document["serial"] == serial
    return document


def test_proofs_show_located_and_destroyed_steps_and_their_findings(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["Q1"])
    located = _index(ledger.record("located", "alibaba", ["Q1"], "--site", "Johor", "--country", "MY",
                                   "--method", "on-site-audit", ALLOW))
    ledger.record("fabricated", "tsmc", ["Q2"], *MODEL, ok=True)
    ledger.record("shipped-to-us", "kerry", ["Q2"], *SHIP, ok=True)
    ledger.record("inspected", "uslab", ["Q2"], *FAIL, ok=True)
    ledger.record("destroyed", "uslab", ["Q2"], "--method", "shredded", "--site", "Lab", "--certificate", "C-1",
                  ok=True)
    ghost = _index(ledger.record("located", "bytedance", ["Q2"], "--site", "U", "--country", "CN",
                                 "--method", "network-latency", ALLOW))
    ledger.record("fabricated", "tsmc", ["Q3"], *MODEL, ok=True)
    ledger.record("shipped-to-us", "kerry", ["Q3"], *SHIP, ok=True)
    rerouted = _index(ledger.record("re-exported", "nvidia", ["Q3"], "--consignee", "bytedance", "--license",
                                    "LIC-2", "--destination", "SG", ALLOW))
    ledger.cli("declare", "us-volume", "--model", "H200-SXM5-141GB", "--from", "2026-01-01", "--until",
               "2026-01-31", "--units", "0", "--key", ledger.key("nvidia"), ok=True)
    checkpoint(ledger, tmp_path / "cp.txt")

    q1 = _proven(ledger, "Q1", tmp_path / "Q1.json")
    assert [s["kind"] for s in q1["steps"]][-2:] == ["received", "located"]
    assert {(f["code"], f["index"]) for f in q1["findings"]} == {("LOCATION_MISMATCH", located)}

    q2 = _proven(ledger, "Q2", tmp_path / "Q2.json")
    assert [s["kind"] for s in q2["steps"]] == ["fabricated", "shipped_to_us", "inspected", "destroyed", "located"]
    assert {(f["code"], f["index"]) for f in q2["findings"]} == {("AFTER_TERMINAL", ghost)}

    q3 = _proven(ledger, "Q3", tmp_path / "Q3.json")
    found = {(f["code"], f["index"]) for f in q3["findings"]}
    assert ("DESTINATION_MISMATCH", rerouted) in found  # from bytedance's registration, carried in the proof
    kinds = [k for _, k in proof_kinds(tmp_path / "Q3.json")]
    assert kinds.count("participant_registered") == 4  # tsmc, kerry, nvidia and the consignee bytedance
    for path in ("Q1.json", "Q2.json", "Q3.json"):  # no declaration in any proof
        assert "us_volume_reported" not in [k for _, k in proof_kinds(tmp_path / path)]
