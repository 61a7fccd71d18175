"""Old ledgers keep their meaning (issue 17): a ledger whose policy lacks the optional keys gives exactly
the findings it gave before, and views written before `VIEWS_VERSION` 2 are folded again, not trusted.

`tests/data/demo-before-issue-17.bundle` is a `custody demo --units 60` ledger made and exported by the
code before issue 17 (commit 1ebbb7a); `demo-before-issue-17.json` holds what that code reported on it
(`verify --json --as-of 2027-06-01`, `report compliance --json --until 2026-12-01`). The golden ledger's
own test (test_vectors.py) covers the shared vectors the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from commands.main import app
from ledger import views
from ledger.append import now_us
from ledger.state import VIEWS_VERSION, State
from ledger.store import Store, blob, unblob
from tests.conftest import ROOT

DATA = ROOT / "tests" / "data"
BUNDLE = DATA / "demo-before-issue-17.bundle"
BEFORE: dict[str, Any] = json.loads((DATA / "demo-before-issue-17.json").read_text(encoding="utf-8"))


def _json(runner: CliRunner, *args: str, status: int = 0) -> dict[str, Any]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == status, (args, result.stdout, result.stderr)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_old_demo_ledger_gives_the_findings_it_gave(db_url: str, runner: CliRunner) -> None:
    imported = runner.invoke(app, ["--db", db_url, "import", str(BUNDLE)])
    assert imported.exit_code == 0, imported.stderr
    verified = _json(runner, "--db", db_url, "verify", "--json", "--as-of", "2027-06-01", status=3)
    before = BEFORE["verify_as_of_2027_06_01"]
    assert verified["intact"] is True
    assert (verified["findings"], verified["violations"]) == (before["findings"], before["violations"])
    from_bundle = _json(runner, "verify", str(BUNDLE), "--json", "--as-of", "2027-06-01", status=3)
    assert from_bundle["findings"] == before["findings"]
    report = _json(runner, "--db", db_url, "report", "compliance", "--json", "--until", "2026-12-01")
    before = BEFORE["compliance_until_2026_12_01"]
    assert (report["findings"], report["counts"], report["log_size"]) == (
        before["findings"], before["counts"], before["log_size"])
    now = _json(runner, "--db", db_url, "report", "compliance", "--json")  # from the views, as of now
    assert {c: n for c, n in now["counts"].items()} == before["counts"]  # no ATTESTATION_OVERDUE: no key
    assert _json(runner, "--db", db_url, "report", "volume", "--json")["periods"] == []


def _downgrade_views(url: str) -> None:
    """Rewrite the stored views as the code before VIEWS_VERSION 2 wrote them: shorter rows."""
    with Store(url) as store:
        [(row,)] = store.query("SELECT row FROM custody_authority WHERE id = 1")
        units = store.query("SELECT serial, row FROM custody_units")
        mark = store.param  # the driver's placeholder
        with store.transaction() as cursor:
            cursor.execute(f"UPDATE custody_authority SET row = {mark} WHERE id = 1", [blob(unblob(row)[:8])])
            for serial, unit in units:
                cursor.execute(f"UPDATE custody_units SET row = {mark} WHERE serial = {mark}",
                               [blob(unblob(unit)[:16]), serial])


def test_views_of_an_older_version_are_folded_again(db_url: str, runner: CliRunner, tmp_path: Path) -> None:
    assert runner.invoke(app, ["--db", db_url, "import", str(BUNDLE)]).exit_code == 0
    expected = _json(runner, "--db", db_url, "report", "compliance", "--json", "--until", "2026-12-01")
    _downgrade_views(db_url)
    with Store(db_url, readonly=True) as store:
        assert views.stale(store)
        state = views.current(store, now_us())  # readers fold the log instead of the stale rows
        receiver = state.units["1652224000001"].receiver
    assert receiver is not None  # what the old rows lacked, back from the log
    assert _json(runner, "--db", db_url, "report", "compliance", "--json", "--until", "2026-12-01") == expected
    with Store(db_url) as store:
        views.catch_up(store, now_us())  # a writer rebuilds them first
        assert not views.stale(store)
        [(row,)] = store.query("SELECT row FROM custody_authority WHERE id = 1")
        assert State.row_version(unblob(row)) == VIEWS_VERSION
        assert views.load_full(store).units["1652224000001"].receiver == receiver
