"""`custody serve --witness`: the real service with witnesses, both ways, end to end.

The service pushes its checkpoints to `custody witness serve` and to a witness written from the spec
alone (`spec_tlog.SpecWitness`); a witness that pulls (`cosign --ledger URL`) posts its cosignature
back. Each time `GET /checkpoint` must carry the cosignature and `verify --witness` (on the database
and `--ledger URL`) must accept it. The last test runs both commands as real processes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from typer.testing import CliRunner

from commands.main import app as cli
from ledger import checkpoint as notes
from ledger import keys
from ledger.service.app import build_app
from ledger.service.submission import Ledger
from ledger.witness import Witness
from ledger.witness_app import witness_app
from ledger.witnessing import WitnessConfig
from tests.conftest import ORIGIN, ROOT
from tests.conftest import Ledger as Book
from tests.service.conftest import CHECKPOINT_EVERY, Running
from tests.service.servers import serving
from tests.service.spec_tlog import SpecWitness, check_cosignature

W1 = "witness.test/w1"
W2 = "witness.test/w2"
SPEC = "spec.test/w"
CUSTODY = [sys.executable, "-c", "from commands.main import run; run()"]


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except httpx.TransportError:
            pass  # `custody serve` prints its line once bound; it listens a moment later
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def grow(book: Book, serial: str) -> None:
    book.record("fabricated", "tsmc", [serial], "--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1",
                ok=True)


def served_note(url: str) -> str:
    return httpx.get(url + "/checkpoint", timeout=10).text


def cosigned_by(url: str, name: str, size: int | None = None) -> Callable[[], bool]:
    def check() -> bool:
        note = served_note(url)
        return f"\u2014 {name} " in note and (size is None or notes.parse_note(note).checkpoint.size >= size)

    return check


def body_of(note: str) -> str:
    return note.split("\n\n")[0] + "\n"


def line_of(note: str, name: str) -> str:
    return next(line + "\n" for line in note.splitlines() if line.startswith(f"\u2014 {name} "))


def new_witness_key(book: Book, name: str) -> keys.PrivateKey:
    key = keys.generate()
    keys.write_keypair(book.dir / "keys", name, key, None, comment=name)
    return key


def test_serve_pushes_to_witnesses_and_takes_cosignatures(book: Book, tmp_path: Path) -> None:
    k1 = new_witness_key(book, "w1")
    k2 = new_witness_key(book, "w2")
    operator = keys.load_private(Path(book.key("operator")), lambda: None)
    witness = Witness(W1, k1, {ORIGIN: operator.public}, tmp_path / "w1.state")
    with serving(witness_app(witness)) as w1_url, SpecWitness(SPEC, {ORIGIN: operator.public}) as spec:
        (book.dir / "spec.pub").write_text(keys.public_line(spec.public, "spec") + "\n")
        witnesses = [WitnessConfig(W1, k1.public, w1_url), WitnessConfig(SPEC, spec.public, spec.url),
                     WitnessConfig(W2, k2.public)]
        ledger = Ledger(book.db, operator, checkpoint_every=CHECKPOINT_EVERY)
        with Running(build_app(ledger, witnesses=witnesses)) as served:
            url = served.url
            # on start, the latest checkpoint goes to the pushed witnesses: both cosign it
            wait_for(cosigned_by(url, W1), "the first cosignature by w1")
            wait_for(cosigned_by(url, SPEC), "the first cosignature by the spec witness")
            first = served_note(url)
            check_cosignature(line_of(first, W1), W1, k1.public, body_of(first))
            check_cosignature(line_of(first, SPEC), SPEC, spec.public, body_of(first))
            assert spec.requests[0][:2] == (0, 0)  # first contact: old 0, no proof lines

            # the log grows: each witness gets the new checkpoint with a proof from what it cosigned
            size = notes.parse_note(first).checkpoint.size
            grow(book, "SV-1")
            grow(book, "SV-2")
            wait_for(lambda: notes.parse_note(served_note(url)).checkpoint.size >= size + 2, "a new checkpoint")
            wait_for(cosigned_by(url, W1, size + 2), "w1's cosignature on the new checkpoint")
            wait_for(lambda: f"\u2014 {SPEC} " in served_note(url), "the spec witness's")
            note = served_note(url)
            check_cosignature(line_of(note, W1), W1, k1.public, body_of(note))
            assert any(old == size and lines > 0 for old, lines, _ in spec.requests)
            assert witness.latest(ORIGIN).size == notes.parse_note(note).checkpoint.size  # type: ignore[union-attr]

            # a witness that pulls: cosign --ledger URL, posted back, served and stored
            runner = CliRunner()
            result = runner.invoke(cli, ["cosign", "--ledger", url, "--name", W2, "--key", book.key("w2"),
                                         "--state", str(tmp_path / "w2.state")])
            assert result.exit_code == 0, result.stderr
            wait_for(cosigned_by(url, W2), "w2's cosignature")
            served = served_note(url)
            check_cosignature(line_of(served, W2), W2, k2.public, body_of(served))
            # a witness the service does not know is refused
            k3 = new_witness_key(book, "w3")
            result = runner.invoke(cli, ["cosign", "--ledger", url, "--name", "witness.test/w3", "--key",
                                         book.key("w3"), "--state", str(tmp_path / "w3.state")])
            assert result.exit_code == 1 and "cosignature" in result.stderr
            assert k3.public

            # verify --witness accepts the served checkpoint, over HTTP and on the database
            specs = [f"{W1}={book.pub('w1')}", f"{W2}={book.pub('w2')}", f"{SPEC}={book.dir / 'spec.pub'}"]
            args = [a for s in specs for a in ("--witness", s)]
            over_http = runner.invoke(cli, ["verify", "--ledger", url, "--trust", book.pub("authority"), *args],
                                      env={"CUSTODY_DB": ""})
            assert over_http.exit_code == 0, over_http.stderr
            on_db = runner.invoke(cli, ["--db", book.db, "verify", *args])
            assert on_db.exit_code == 0, on_db.stderr
            stranger = runner.invoke(cli, ["--db", book.db, "verify", "--witness",
                                           f"witness.test/w3={book.pub('w3')}"])
            assert stranger.exit_code == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen([*CUSTODY, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "listening on" in line or "serving" in line, line
    return process


def test_the_two_commands_against_each_other(sqlite_ledger: Book, tmp_path: Path) -> None:
    """`custody serve --witness NAME=PUBFILE=URL` and `custody witness serve`, as real processes."""
    book = sqlite_ledger
    k1 = new_witness_key(book, "w1")
    w_port, s_port = _free_port(), _free_port()
    witness = _start(["witness", "serve", "--name", W1, "--key", book.key("w1"), "--state",
                      str(tmp_path / "w1.state"), "--log", f"{ORIGIN}={book.pub('operator')}", "--port",
                      str(w_port)])
    try:
        service = _start(["--db", book.db, "serve", "--operator-key", book.key("operator"), "--port",
                          str(s_port), "--checkpoint-every", "0.1", "--witness",
                          f"{W1}={book.pub('w1')}=http://127.0.0.1:{w_port}"])
        url = f"http://127.0.0.1:{s_port}"
        try:
            wait_for(cosigned_by(url, W1), "w1's cosignature through the real commands", 60)
            size = notes.parse_note(served_note(url)).checkpoint.size
            grow(book, "PX-1")
            wait_for(cosigned_by(url, W1, size + 1), "w1's cosignature on the grown log", 60)
            note = served_note(url)
            check_cosignature(line_of(note, W1), W1, k1.public, body_of(note))
            result = CliRunner().invoke(cli, ["verify", "--ledger", url, "--witness", f"{W1}={book.pub('w1')}"],
                                        env={"CUSTODY_DB": ""})
            assert result.exit_code == 0, result.stderr
        finally:
            service.send_signal(signal.SIGINT)
            service.wait(30)
    finally:
        witness.send_signal(signal.SIGINT)
        witness.wait(30)
    for process in (witness, service):
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
