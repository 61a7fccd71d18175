"""Issue 17 through replay (--until, --upto, --policy what-if), bundles and verify: the regime's findings
are the same whichever way the log is folded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.test_compliance import ALLOW, step, to_received
from tests.cli.test_regime import LOCATED_CN, SCRAP, book
from tests.conftest import Ledger

__all__ = ["book"]

NEW_CODES = {"LICENSE_MISMATCH", "DESTINATION_MISMATCH", "LOCATION_MISMATCH", "AFTER_TERMINAL",
             "WRONG_TARIFF_LINE", "VOLUME_RATIO_EXCEEDED", "ATTESTATION_OVERDUE"}


def _regime(book: Ledger, tag: str) -> tuple[str, str]:
    one, two = f"{tag}1", f"{tag}2"
    to_received(book, [one, two], skip="re-exported")
    step(book, "re-exported", "nvidia", [one], "--consignee", "alibaba", "--license", "LIC-2",
         "--destination", "SG", ALLOW)
    step(book, "destroyed", "uslab", [two], *SCRAP)
    step(book, "located", "bytedance", [two], "--site", "U", "--country", "MY", "--method", "m", ALLOW)
    return one, two


def _findings(document: dict[str, Any]) -> set[tuple[str, Any, int]]:
    return {(f["code"], f["serial"], f["index"]) for f in document["findings"]}


def test_verify_of_the_database_and_of_its_bundle_agree(book: Ledger, tmp_path: Path) -> None:
    serials = _regime(book, "RB")
    bundle = tmp_path / "regime.bundle"
    assert book.cli("export", str(bundle)).exit_code == 0
    from_db = json.loads(book.cli("verify", "--json", "--as-of", "2030-01-01").stdout)
    from_bundle = json.loads(book.cli("verify", str(bundle), "--json", "--as-of", "2030-01-01").stdout)
    assert from_db["intact"] and from_bundle["intact"]
    assert _findings(from_db) == _findings(from_bundle)
    codes = {c for c, s, _ in _findings(from_db) if s in serials}
    assert {"LICENSE_MISMATCH", "DESTINATION_MISMATCH", "AFTER_TERMINAL", "LOCATION_MISMATCH"} <= codes


def test_replay_what_if_a_policy_without_the_optional_keys(book: Ledger, tmp_path: Path) -> None:
    _regime(book, "RW")
    policy = tmp_path / "previous.toml"
    from tests.cli.test_replay import PREVIOUS

    policy.write_text(PREVIOUS, encoding="utf-8")
    summary = json.loads(book.cli("replay", "--json", "--policy", str(policy), ok=True).stdout)
    counts = summary["findings"]["counts"]
    assert summary["policy"]["what_if"] is True
    # the rules that have a policy key are not checked; the others (always on) still are
    assert not {"LICENSE_MISMATCH", "DESTINATION_MISMATCH", "WRONG_TARIFF_LINE", "VOLUME_RATIO_EXCEEDED",
                "ATTESTATION_OVERDUE"} & set(counts)
    assert {"AFTER_TERMINAL", "LOCATION_MISMATCH"} <= set(counts)
    recorded = json.loads(book.cli("replay", "--json", ok=True).stdout)["findings"]["counts"]
    assert {"LICENSE_MISMATCH", "DESTINATION_MISMATCH"} <= set(recorded)


def test_replay_upto_stops_before_the_terminal_step(book: Ledger) -> None:
    to_received(book, ["RU1"], skip="re-exported")
    ended = step(book, "destroyed", "uslab", ["RU1"], *SCRAP)
    after = step(book, "located", "alibaba", ["RU1"], *LOCATED_CN, ALLOW)
    before = json.loads(book.cli("replay", "--json", "--upto", str(ended - 1), ok=True).stdout)
    at_end = json.loads(book.cli("replay", "--json", "--upto", str(ended), ok=True).stdout)
    full = json.loads(book.cli("replay", "--json", "--upto", str(after), ok=True).stdout)
    assert at_end["units"]["steps"]["destroyed"] == before["units"]["steps"]["destroyed"] + 1
    assert full["findings"]["counts"].get("AFTER_TERMINAL", 0) == at_end["findings"]["counts"].get(
        "AFTER_TERMINAL", 0) + 1
