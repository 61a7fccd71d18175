"""Bad input on the command line: one line on stderr, DESIGN's exit status, no traceback, nothing changed.

Usage and input errors (unknown step, missing option, bad time, bad money, bad serials, files that are
not keys or ledgers, wrong passphrases, unsafe key files) exit 2; refused statements (a step for a unit
with no chain, a second `fabricated`) exit 1. Every case checks that stdout is empty, stderr is exactly
one line naming the problem, and the stored ledger is byte for byte what it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger import keys
from ledger.store import Store
from tests.conftest import Ledger

CUSTODY = str(Path(sys.executable).parent / "custody")
FAB = ["--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1"]


def fingerprint(db: str) -> str:
    """A digest of every stored statement, unit link and checkpoint: any change to the ledger shows."""
    digest = hashlib.sha256()
    with Store(db, readonly=True) as store:
        for event in store.log(0):
            digest.update(event.wire)
        for _, version, state in sorted(store.all_unit_links(), key=lambda r: (str(r[0]), r[1])):
            digest.update(repr((version, state.get("index"), state.get("hash"))).encode())
        for _, size, note in store.checkpoints():
            digest.update(f"{size}{note}".encode())
    return digest.hexdigest()


def one_line(result: Any, status: int, *words: str) -> str:
    """Assert a clean failure: `status`, empty stdout, one stderr line containing `words`."""
    assert result.exit_code == status, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "╭" not in result.stderr and "Usage:" not in result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite ledger made through the CLI (the conftest participants, U1 fabricated), copied per test."""
    from typer.testing import CliRunner

    from tests.conftest import PARTICIPANTS, make_keys

    root = tmp_path_factory.mktemp("template")
    make_keys(root / "keys", ["authority", "operator", "rogue", *PARTICIPANTS])
    book = Ledger(root, str(root / "custody.db"), CliRunner())
    book.cli(
        "init",
        "--origin",
        "custody.test/bad-input",
        "--authority",
        book.key("authority"),
        "--operator",
        book.pub("operator"),
        ok=True,
    )
    for name, (pid, role, country) in PARTICIPANTS.items():
        book.cli(
            "participant",
            "add",
            pid,
            "--role",
            role,
            "--pubkey",
            book.pub(name),
            "--country",
            country,
            "--key",
            book.key("authority"),
            ok=True,
        )
    book.cli(
        "customer",
        "approve",
        "alibaba",
        "--cap",
        "100",
        "--license",
        "LIC-1",
        "--key",
        book.key("authority"),
        ok=True,
    )
    book.record("fabricated", "tsmc", ["U1"], *FAB, ok=True)
    return root


@pytest.fixture
def unit(_template: Path, tmp_path: Path, runner: Any) -> Ledger:
    """The ledger with one unit, U1, fabricated. Parsing input does not depend on the store: SQLite only,
    except for the tests that take `both_stores`."""
    root = tmp_path / "ledger"
    shutil.copytree(_template, root)
    return Ledger(root, str(root / "custody.db"), runner)


@pytest.fixture
def both_stores(ledger: Ledger) -> Ledger:
    """The same on both stores: refusals and failed appends must leave PostgreSQL untouched as well."""
    ledger.record("fabricated", "tsmc", ["U1"], *FAB, ok=True)
    return ledger


def _unchanged(ledger: Ledger, before: str) -> None:
    assert fingerprint(ledger.db) == before


# --- record: steps, options, values ----------------------------------------------------------------------

RECORD_CASES = {
    "unknown step": (["record", "teleported", "--key", "{tsmc}", "--serial", "U2"], "teleported"),
    "step as history names it": (["record", "shipped_to_us", "--key", "{kerry}", "--serial", "U1"],
                                 "--port-of-entry"),  # accepted as shipped-to-us, which needs its options
    "missing --key": (["record", "fabricated", "--serial", "U2", *FAB], "--key"),
    "missing step option": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--model", "M", "--site", "S"],
        "--lot",
    ),
    "option of another step": (
        ["record", "received", "--key", "{alibaba}", "--serial", "U1", "--site", "S", "--waybill", "W"],
        "--waybill",
    ),
    "no serial": (["record", "fabricated", "--key", "{tsmc}", *FAB], "serial"),
    "serial twice": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--serial", "U2", *FAB],
        "twice",
    ),
    "serial with a space": (["record", "fabricated", "--key", "{tsmc}", "--serial", "U 2", *FAB], "serial"),
    "serial with a slash": (["record", "fabricated", "--key", "{tsmc}", "--serial", "a/b", *FAB], "serial"),
    "serial with a non-ASCII letter": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "Ü2", *FAB],
        "serial",
    ),
    "empty serial": (["record", "fabricated", "--key", "{tsmc}", "--serial", "", *FAB], "serial"),
    "serial of 65 characters": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "S" * 65, *FAB],
        "serial",
    ),
    "bad time": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--at", "yesterday", *FAB],
        "time",
    ),
    "month 13": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--at", "2026-13-01", *FAB],
        "time",
    ),
    "hour 25": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--at", "2026-01-01T25:00", *FAB],
        "time",
    ),
    "February 30": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--at", "2026-02-30", *FAB],
        "time",
    ),
    "before the epoch": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--at", "1969-12-31", *FAB],
        "time",
    ),
    "negative money": (
        [
            "record",
            "duty-paid",
            "--key",
            "{cbp}",
            "--serial",
            "U1",
            "--entry",
            "E",
            "--entered-value",
            "-20000.00",
            "--duty",
            "5000.00",
        ],
        "negative",
    ),
    "non-numeric money": (
        [
            "record",
            "duty-paid",
            "--key",
            "{cbp}",
            "--serial",
            "U1",
            "--entry",
            "E",
            "--entered-value",
            "lots",
            "--duty",
            "5000.00",
        ],
        "amount",
    ),
    "money with three decimals": (
        [
            "record",
            "duty-paid",
            "--key",
            "{cbp}",
            "--serial",
            "U1",
            "--entry",
            "E",
            "--entered-value",
            "20000.005",
            "--duty",
            "5000.00",
        ],
        "amount",
    ),
    "money in exponent form": (
        [
            "record",
            "duty-paid",
            "--key",
            "{cbp}",
            "--serial",
            "U1",
            "--entry",
            "E",
            "--entered-value",
            "2e4",
            "--duty",
            "5000.00",
        ],
        "amount",
    ),
    "money with a currency sign": (
        [
            "record",
            "duty-paid",
            "--key",
            "{cbp}",
            "--serial",
            "U1",
            "--entry",
            "E",
            "--entered-value",
            "$20000",
            "--duty",
            "5000.00",
        ],
        "amount",
    ),
    "result neither pass nor fail": (
        [
            "record",
            "inspected",
            "--key",
            "{uslab}",
            "--serial",
            "U1",
            "--result",
            "ok",
            "--site",
            "S",
            "--country",
            "US",
            "--report",
            "R",
        ],
        "result",
    ),
    "lower-case country": (
        [
            "record",
            "inspected",
            "--key",
            "{uslab}",
            "--serial",
            "U1",
            "--result",
            "pass",
            "--site",
            "S",
            "--country",
            "us",
            "--report",
            "R",
        ],
        "country",
    ),
    "both violation modes": (
        [
            "record",
            "received",
            "--key",
            "{alibaba}",
            "--serial",
            "U1",
            "--site",
            "S",
            "--allow-violation",
            "--skip-violating",
        ],
        "not both",
    ),
    "unknown option": (
        ["record", "fabricated", "--key", "{tsmc}", "--serial", "U2", "--colour", "red", *FAB],
        "--colour",
    ),
}


@pytest.mark.parametrize("name", sorted(RECORD_CASES))
def test_record_bad_input(unit: Ledger, name: str) -> None:
    args, word = RECORD_CASES[name]
    args = [a.format(**{n: unit.key(n) for n in ("tsmc", "kerry", "cbp", "uslab", "alibaba")}) for a in args]
    before = fingerprint(unit.db)
    one_line(unit.cli(*args), 2, word)
    _unchanged(unit, before)


def test_unknown_command(runner: Any) -> None:
    from commands.main import app

    one_line(runner.invoke(app, ["frobnicate"]), 2, "frobnicate")


@pytest.mark.parametrize("name", ["unknown step", "bad time", "negative money", "serial with a space"])
def test_record_bad_input_on_both_stores(both_stores: Ledger, name: str) -> None:
    args, word = RECORD_CASES[name]
    args = [a.format(**{n: both_stores.key(n) for n in ("tsmc", "cbp")}) for a in args]
    before = fingerprint(both_stores.db)
    one_line(both_stores.cli(*args), 2, word)
    _unchanged(both_stores, before)


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n", "   \n# x\n\n"])
def test_empty_serials_file(unit: Ledger, tmp_path: Path, content: str) -> None:
    path = tmp_path / "serials.txt"
    path.write_text(content)
    before = fingerprint(unit.db)
    one_line(
        unit.cli("record", "fabricated", "--key", unit.key("tsmc"), "--serials-file", str(path), *FAB),
        2,
        "serials",
    )
    _unchanged(unit, before)


@pytest.mark.parametrize(
    ("content", "word"),
    [
        ("A1\nbad serial\nA3\n", ":2"),
        ("A1\nA1\n", "repeated"),
        ("A1\n" + "S" * 65 + "\n", ":2"),
        ("A1\né\n", ":2"),
    ],
)
def test_bad_serials_file(unit: Ledger, tmp_path: Path, content: str, word: str) -> None:
    path = tmp_path / "serials.txt"
    path.write_text(content, encoding="utf-8")
    before = fingerprint(unit.db)
    one_line(
        unit.cli("record", "fabricated", "--key", unit.key("tsmc"), "--serials-file", str(path), *FAB),
        2,
        word,
    )
    _unchanged(unit, before)


def test_serials_file_that_is_not_text(unit: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "serials.bin"
    path.write_bytes(b"A1\n\xff\xfe\n")
    one_line(
        unit.cli("record", "fabricated", "--key", unit.key("tsmc"), "--serials-file", str(path), *FAB),
        2,
        "UTF-8",
    )


def test_serials_file_that_does_not_exist(unit: Ledger, tmp_path: Path) -> None:
    one_line(
        unit.cli(
            "record",
            "fabricated",
            "--key",
            unit.key("tsmc"),
            "--serials-file",
            str(tmp_path / "nope.txt"),
            *FAB,
        ),
        2,
        "nope.txt",
    )


def test_serials_file_with_comments_and_blank_lines_works(unit: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "serials.txt"
    path.write_text("# shipment 7\nA1\n\n  A2  \nA3 # last\n")
    result = unit.cli("record", "fabricated", "--key", unit.key("tsmc"), "--serials-file", str(path), *FAB)
    assert result.exit_code == 0, result.stderr
    assert "3 units" in result.stdout


# --- refused statements: exit 1 ---------------------------------------------------------------------------


def test_step_for_a_serial_with_no_chain(both_stores: Ledger) -> None:
    unit = both_stores
    before = fingerprint(unit.db)
    one_line(
        unit.record("shipped-to-us", "kerry", ["GHOST"], "--port-of-entry", "DFW", "--waybill", "W"),
        1,
        "chain",
        "GHOST",
    )
    _unchanged(unit, before)


def test_second_fabricated(both_stores: Ledger) -> None:
    unit = both_stores
    before = fingerprint(unit.db)
    one_line(unit.record("fabricated", "tsmc", ["U1"], *FAB), 1, "chain", "U1")
    _unchanged(unit, before)


def test_one_unit_without_chain_refuses_the_whole_batch(both_stores: Ledger) -> None:
    unit = both_stores
    before = fingerprint(unit.db)
    one_line(
        unit.record("shipped-to-us", "kerry", ["U1", "GHOST"], "--port-of-entry", "DFW", "--waybill", "W"),
        1,
        "GHOST",
    )
    _unchanged(unit, before)


# --- history, verify: serials, times, databases ---------------------------------------------------------


def test_history_of_an_unknown_serial(both_stores: Ledger) -> None:
    unit = both_stores
    one_line(unit.cli("history", "NOPE"), 2, "NOPE")


def test_history_of_a_malformed_serial(unit: Ledger) -> None:
    one_line(unit.cli("history", "no such/serial"), 2, "serial")


def test_history_with_a_bad_time(unit: Ledger) -> None:
    one_line(unit.cli("history", "U1", "--at", "noon"), 2, "time")


def test_verify_with_a_bad_as_of(unit: Ledger) -> None:
    one_line(unit.cli("verify", "--as-of", "2026-02-30"), 2, "time")


def test_database_that_is_a_directory(runner: Any, tmp_path: Path) -> None:
    from commands.main import app

    one_line(runner.invoke(app, ["--db", str(tmp_path), "verify"]), 2, "directory")
    one_line(runner.invoke(app, ["--db", str(tmp_path), "history", "U1"]), 2, "directory")


def test_database_that_does_not_exist(runner: Any, tmp_path: Path) -> None:
    from commands.main import app

    missing = tmp_path / "nowhere" / "custody.db"
    one_line(runner.invoke(app, ["--db", str(missing), "verify"]), 2)
    one_line(runner.invoke(app, ["--db", str(tmp_path / "absent.db"), "history", "U1"]), 2)
    assert not missing.exists() and not (tmp_path / "absent.db").exists()  # verify never creates a file


@pytest.mark.parametrize(
    "content", [b"", b"not a database\n", b"SQLite format 3\x00" + b"\xff" * 200, os.urandom(4096)]
)
def test_database_that_is_not_a_ledger(runner: Any, tmp_path: Path, content: bytes) -> None:
    from commands.main import app

    path = tmp_path / "custody.db"
    path.write_bytes(content)
    for args in (["verify"], ["history", "U1"]):
        one_line(runner.invoke(app, ["--db", str(path), *args]), 2)
    assert path.read_bytes() == content


def test_unreachable_postgres(runner: Any) -> None:
    from commands.main import app

    one_line(runner.invoke(app, ["--db", "postgresql://nobody@127.0.0.1:1/none", "verify"]), 2)


def test_record_into_a_missing_database_creates_nothing(runner: Any, tmp_path: Path) -> None:
    from commands.main import app
    from tests.conftest import make_keys

    make_keys(tmp_path / "keys", ["tsmc"])
    db = tmp_path / "custody.db"
    one_line(
        runner.invoke(
            app,
            [
                "--db",
                str(db),
                "record",
                "fabricated",
                "--key",
                str(tmp_path / "keys" / "tsmc"),
                "--serial",
                "U1",
                *FAB,
            ],
        ),
        2,
    )
    assert not db.exists()


def run_as(
    user: int, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `custody` executable under another uid (root ignores file permissions)."""
    prefix = (
        [] if os.geteuid() == user else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    )
    return subprocess.run(
        [*prefix, CUSTODY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "HOME": "/", **(env or {})},
    )


NOBODY = 65534


def world_readable_copy(source: Path, name: str) -> Path:
    """A directory under /tmp that another user can enter, with `source` copied into it."""
    directory = Path(f"/tmp/custody-adversarial-{os.getpid()}-{name}")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    target = directory / source.name
    shutil.copy(source, target)
    return target


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="needs setpriv to drop root"
)
def test_database_that_is_unreadable(sqlite_ledger: Ledger) -> None:
    db = world_readable_copy(Path(sqlite_ledger.db), "unreadable")
    try:
        db.chmod(0o000)
        result = run_as(NOBODY, "--db", str(db), "verify")
        assert result.returncode == 2, (result.stdout, result.stderr)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "readable" in result.stderr or "permission" in result.stderr.lower()
    finally:
        shutil.rmtree(db.parent, ignore_errors=True)


# --- keys ------------------------------------------------------------------------------------------------


@pytest.fixture
def encrypted(unit: Ledger) -> Path:
    """kerry's key, encrypted with the passphrase "right horse"."""
    key = keys.load_private(Path(unit.key("kerry")), lambda: None)
    keys.write_keypair(unit.dir / "keys", "kerry-enc", key, b"right horse", comment="kerry")
    return unit.dir / "keys" / "kerry-enc"


SHIP = ["--serial", "U1", "--port-of-entry", "DFW", "--waybill", "W"]


def test_encrypted_key_with_the_right_passphrase(unit: Ledger, encrypted: Path) -> None:
    result = unit.cli(
        "record", "shipped-to-us", "--key", str(encrypted), *SHIP, env={"CUSTODY_PASSPHRASE": "right horse"}
    )
    assert result.exit_code == 0, result.stderr


def test_wrong_passphrase(unit: Ledger, encrypted: Path, tmp_path: Path) -> None:
    before = fingerprint(unit.db)
    one_line(
        unit.cli(
            "record",
            "shipped-to-us",
            "--key",
            str(encrypted),
            *SHIP,
            env={"CUSTODY_PASSPHRASE": "wrong horse"},
        ),
        2,
        "passphrase",
    )
    wrong = tmp_path / "pass.txt"
    wrong.write_text("battery staple\n")
    one_line(
        unit.cli("record", "shipped-to-us", "--key", str(encrypted), *SHIP, "--passphrase-file", str(wrong)),
        2,
        "passphrase",
    )
    _unchanged(unit, before)


def test_encrypted_key_with_no_passphrase_available(unit: Ledger, encrypted: Path) -> None:
    one_line(
        unit.cli("record", "shipped-to-us", "--key", str(encrypted), *SHIP, env={"CUSTODY_PASSPHRASE": ""}),
        2,
        "passphrase",
    )


def test_passphrase_file_that_does_not_exist(unit: Ledger, encrypted: Path, tmp_path: Path) -> None:
    one_line(
        unit.cli(
            "record",
            "shipped-to-us",
            "--key",
            str(encrypted),
            *SHIP,
            "--passphrase-file",
            str(tmp_path / "nope"),
        ),
        2,
        "nope",
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666])
def test_key_readable_by_group_or_others(unit: Ledger, mode: int) -> None:
    key = Path(unit.key("kerry"))
    key.chmod(mode)
    before = fingerprint(unit.db)
    one_line(unit.cli("record", "shipped-to-us", "--key", str(key), *SHIP), 2, "chmod 600")
    _unchanged(unit, before)


def test_public_key_where_a_private_key_is_needed(unit: Ledger) -> None:
    one_line(unit.cli("record", "shipped-to-us", "--key", unit.pub("kerry"), *SHIP), 2, "public key")


def test_private_key_where_a_public_key_is_needed(unit: Ledger) -> None:
    one_line(
        unit.cli(
            "participant",
            "add",
            "dhl",
            "--role",
            "carrier",
            "--pubkey",
            unit.key("kerry"),
            "--country",
            "DE",
            "--key",
            unit.key("authority"),
        ),
        2,
        "private key",
    )


def _corrupt(path: Path, how: str) -> None:
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if how == "truncated":
        path.write_text(text[: len(text) // 2])
    elif how == "flipped base64":
        middle = len(lines) // 2
        line = lines[middle]
        lines[middle] = line[:5] + ("A" if line[5] != "A" else "B") + line[6:]
        path.write_text("".join(lines))
    elif how == "no footer":
        path.write_text("".join(lines[:-1]))
    elif how == "empty":
        path.write_text("")
    elif how == "binary":
        path.write_bytes(os.urandom(300))
    elif how == "another kind of file":
        path.write_text("[section]\nkey = value\n")
    path.chmod(0o600)


@pytest.mark.parametrize(
    "how", ["truncated", "flipped base64", "no footer", "empty", "binary", "another kind of file"]
)
def test_corrupted_private_key(unit: Ledger, how: str) -> None:
    key = Path(unit.key("kerry"))
    _corrupt(key, how)
    before = fingerprint(unit.db)
    one_line(unit.cli("record", "shipped-to-us", "--key", str(key), *SHIP), 2, str(key))
    _unchanged(unit, before)


@pytest.mark.parametrize("how", ["truncated", "flipped base64", "empty", "binary", "another kind of file"])
def test_corrupted_public_key(unit: Ledger, how: str) -> None:
    pub = Path(unit.pub("kerry"))
    text = pub.read_text()
    if how == "flipped base64":
        pub.write_text(text.replace("AAAA", "AAAB", 1))
    else:
        _corrupt(pub, how)
    one_line(
        unit.cli(
            "participant",
            "add",
            "dhl",
            "--role",
            "carrier",
            "--pubkey",
            str(pub),
            "--country",
            "DE",
            "--key",
            unit.key("authority"),
        ),
        2,
    )


def test_key_that_is_a_directory(unit: Ledger) -> None:
    one_line(unit.cli("record", "shipped-to-us", "--key", str(unit.dir / "keys"), *SHIP), 2, "directory")


def test_key_that_does_not_exist(unit: Ledger) -> None:
    one_line(
        unit.cli("record", "shipped-to-us", "--key", str(unit.dir / "keys" / "nobody"), *SHIP), 2, "nobody"
    )


def test_keys_show_on_garbage(runner: Any, tmp_path: Path) -> None:
    from commands.main import app

    path = tmp_path / "garbage"
    path.write_bytes(b"\x00\x01garbage")
    path.chmod(0o600)
    one_line(runner.invoke(app, ["keys", "show", str(path)]), 2)


def test_bad_input_in_a_real_process_has_no_traceback(sqlite_ledger: Ledger) -> None:
    """The same one-line errors from the installed executable, not only through CliRunner."""
    for args, status in (
        (["record", "teleported", "--key", sqlite_ledger.key("tsmc"), "--serial", "X"], 2),
        (
            [
                "record",
                "shipped-to-us",
                "--key",
                sqlite_ledger.key("kerry"),
                "--serial",
                "GHOST",
                "--port-of-entry",
                "DFW",
                "--waybill",
                "W",
            ],
            1,
        ),
        (["history", "GHOST"], 2),
    ):
        result = run_as(os.geteuid(), "--db", sqlite_ledger.db, *args)
        assert result.returncode == status, (args, result.stderr)
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
