"""Faults: a read-only database, a disk that fills during an append. All or nothing, a clear error, and
`verify` intact afterwards. (SIGKILL during a large append is tested elsewhere.)

The read-only cases use what the machine allows: a read-only bind mount (as root), a file that another
user may only read (through `setpriv`), a PostgreSQL role that may only SELECT. The full disk is a tmpfs
of a few MiB mounted for the test. Each is skipped, with the reason, where it cannot be made.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger import views
from ledger.errors import Conflict, StoreError
from ledger.store import Store
from tests.cli.test_bad_input import NOBODY, fingerprint, one_line, run_as
from tests.conftest import PARTICIPANTS, Ledger, make_keys

FAB = ["--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1"]
IS_ROOT = os.geteuid() == 0


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _new_ledger(root: Path, db: Path) -> Ledger:
    make_keys(root / "keys", ["authority", "operator", *PARTICIPANTS])
    book = Ledger(root, str(db), CliRunner())
    book.cli(
        "init",
        "--origin",
        "custody.test/faults",
        "--authority",
        book.key("authority"),
        "--operator",
        book.pub("operator"),
        ok=True,
    )
    book.cli(
        "participant",
        "add",
        "tsmc",
        "--role",
        "fab",
        "--pubkey",
        book.pub("tsmc"),
        "--country",
        "TW",
        "--key",
        book.key("authority"),
        ok=True,
    )
    return book


def _files(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()
    }


def _log_size(book: Ledger) -> int:
    result = book.cli("verify", "--json")
    assert result.exit_code in (0, 3), result.stderr
    return int(json.loads(result.stdout)["log_size"])


# --- a read-only database --------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path]:
    """`source` seen through a read-only bind mount at `target` (root only)."""
    target.mkdir()
    if not IS_ROOT or not _mount("--bind", str(source), str(target)):
        pytest.skip("a read-only bind mount needs root and mount(8)")
    try:
        if not _mount("-o", "remount,bind,ro", str(target)):
            pytest.skip("cannot remount the bind mount read-only")
        yield target
    finally:
        _umount(target)


def test_read_only_mount(tmp_path: Path) -> None:
    """Verify, history and reports work on read-only media; an append fails cleanly and writes nothing."""
    src = tmp_path / "src"
    src.mkdir()
    book = _new_ledger(tmp_path, src / "custody.db")
    book.record("fabricated", "tsmc", ["A1", "A2"], *FAB, ok=True)
    before = _files(src)
    with read_only_view(src, tmp_path / "ro") as ro:
        reader = Ledger(tmp_path, str(ro / "custody.db"), CliRunner())
        result = reader.cli("verify", "--json", "--trust", book.pub("authority"))
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["log_size"] == 3
        history = reader.cli("history", "A2", "--json")
        assert history.exit_code == 0 and json.loads(history.stdout)["steps"][0]["kind"] == "fabricated"
        report = reader.cli("report", "compliance", "--json")
        assert report.exit_code in (0, 3) or "No such command" in report.stderr, report.stderr
        one_line(reader.record("fabricated", "tsmc", ["A3"], *FAB), 2, str(ro / "custody.db"))
    assert _files(src) == before
    assert _log_size(book) == 3


def test_read_only_mount_with_a_pending_write_ahead_log(tmp_path: Path) -> None:
    import sqlite3

    src = tmp_path / "src"
    src.mkdir()
    book = _new_ledger(tmp_path, src / "custody.db")
    holder = sqlite3.connect(
        src / "custody.db"
    )  # keeps the WAL from being checkpointed, as a live writer would
    holder.execute("SELECT count(*) FROM stored_events").fetchall()
    book.record("fabricated", "tsmc", ["W1"], *FAB, ok=True)
    assert (src / "custody.db-wal").stat().st_size > 0
    try:
        with read_only_view(src, tmp_path / "ro") as ro:
            reader = Ledger(tmp_path, str(ro / "custody.db"), CliRunner())
            result = reader.cli("verify", "--json")
            seen = json.loads(result.stdout)["log_size"] if result.exit_code in (0, 3) else None
            assert seen == 3 or result.exit_code == 2, "verify silently showed an older ledger"
    finally:
        holder.close()


@pytest.mark.skipif(IS_ROOT and shutil.which("setpriv") is None, reason="needs setpriv to drop root")
@pytest.mark.parametrize("directory_mode", [0o755, 0o777], ids=["read-only directory", "writable directory"])
def test_read_only_file_for_another_user(tmp_path: Path, directory_mode: int) -> None:
    """A database file mode 0444 read by a user who does not own it: readers work, writers fail cleanly."""
    book = _new_ledger(tmp_path, tmp_path / "custody.db")
    book.record("fabricated", "tsmc", ["B1"], *FAB, ok=True)
    shared = Path(f"/tmp/custody-faults-{uuid.uuid4().hex[:12]}")
    try:
        shared.mkdir(mode=0o755)
        shutil.copy(tmp_path / "custody.db", shared / "custody.db")
        shutil.copytree(tmp_path / "keys", shared / "keys")
        if IS_ROOT:
            subprocess.run(["chown", "-R", str(NOBODY), str(shared / "keys")], check=True)
        (shared / "custody.db").chmod(0o444)
        shared.chmod(directory_mode)
        db = str(shared / "custody.db")
        before = hashlib.sha256((shared / "custody.db").read_bytes()).hexdigest()
        user = NOBODY if IS_ROOT else os.geteuid()
        verified = run_as(user, "--db", db, "verify")
        assert verified.returncode == 0, verified.stderr
        history = run_as(user, "--db", db, "history", "B1")
        assert history.returncode == 0 and "B1" in history.stdout, history.stderr
        refused = run_as(
            user,
            "--db",
            db,
            "record",
            "fabricated",
            "--key",
            str(shared / "keys" / "tsmc"),
            "--serial",
            "B2",
            *FAB,
        )
        assert refused.returncode == 2, (refused.stdout, refused.stderr)
        assert refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "Traceback" not in refused.stderr and db in refused.stderr
        assert hashlib.sha256((shared / "custody.db").read_bytes()).hexdigest() == before
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.postgres
def test_postgres_role_that_may_only_read(ledger: Ledger) -> None:
    """On PostgreSQL the auditor's role may only SELECT: verify and history work, an append fails cleanly."""
    if not ledger.db.startswith("postgresql://"):
        pytest.skip("the PostgreSQL variant of a read-only database")
    import psycopg

    ledger.record("fabricated", "tsmc", ["P1"], *FAB, ok=True)
    base, _, query = ledger.db.partition("?")
    schema = query.split("schema=")[1]
    role = f"reader_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {role}')
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO {role}')
    try:
        url = base.replace("://postgres@", f"://{role}@", 1) + "?" + query
        if url == ledger.db:
            pytest.skip("cannot derive a URL for another role from " + base)
        reader = Ledger(ledger.dir, url, ledger.runner)
        before = fingerprint(ledger.db)
        result = reader.cli("verify", "--json")
        assert result.exit_code == 0, result.stderr
        assert reader.cli("history", "P1").exit_code == 0
        one_line(reader.record("fabricated", "tsmc", ["P2"], *FAB), 2)
        assert fingerprint(ledger.db) == before
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {role}')
            conn.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM {role}')
            conn.execute(f"DROP ROLE {role}")


# --- a disk that fills during an append -----------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, mounted for this test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not IS_ROOT or not _mount("-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)):
        pytest.skip("a small filesystem for the test needs root and mount(8) (tmpfs)")
    try:
        yield mount
    finally:
        _umount(mount)


def _fill(disk: Path, leave: int) -> Path:
    """Take all the free space of `disk` but `leave` bytes."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def test_disk_fills_during_an_append(small_disk: Path, tmp_path: Path) -> None:
    """A 2,000-unit `fabricated` on a disk with room for part of it: at every amount of free space the append
    either completes or fails with one line and leaves the ledger exactly as it was."""
    serials = tmp_path / "serials.txt"
    serials.write_text("".join(f"SN{i:06d}\n" for i in range(2000)))
    template = tmp_path / "template"
    template.mkdir()
    _new_ledger(template, template / "custody.db")
    outcomes = []
    for leave_kb in (0, 64, 256, 448, 640, 2048):
        ledger_dir = small_disk / f"ledger-{leave_kb}"
        shutil.copytree(template, ledger_dir)
        book = Ledger(ledger_dir, str(ledger_dir / "custody.db"), CliRunner())
        before = fingerprint(book.db)
        filler = _fill(small_disk, leave_kb * 1024)
        result = book.cli(
            "record", "fabricated", "--key", book.key("tsmc"), "--serials-file", str(serials), *FAB
        )
        filler.unlink()
        if result.exit_code == 0:
            assert _log_size(book) == 4  # 2,000 units: two statements of at most 65,535 bytes
            outcomes.append((leave_kb, "recorded"))
        else:
            one_line(result, 2, "full")
            assert fingerprint(book.db) == before  # all or nothing
            verified = book.cli("verify", "--json")
            assert verified.exit_code == 0, verified.stderr
            assert json.loads(verified.stdout)["log_size"] == 2
            again = book.cli(
                "record", "fabricated", "--key", book.key("tsmc"), "--serials-file", str(serials), *FAB
            )  # with room again, the same command works
            assert again.exit_code == 0, again.stderr
            assert book.cli("verify").exit_code == 0
            outcomes.append((leave_kb, "failed cleanly, then recorded"))
        shutil.rmtree(ledger_dir)
    print(f"\ndisk full during a 2,000-unit append, by free KiB: {outcomes}")
    assert outcomes[0][1].startswith("failed") and outcomes[-1][1] == "recorded"


def test_views_failing_after_the_statement_is_written(
    sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The views are saved in the statement's transaction, after it: when they fail (a disk that fills),
    nothing is written and `record` says so; it never reports a failure for a statement that is in the log."""
    size = _log_size(sqlite_ledger)

    def disk_full(*_: Any, **__: Any) -> None:
        raise StoreError(f"cannot write views to {sqlite_ledger.db}: database or disk is full")

    monkeypatch.setattr(views, "save_in", disk_full)
    result = sqlite_ledger.record("fabricated", "tsmc", ["V1"], *FAB)
    monkeypatch.undo()
    recorded = _log_size(sqlite_ledger) == size + 1
    assert (result.exit_code == 0) == recorded, (result.exit_code, recorded, result.stderr)
    assert not recorded and result.exit_code == 2, result.stderr  # one transaction: nothing half-written


def test_views_catch_up_after_a_failed_view_write(
    sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Views left behind the log (their rows left out, as when the position check finds another writer's
    position): the log is intact, and the next writer and readers see the statement."""

    def moved(*_: Any, **__: Any) -> None:
        raise Conflict("views moved on")  # raised before any row is written: the statement alone is stored

    monkeypatch.setattr(views, "save_in", moved)
    sqlite_ledger.record("fabricated", "tsmc", ["V1"], *FAB, ok=True)
    monkeypatch.undo()
    with Store(sqlite_ledger.db) as store:
        assert views.position(store) == store.size() - 1  # the views lag the log by the statement
    assert sqlite_ledger.cli("verify").exit_code == 0
    assert sqlite_ledger.cli("history", "V1").exit_code == 0
    sqlite_ledger.record(
        "shipped-to-us", "kerry", ["V1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True
    )
    assert sqlite_ledger.cli("verify").exit_code == 0
    with Store(sqlite_ledger.db) as store:
        assert views.position(store) == store.size()  # caught up by that writer
