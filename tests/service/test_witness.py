"""`custody witness serve`: the C2SP tlog-witness, pushed to by a client written from the spec alone.

Every status code of c2sp.org/tlog-witness `add-checkpoint` (200, 400, 403, 404, 409 with
`text/x.tlog.size`, 422), rollbacks and forks refused, the state file's atomicity (a failed or killed
update leaves the old state or the new one, never a cosignature the state does not record), the lock
around check-and-save (threads and separate witnesses sharing a state file), and the real command.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from ledger import keys
from ledger import witness as witness_lib
from ledger.errors import BadInput, ConsistencyRejected, OldSizeConflict, WitnessRefused
from ledger.witness import Witness, encode_state, read_state
from ledger.witness_app import witness_app
from tests.conftest import ROOT
from tests.service.servers import serving
from tests.service.spec_tlog import (
    SpecLog,
    add_checkpoint_body,
    b64,
    check_cosignature,
    key_id,
    mth,
    spec_push,
)

CUSTODY = [sys.executable, "-c", "from commands.main import run; run()"]
NAME = "witness.test/w1"
ORIGIN = "custody.test/log-a"
OTHER = "custody.test/log-b"


@pytest.fixture
def log() -> SpecLog:
    spec = SpecLog(ORIGIN)
    spec.append(10)
    return spec


@pytest.fixture
def wkey() -> keys.PrivateKey:
    return keys.from_seed(bytes(range(32)))


def make_witness(tmp_path: Path, wkey: keys.PrivateKey, *logs: SpecLog, state: str = "w.state",
                 clock: float | None = None) -> Witness:
    return Witness(NAME, wkey, {lg.origin: lg.public for lg in logs}, tmp_path / state,
                   **({"clock": lambda: clock} if clock is not None else {}))


def push(w: Witness, old: int, log: SpecLog, size: int | None = None, hashes: list[bytes] | None = None,
         note: str | None = None) -> str:
    size = len(log.entries) if size is None else size
    body = add_checkpoint_body(old, log.proof(old, size) if hashes is None else hashes, note or log.note(size))
    return w.add_checkpoint(body).lines


def status_of(w: Witness, body: bytes) -> int:
    try:
        w.add_checkpoint(body)
    except WitnessRefused as e:
        return e.status
    return 200


# --- the library: every path --------------------------------------------------------------------------


def test_first_contact_then_extensions_cosign_per_spec(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    line = push(w, 0, log)
    assert check_cosignature(line, NAME, wkey.public, log.body()) > 0
    assert w.latest(ORIGIN).size == 10  # type: ignore[union-attr]
    for grow in (1, 5, 300, 1):
        old = len(log.entries)
        log.append(grow)
        line = push(w, old, log)
        check_cosignature(line, NAME, wkey.public, log.body())
    assert w.latest(ORIGIN).size == len(log.entries)  # type: ignore[union-attr]
    # the same checkpoint again: the same size and root, no proof, cosigned again
    again = push(w, len(log.entries), log)
    check_cosignature(again, NAME, wkey.public, log.body())


def test_cosignature_bytes_are_the_spec_s(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log, clock=1_700_000_000.7)
    line = push(w, 0, log)
    raw = __import__("base64").b64decode(line.split(" ")[2])
    assert line.startswith(f"\u2014 {NAME} ") and line.endswith("\n") and line.count("\n") == 1
    assert raw[:4] == key_id(NAME, 4, wkey.public)
    assert int.from_bytes(raw[4:12], "big") == 1_700_000_000
    message = f"cosignature/v1\ntime 1700000000\n{log.body()}".encode()
    SigningKey(bytes(range(32))).verify_key.verify(message, raw[12:])
    with pytest.raises(BadSignatureError):  # it signs the body, not the body with another size
        SigningKey(bytes(range(32))).verify_key.verify(message.replace(b"\n10\n", b"\n11\n"), raw[12:])


def test_unknown_origin_is_404(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    stranger = SpecLog(OTHER)
    stranger.append(3)
    w = make_witness(tmp_path, wkey, log)
    assert status_of(w, add_checkpoint_body(0, [], stranger.note())) == 404


def test_no_valid_log_signature_is_403(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    assert status_of(w, add_checkpoint_body(0, [], log.note(key=SigningKey.generate()))) == 403
    note = log.note()
    body, sig = note.split("\n\n")
    raw = bytearray(__import__("base64").b64decode(sig.split(" ")[2]))
    raw[10] ^= 1
    forged = f"{body}\n\n\u2014 {ORIGIN} {b64(bytes(raw))}\n"
    assert status_of(w, add_checkpoint_body(0, [], forged)) == 403
    assert w.latest(ORIGIN) is None


def test_unknown_signature_lines_are_ignored(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    other = SigningKey.generate()
    extra = f"\u2014 someone.else/key {b64(key_id('someone.else/key', 1, bytes(other.verify_key)) + bytes(64))}\n"
    line = push(w, 0, log, note=log.note() + extra)
    check_cosignature(line, NAME, wkey.public, log.body())


def test_old_size_beyond_the_checkpoint_is_400(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    assert status_of(w, add_checkpoint_body(11, [], log.note())) == 400


@pytest.mark.parametrize("body", [
    b"", b"old 1", b"old 01\n\n", b"old -1\n\n", b"old 1 \n\n", b"new 0\n\n", b"old 0\nnot base64!\n\n",
    b"old 0\n" + b"QUJD\n\n",  # base64 of 3 bytes, not a hash
    b"old 0\n\n", b"old 0\n\nnot a note\n", b"\xff\xfe", b"old 0\n" + b"A" * 10,
])
def test_malformed_requests_are_400(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog, body: bytes) -> None:
    w = make_witness(tmp_path, wkey, log)
    assert status_of(w, body) == 400


def test_more_than_63_proof_lines_is_400(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    push(w, 0, log, size=5)
    assert status_of(w, add_checkpoint_body(5, [bytes(32)] * 64, log.note())) == 400


def test_old_size_not_the_latest_is_409_naming_it(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    push(w, 0, log, size=4)
    for old in (0, 3, 5, 10):
        with pytest.raises(OldSizeConflict) as e:
            push(w, old, log)
        assert e.value.status == 409 and e.value.latest == 4
    # a client that knows nothing sends `old 0`, learns 4 from the 409, and resends from there
    with pytest.raises(OldSizeConflict) as e:
        push(w, 0, log)
    check_cosignature(push(w, e.value.latest, log), NAME, wkey.public, log.body())


def test_rollback_is_refused_by_409(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    push(w, 0, log)
    for old in (0, 5):
        with pytest.raises(OldSizeConflict):
            push(w, old, log, size=5)
    assert w.latest(ORIGIN).size == 10  # type: ignore[union-attr]


def test_bad_proofs_and_forks_are_422(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    push(w, 0, log, size=6)
    good = log.proof(6, 10)
    bad = [bytes(32), *good[1:]]
    for hashes in (bad, good[:-1], [*good, bytes(32)], []):
        with pytest.raises(ConsistencyRejected) as e:
            push(w, 6, log, hashes=hashes)
        assert e.value.status == 422
    # a fork: the same entries up to 6, others after
    fork = SpecLog(ORIGIN, key=log.key, entries=log.entries[:3] + [b"forged"] * 7)
    assert status_of(w, add_checkpoint_body(6, fork.proof(6, 10), fork.note())) == 422
    # the same size with another root
    assert status_of(w, add_checkpoint_body(6, [], log.note(6, root=mth([b"x"] * 6)))) == 422
    # the same size and root, but a proof where none belongs
    assert status_of(w, add_checkpoint_body(6, [bytes(32)], log.note(6))) == 422
    assert w.latest(ORIGIN).size == 6  # type: ignore[union-attr]
    check_cosignature(push(w, 6, log), NAME, wkey.public, log.body())


def test_old_zero_takes_no_proof_and_an_empty_tree_has_the_empty_root(tmp_path: Path, wkey: keys.PrivateKey,
                                                                      log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    assert status_of(w, add_checkpoint_body(0, [bytes(32)], log.note())) == 422
    assert status_of(w, add_checkpoint_body(0, [], log.note(0, root=bytes(32)))) == 422
    check_cosignature(push(w, 0, log, size=0), NAME, wkey.public, log.body(0))
    check_cosignature(push(w, 0, log), NAME, wkey.public, log.body())


def test_logs_are_independent(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    second = SpecLog(OTHER)
    second.append(3)
    w = make_witness(tmp_path, wkey, log, second)
    push(w, 0, log)
    push(w, 0, second)
    second.append(20)
    with pytest.raises(OldSizeConflict) as e:
        push(w, 10, second)
    assert e.value.latest == 3
    state = read_state(tmp_path / "w.state", NAME, wkey.public)
    assert {o: n.checkpoint.size for o, n in state.items()} == {ORIGIN: 10, OTHER: 3}
    push(w, 3, second)
    assert w.latest(ORIGIN).size == 10 and w.latest(OTHER).size == 23  # type: ignore[union-attr]


# --- the state file -----------------------------------------------------------------------------------


def test_state_survives_a_restart_and_is_checked(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    push(make_witness(tmp_path, wkey, log), 0, log)
    again = make_witness(tmp_path, wkey, log)
    assert again.latest(ORIGIN).size == 10  # type: ignore[union-attr]
    with pytest.raises(OldSizeConflict):
        push(again, 0, log)
    document = json.loads((tmp_path / "w.state").read_text())
    assert set(document) == {"format", "name", "logs"} and document["name"] == NAME
    # a state file cosigned by another key, damaged, or foreign is refused, never taken for a fresh start
    with pytest.raises(BadInput, match="not one witness"):
        Witness(NAME, keys.generate(), {ORIGIN: log.public}, tmp_path / "w.state")
    with pytest.raises(BadInput, match="belongs to witness"):
        Witness("witness.test/w2", wkey, {ORIGIN: log.public}, tmp_path / "w.state")
    (tmp_path / "bad.state").write_text(document["logs"][ORIGIN])
    with pytest.raises(BadInput, match="not a witness state file"):
        make_witness(tmp_path, wkey, log, state="bad.state")
    document["logs"][OTHER] = document["logs"][ORIGIN]
    (tmp_path / "misfiled.state").write_text(json.dumps(document))
    with pytest.raises(BadInput, match="filed under"):
        make_witness(tmp_path, wkey, log, state="misfiled.state")


def test_a_failed_save_leaves_the_old_state_and_answers_nothing(tmp_path: Path, wkey: keys.PrivateKey,
                                                                log: SpecLog, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_witness(tmp_path, wkey, log)
    push(w, 0, log, size=4)
    before = (tmp_path / "w.state").read_bytes()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(BadInput, match="No space left"):
        push(w, 4, log)
    monkeypatch.undo()
    assert (tmp_path / "w.state").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert w.latest(ORIGIN).size == 4  # type: ignore[union-attr]
    check_cosignature(push(w, 4, log), NAME, wkey.public, log.body())


KILL_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from nacl.signing import SigningKey
from ledger import keys
from ledger.witness import Witness
from tests.service.spec_tlog import SpecLog, add_checkpoint_body
log = SpecLog("custody.test/log-a", key=SigningKey(bytes(32)))
w = Witness("witness.test/w1", keys.from_seed(bytes(range(32))), {log.origin: log.public}, Path(sys.argv[2]))
latest = w.latest(log.origin)
size = latest.size if latest else 0
log.append(size)
print(size, flush=True)
while True:
    log.append(1)
    w.add_checkpoint(add_checkpoint_body(size, log.proof(size, size + 1), log.note()))
    size += 1
"""


def test_a_witness_killed_mid_update_leaves_a_whole_state(tmp_path: Path, wkey: keys.PrivateKey) -> None:
    state = tmp_path / "w.state"
    log = SpecLog(ORIGIN, key=SigningKey(bytes(32)))
    sizes = []
    for round_ in range(6):
        child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(ROOT), str(state)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout is not None
        start = int(child.stdout.readline())
        time.sleep(0.15 + 0.05 * round_)
        child.send_signal(signal.SIGKILL)
        child.wait()
        notes = read_state(state, NAME, wkey.public)  # parses and verifies: old or new, never torn
        size = notes[ORIGIN].checkpoint.size
        assert size >= start
        log.entries = []
        log.append(size)
        assert notes[ORIGIN].checkpoint.root == mth(log.entries)
        sizes.append(size)
    assert sizes == sorted(sizes) and sizes[-1] > 0


def _race(witnesses: list[Witness], log: SpecLog, old: int, sizes: list[int]) -> dict[int, int | str]:
    results: dict[int, int | str] = {}
    barrier = threading.Barrier(len(sizes))

    def one(i: int, size: int) -> None:
        body = add_checkpoint_body(old, log.proof(old, size), log.note(size))
        barrier.wait()
        try:
            witnesses[i % len(witnesses)].add_checkpoint(body)
            results[size] = 200
        except WitnessRefused as e:
            results[size] = e.status if not isinstance(e, OldSizeConflict) else f"409:{e.latest}"

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate(sizes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("instances", [1, 3])
def test_check_and_save_is_atomic_under_races(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog,
                                              instances: int) -> None:
    """Requests racing from one old size: exactly one is cosigned; the others learn its size (409).

    With three `Witness` objects on one state file (as three processes would be), the `flock` is what
    serialises them.
    """
    log.append(40)
    witnesses = [make_witness(tmp_path, wkey, log) for _ in range(instances)]
    push(witnesses[0], 0, log, size=10)
    results = _race(witnesses, log, 10, [11, 15, 20, 30, 50])
    winners = [s for s, r in results.items() if r == 200]
    assert len(winners) == 1, results
    assert all(r == f"409:{winners[0]}" for s, r in results.items() if s != winners[0]), results
    assert read_state(tmp_path / "w.state", NAME, wkey.public)[ORIGIN].checkpoint.size == winners[0]
    for w in witnesses:
        assert w.latest(ORIGIN).size == winners[0]  # type: ignore[union-attr]


# --- over HTTP ----------------------------------------------------------------------------------------


def test_http_status_codes_and_content_types(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    w = make_witness(tmp_path, wkey, log)
    with serving(witness_app(w)) as url, httpx.Client(base_url=url) as client:
        _http_paths(client, wkey, log)


def _http_paths(client: httpx.Client, wkey: keys.PrivateKey, log: SpecLog) -> None:
    r = client.post("/add-checkpoint", content=add_checkpoint_body(0, [], log.note(4)))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    check_cosignature(r.text, NAME, wkey.public, log.body(4))
    r = client.post("/add-checkpoint", content=add_checkpoint_body(0, [], log.note()))
    assert r.status_code == 409 and r.headers["content-type"] == "text/x.tlog.size" and r.content == b"4\n"
    r = client.post("/add-checkpoint", content=add_checkpoint_body(4, [bytes(32)], log.note()))
    assert r.status_code == 422
    r = client.post("/add-checkpoint", content=add_checkpoint_body(11, [], log.note()))
    assert r.status_code == 400
    r = client.post("/add-checkpoint", content=add_checkpoint_body(0, [], log.note(key=SigningKey.generate())))
    assert r.status_code == 403
    stranger = SpecLog(OTHER)
    r = client.post("/add-checkpoint", content=add_checkpoint_body(0, [], stranger.note(0)))
    assert r.status_code == 404
    r = client.post("/add-checkpoint", content=b"x" * (witness_lib.MAX_REQUEST_BYTES + 1))
    assert r.status_code == 413
    assert client.get("/add-checkpoint").status_code == 405
    assert client.post("/other").status_code == 404
    about = client.get("/")
    assert about.status_code == 200 and f"witness {NAME}\n" in about.text and f"log {ORIGIN}\n" in about.text
    for r in (client.post("/add-checkpoint", content=b"old 1\n"),):
        assert r.status_code == 400 and r.text.endswith("\n")


def test_http_state_unusable_is_503_and_nothing_released(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_witness(tmp_path, wkey, log)

    def fail(*args: object) -> None:
        raise OSError(13, "Permission denied")

    with serving(witness_app(w)) as url:
        monkeypatch.setattr(os, "replace", fail)
        r = httpx.post(url + "/add-checkpoint", content=add_checkpoint_body(0, [], log.note()))
    assert r.status_code == 503 and "\u2014" not in r.text


def test_http_slow_body_is_cut_off(tmp_path: Path, wkey: keys.PrivateKey, log: SpecLog) -> None:
    import asyncio

    app = witness_app(make_witness(tmp_path, wkey, log), body_timeout=0.2)
    sent: list[dict[str, object]] = []

    async def run() -> None:
        async def receive() -> dict[str, object]:
            await asyncio.sleep(0.1)
            return {"type": "http.request", "body": b"o", "more_body": True}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/add-checkpoint", "headers": [], "query_string": b"",
                 "http_version": "1.1", "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": ""}
        await asyncio.wait_for(app(scope, receive, send), 5)

    # In a thread of its own: a session's browser tests (Playwright's sync API) keep an event loop running
    # in the main thread, where asyncio.run refuses to start another.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()
    assert sent[0]["status"] == 408


# --- the command, pushed to by the spec-only client -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_custody_witness_serve_with_a_spec_only_client(tmp_path: Path, log: SpecLog) -> None:
    keydir = tmp_path / "keys"
    wkey = keys.generate()
    keys.write_keypair(keydir, "w1", wkey, None, comment="w1")
    (tmp_path / "log.pub").write_text(keys.public_line(log.public, "log") + "\n")
    port = _free_port()
    state = tmp_path / "w1.state"
    server = subprocess.Popen(
        [*CUSTODY, "witness", "serve", "--name", NAME, "--key", str(keydir / "w1"),
         "--state", str(state), "--log", f"{ORIGIN}={tmp_path / 'log.pub'}", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert server.stderr is not None
        assert "listening on" in server.stderr.readline()  # printed once the socket listens
        a = spec_push(url, add_checkpoint_body(0, [], log.note(3)))
        assert a.status == 200
        check_cosignature(a.body.decode(), NAME, wkey.public, log.body(3))
        a = spec_push(url, add_checkpoint_body(0, [], log.note()))
        assert (a.status, a.content_type, a.body) == (409, "text/x.tlog.size", b"3\n")
        a = spec_push(url, add_checkpoint_body(3, log.proof(3, 10), log.note()))
        assert a.status == 200
        check_cosignature(a.body.decode(), NAME, wkey.public, log.body())
        a = spec_push(url, add_checkpoint_body(10, [], log.note(10, root=bytes(32))))
        assert a.status == 422
        assert read_state(state, NAME, wkey.public)[ORIGIN].checkpoint.size == 10
        # a second witness process on the same port is one line and exit 2
        second = subprocess.run(
            [*CUSTODY, "witness", "serve", "--name", NAME, "--key",
             str(keydir / "w1"), "--state", str(state), "--log", f"{ORIGIN}={tmp_path / 'log.pub'}",
             "--port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 2 and second.stderr.count("\n") == 1 and f":{port}" in second.stderr
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(10)
    assert "Traceback" not in (server.stderr.read() if server.stderr else "")


def test_custody_witness_serve_bad_arguments(tmp_path: Path, log: SpecLog) -> None:
    from typer.testing import CliRunner

    from commands.main import app

    keydir = tmp_path / "keys"
    keys.write_keypair(keydir, "w1", keys.generate(), None, comment="w1")
    (tmp_path / "log.pub").write_text(keys.public_line(log.public, "log") + "\n")
    runner = CliRunner()
    base = ["witness", "serve", "--name", NAME, "--key", str(keydir / "w1"), "--state", str(tmp_path / "s")]
    for extra, words in ((["--log", "no-equals"], "ORIGIN=OPERATOR_PUBFILE"),
                         (["--log", f"{ORIGIN}={tmp_path / 'missing.pub'}"], "missing.pub"),
                         (["--log", f"a b={tmp_path / 'log.pub'}"], "origin")):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2 and words in result.stderr and result.stderr.count("\n") == 1, result.stderr
    (tmp_path / "s").write_text("garbage")
    result = runner.invoke(app, [*base, "--log", f"{ORIGIN}={tmp_path / 'log.pub'}"])
    assert result.exit_code == 2 and "not a witness state file" in result.stderr
    assert encode_state(NAME, {}) == (b'{\n "format": "custody-witness/1",\n "logs": {},\n '
                                      b'"name": "witness.test/w1"\n}\n')
