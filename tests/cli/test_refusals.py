"""Values out of range, origins no checkpoint can carry, the operator's key as a signer, `import --trust`.

Out-of-range values exit 2 (not 1, as when they reached the encoder); `init` checks every input before it
creates anything, so a refused `init` leaves no SQLite file and no PostgreSQL table; the operator's key
signs checkpoints only (DESIGN.md "Who may sign"), so `init` refuses it as an authority and `participant
add` refuses to register it.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import parallel
from tests.cli.test_bad_input import fingerprint, one_line
from tests.conftest import Ledger, make_keys

FAB = ["--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1"]


def _nothing_at(db: str) -> bool:
    """No SQLite file, or no table in the PostgreSQL schema."""
    if not db.startswith("postgresql://"):
        return not Path(db).exists()
    base, _, schema = db.partition("?schema=")
    with psycopg.connect(base) as conn:
        count = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                             [schema]).fetchone()
    return count is not None and count[0] == 0


@pytest.fixture
def fresh(tmp_path: Path, db_url: str) -> Ledger:
    """Keys, and a store URL where no ledger has been opened yet."""
    make_keys(tmp_path / "keys", ["authority", "operator", "tsmc"])
    return Ledger(tmp_path, db_url, CliRunner())


def _init(book: Ledger, origin: str, *extra: str, operator: str = "operator"):  # type: ignore[no-untyped-def]
    return book.cli("init", "--origin", origin, "--authority", book.key("authority"), "--operator",
                    book.pub(operator), *extra)


BAD_ORIGINS = {
    "control character": "custody.example/a\x01b",
    "DEL": "custody.example/a\x7fb",
    "C1 control": "custody.example/a\x85b",
    "space": "custody.example/a b",
    "line separator": "custody.example/a\u2028b",
    "tab": "custody.example/a\tb",
    "plus": "custody.example/a+b",
    "empty": "",
    "not UTF-8": "custody.example/a\udcffb",
    "too long": "custody.example/" + "a" * 300,
}


@pytest.mark.parametrize("name", BAD_ORIGINS)
def test_init_refuses_an_origin_no_checkpoint_can_carry_and_leaves_nothing(fresh: Ledger, name: str) -> None:
    one_line(_init(fresh, BAD_ORIGINS[name]), 2, "origin")
    assert _nothing_at(fresh.db)


def test_init_refuses_the_operator_as_an_authority_and_leaves_nothing(fresh: Ledger) -> None:
    one_line(_init(fresh, "custody.example/x", operator="authority"), 2, "operator", "authority")
    assert _nothing_at(fresh.db)
    one_line(_init(fresh, "custody.example/x", "--co-authority", fresh.pub("operator")), 2, "operator")
    assert _nothing_at(fresh.db)
    assert _init(fresh, "custody.example/x").exit_code == 0  # and a good init still works


def test_init_with_a_bad_policy_leaves_nothing(fresh: Ledger) -> None:
    policy = fresh.dir / "policy.toml"
    policy.write_text('name = "x"\n')
    one_line(_init(fresh, "custody.example/x", "--policy", str(policy)), 2, "policy")
    assert _nothing_at(fresh.db)


def test_participant_add_refuses_the_operators_key(ledger: Ledger) -> None:
    before = fingerprint(ledger.db)
    result = ledger.cli("participant", "add", "sneaky", "--role", "fab", "--pubkey", ledger.pub("operator"),
                        "--country", "US", "--key", ledger.key("authority"))
    one_line(result, 1, "operator", "checkpoints only")
    assert fingerprint(ledger.db) == before


# --- values out of range: exit 2 -------------------------------------------------------------------------


def test_a_cap_beyond_any_count_is_a_usage_error(ledger: Ledger) -> None:
    before = fingerprint(ledger.db)
    for cap in (str(10**23), str(2**64), str(2**53)):
        result = ledger.cli("customer", "approve", "alibaba", "--cap", cap, "--license", "L",
                            "--key", ledger.key("authority"))
        one_line(result, 2, "--cap")
    assert fingerprint(ledger.db) == before
    ledger.cli("customer", "approve", "alibaba", "--cap", str(2**53 - 1), "--license", "L",
               "--key", ledger.key("authority"), ok=True)


@pytest.mark.parametrize("args", [
    ["record", "fabricated", "--key", "{tsmc}", "--serial", "N1", "--model", "H200-SXM5-141GB", "--site", "F",
     "--lot", "L\udcff1"],
    ["record", "fabricated", "--key", "{tsmc}", "--serial", "N1", "--model", "H200-SXM5-141GB", "--site",
     "F\udc80", "--lot", "L1"],
    ["customer", "approve", "alibaba", "--cap", "5", "--license", "L\udcff", "--key", "{authority}"],
    ["participant", "add", "newco", "--role", "fab", "--pubkey", "{rogue_pub}", "--country", "TW",
     "--name", "N\udcff", "--key", "{authority}"],
])
def test_text_that_is_not_utf8_is_a_usage_error(ledger: Ledger, args: list[str]) -> None:
    before = fingerprint(ledger.db)
    names = {"tsmc": ledger.key("tsmc"), "authority": ledger.key("authority"), "rogue_pub": ledger.pub("rogue")}
    given = [a.format(**names) for a in args]
    one_line(ledger.cli(*given), 2, "UTF-8")
    assert fingerprint(ledger.db) == before


@pytest.mark.parametrize("command", [["verify"], ["replay"], ["replay", "--rebuild"]])
def test_workers_are_bounded_by_the_machine(ledger: Ledger, command: list[str]) -> None:
    too_many = str(parallel.max_workers() + 1)
    one_line(ledger.cli(*command, "--workers", too_many), 2, "--workers", "at most")
    one_line(ledger.cli(*command, "--workers", "2000"), 2, "--workers")
    assert ledger.cli(*command, "--workers", str(parallel.max_workers())).exit_code in (0, 3)


def test_demo_units_are_bounded(tmp_path: Path) -> None:
    result = CliRunner().invoke(app,
                                ["demo", "--units", str(10**12), "--dir", str(tmp_path / "d")])
    one_line(result, 2, "--units")
    assert not (tmp_path / "d" / "custody.db").exists()


# --- import --trust ------------------------------------------------------------------------------------------


def test_import_takes_trust(ledger: Ledger, tmp_path: Path) -> None:
    ledger.record("fabricated", "tsmc", ["T1"], *FAB, ok=True)
    bundle = tmp_path / "l.bundle"
    ledger.cli("export", str(bundle), ok=True)
    untrusted = tmp_path / "untrusted.db"
    result = ledger.runner.invoke(app,
                                  ["import", str(bundle), "--trust", ledger.pub("rogue"), "--db", str(untrusted)])
    one_line(result, 1, "genesis")
    assert not untrusted.exists()
    trusted = tmp_path / "trusted.db"
    result = ledger.runner.invoke(app,
                                  ["import", str(bundle), "--trust", ledger.pub("authority"), "--db", str(trusted)])
    assert result.exit_code == 0, result.stderr
    assert "no --trust" not in result.stderr and "trust on first use" not in result.stderr.lower()
