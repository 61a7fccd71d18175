"""Rough edges a new user hit (issue 15): each a small thing, each seen to fail before its fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from commands.main import app


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


# --- a real process: Ctrl-C and closed pipes -----------------------------------------------------------

PROGRAM = [sys.executable, "-c", "from commands.main import run; run()"]


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
