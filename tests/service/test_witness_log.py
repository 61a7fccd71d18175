"""The log's side of witnessing: pushing to witnesses, taking cosignatures in, `cosign --ledger`.

The pusher is tested against a witness written from the spec alone (`spec_tlog.SpecWitness`) and
against `custody`'s own witness; cosignatures reach the store both ways (pushed, and posted to
`POST /v1/cosignatures`), and `verify --witness` then accepts the stored checkpoint. `cosign --ledger`
runs against a small log server made of the library's pieces (the real `custody serve` is tested
with it in test_witness_serve.py once the service is there).
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from commands.main import app as cli
from ledger import checkpoint as notes
from ledger import keys, merkle
from ledger.errors import CosignatureMissing, ServiceUnavailable, WitnessRefused
from ledger.store import Store
from ledger.witness import Witness, read_state
from ledger.witness_app import cosignatures_route, witness_app
from ledger.witnessing import (
    StoredCheckpoints,
    StoreProofs,
    WitnessConfig,
    Witnessing,
    WitnessPusher,
    accept_cosignatures,
    last_cosigned_size,
    load_witnesses,
    parse_witness_option,
    served_note,
)
from tests.conftest import ORIGIN, Ledger
from tests.service.servers import serving
from tests.service.spec_tlog import SpecWitness, check_cosignature, key_id

W1 = "witness.test/w1"
W2 = "witness.test/w2"


def operator_public(book: Ledger) -> bytes:
    return keys.load_public(Path(book.pub("operator")))


def sign(book: Ledger) -> str:
    result = book.cli("checkpoint", "--key", book.key("operator"), ok=True)
    return str(result.stdout)


def grow(book: Ledger, *serials: str) -> None:
    book.record("fabricated", "tsmc", list(serials), "--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot",
                "L1", ok=True)


def body_of(note: str) -> str:
    return note.split("\n\n")[0] + "\n"


def witness_key(book: Ledger, name: str) -> tuple[keys.PrivateKey, str]:
    key = keys.generate()
    keys.write_keypair(book.dir / "keys", name, key, None, comment=name)
    return key, book.pub(name)


def verify_witness(book: Ledger, *specs: str) -> Any:
    args = ["verify", "--json"]
    for spec in specs:
        args += ["--witness", spec]
    return book.cli(*args)


# --- options --------------------------------------------------------------------------------------------


def test_witness_options(tmp_path: Path) -> None:
    assert parse_witness_option("w=a.pub") == ("w", Path("a.pub"), None)
    assert parse_witness_option("w.example/w1=k/a.pub=http://h:8071/x/") == ("w.example/w1", Path("k/a.pub"),
                                                                             "http://h:8071/x")
    for bad in ("w", "=a.pub", "w=", "w=a.pub=ftp://h", "w=a.pub=", "a b=a.pub"):
        with pytest.raises(Exception, match="witness"):
            parse_witness_option(bad)
    keys.write_keypair(tmp_path, "w", keys.generate(), None, comment="w")
    with pytest.raises(Exception, match="twice"):
        load_witnesses([f"w={tmp_path / 'w.pub'}", f"w={tmp_path / 'w.pub'}"])


# --- pushing to a witness written from the spec --------------------------------------------------------


def test_pusher_against_a_spec_only_witness(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    note1 = sign(book)
    size1 = notes.parse_note(note1).checkpoint.size
    with SpecWitness("spec.test/w", {ORIGIN: operator_public(book)}) as spec:
        (book.dir / "spec.pub").write_text(keys.public_line(spec.public, "spec") + "\n")
        config = WitnessConfig("spec.test/w", spec.public, spec.url)
        witnessing = Witnessing(book.db, [config])
        try:
            [outcome] = witnessing.push_now(note1)
            assert outcome.ok, outcome
            assert spec.requests == [(0, 0, size1)]  # first contact: `old 0`, no proof lines
            served = witnessing.decorate(note1)
            check_cosignature(served.splitlines()[-1] + "\n", "spec.test/w", spec.public, body_of(note1))
            assert verify_witness(book, f"spec.test/w={book.dir / 'spec.pub'}").exit_code == 0

            grow(book, "S1", "S2")
            note2 = sign(book)
            size2 = notes.parse_note(note2).checkpoint.size
            [outcome] = witnessing.push_now(note2)
            assert outcome.ok and spec.requests[-1][0] == size1 and spec.requests[-1][1] > 0
            assert verify_witness(book, f"spec.test/w={book.dir / 'spec.pub'}").exit_code == 0

            # a log that restarted and lost track (`old 0`) learns the size from the 409 and resends
            grow(book, "S3")
            note3 = sign(book)
            size3 = notes.parse_note(note3).checkpoint.size
            with Store(book.db) as store:
                fresh = WitnessPusher(config, StoreProofs(store))
                assert last_cosigned_size(store, config) == size2
                spec.requests.clear()
                spec.extra_lines = f"\u2014 someone.else/k {base64.b64encode(bytes(76)).decode()}\n"
                lines = fresh.push(note3)
                assert [r[0] for r in spec.requests] == [0, size2] and spec.requests[1][2] == size3
                assert lines.count("\n") == 1 and "someone.else" not in lines
                check_cosignature(lines, "spec.test/w", spec.public, body_of(note3))
                assert fresh.last_size == size3
                # a witness that has seen more than this checkpoint: the push is refused, no resend loop
                spec.state[ORIGIN] = (size3 + 5, bytes(32))
                with pytest.raises(WitnessRefused, match="beyond"):
                    WitnessPusher(config, StoreProofs(store)).push(note3)
                # a witness that holds another root at our size: 422, reported
                spec.state[ORIGIN] = (size2, bytes(32))
                with pytest.raises(WitnessRefused) as e:
                    WitnessPusher(config, StoreProofs(store), last_size=size2).push(note3)
                assert e.value.status == 422
                fresh.close()
        finally:
            witnessing.close()


def test_pusher_refuses_what_is_not_the_witness_s_cosignature(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    note = sign(book)
    with SpecWitness("spec.test/w", {ORIGIN: operator_public(book)}) as spec, Store(book.db) as store:
        other = keys.generate()
        # the witness is configured under another key than the one it signs with
        with pytest.raises(ServiceUnavailable, match="no cosignature by its key"):
            WitnessPusher(WitnessConfig("spec.test/w", other.public, spec.url), StoreProofs(store)).push(note)
        # a witness that is not there
        with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:9"):
            WitnessPusher(WitnessConfig("spec.test/w", spec.public, "http://127.0.0.1:9"),
                          StoreProofs(store), timeout=2).push(note)
        # a witness that does not know the log: 404, reported with the witness's words
        spec.logs.clear()
        with pytest.raises(WitnessRefused) as e:
            WitnessPusher(WitnessConfig("spec.test/w", spec.public, spec.url), StoreProofs(store)).push(note)
        assert e.value.status == 404 and "unknown log" in e.value.detail


# --- the log and custody's own witness, against each other ---------------------------------------------


def test_log_pushes_to_custody_witness(ledger: Ledger, tmp_path: Path) -> None:
    book = ledger
    wkey, wpub = witness_key(book, "w1")
    witness = Witness(W1, wkey, {ORIGIN: operator_public(book)}, tmp_path / "w1.state")
    with serving(witness_app(witness)) as url:
        witnessing = Witnessing(book.db, [WitnessConfig(W1, wkey.public, url)])
        witnessing.start()
        try:
            sizes = []
            for serial in ("A1", "A2", "A3"):
                grow(book, serial)
                note = sign(book)
                sizes.append(notes.parse_note(note).checkpoint.size)
                [outcome] = witnessing.push_now(note)
                assert outcome.ok, outcome
                assert witness.latest(ORIGIN).size == sizes[-1]  # type: ignore[union-attr]
            result = verify_witness(book, f"{W1}={wpub}")
            assert result.exit_code == 0, result.stdout
            assert "cosignature" in json.loads(result.stdout)["checks"]
            # the background thread pushes what `on_checkpoint` hands it
            grow(book, "A4")
            note = sign(book)
            witnessing.on_checkpoint(0, note)
            for _ in range(200):
                if witness.latest(ORIGIN).size == notes.parse_note(note).checkpoint.size:  # type: ignore[union-attr]
                    break
                threading.Event().wait(0.05)
            assert witness.latest(ORIGIN).size == notes.parse_note(note).checkpoint.size  # type: ignore[union-attr]
            # an older checkpoint pushed again is a rollback for the witness: refused, nothing stored
            with Store(book.db) as store:
                stale = WitnessPusher(WitnessConfig(W1, wkey.public, url), StoreProofs(store), last_size=sizes[0])
                first = next(n for _v, s, n in store.checkpoints() if s == sizes[0])
                with pytest.raises(WitnessRefused, match="beyond"):
                    stale.push(first)
                stale.close()
        finally:
            witnessing.close()
    state = read_state(tmp_path / "w1.state", W1, wkey.public)
    assert state[ORIGIN].checkpoint.size == notes.parse_note(note).checkpoint.size


# --- POST /v1/cosignatures ---------------------------------------------------------------------------


def test_accept_cosignatures(ledger: Ledger) -> None:
    book = ledger
    k1, p1 = witness_key(book, "w1")
    k2, p2 = witness_key(book, "w2")
    k3, _ = witness_key(book, "w3")
    configured = [WitnessConfig(W1, k1.public), WitnessConfig(W2, k2.public)]
    note = sign(book)
    by1 = notes.add_cosignature(note, W1, k1.public, k1.sign, 1_800_000_000)
    with Store(book.db) as store:
        accepted = accept_cosignatures(store, by1, configured)
        assert (accepted.stored, accepted.written) == (1, True)
        assert served_note(store) == by1
        again = accept_cosignatures(store, by1.encode(), configured)
        assert (again.stored, again.written) == (1, False)
        # an older cosignature by the same witness does not replace the newer one
        older = notes.add_cosignature(note, W1, k1.public, k1.sign, 1_700_000_000)
        assert not accept_cosignatures(store, older, configured).written
        by2 = notes.add_cosignature(note, W2, k2.public, k2.sign, 1_800_000_001)
        both = accept_cosignatures(store, by2, configured)
        assert both.written and served_note(store) == both.note
        assert notes.verify_cosignature(both.note, W1, k1.public) == 1_800_000_000
        assert notes.verify_cosignature(both.note, W2, k2.public) == 1_800_000_001
        assert last_cosigned_size(store, configured[0]) == notes.parse_note(note).checkpoint.size
        refused = {
            "an unconfigured witness": notes.add_cosignature(note, "w.test/w3", k3.public, k3.sign, 1),
            "a configured name, another key": notes.add_cosignature(note, W1, k3.public, k3.sign, 1),
            "no cosignature": note,
            "garbage": "not a note\n",
            "binary": b"\xff\xfe\n",
            "a bad signature": _flip_last_signature(by1),
            "another origin": _foreign(book, k1),
            "a checkpoint the log never signed": _unsigned_size(book, note, k1),
        }
        for what, text in refused.items():
            with pytest.raises(CosignatureMissing):
                accept_cosignatures(store, text, configured)
                pytest.fail(what)
        assert served_note(store) == both.note
    result = verify_witness(book, f"{W1}={p1}", f"{W2}={p2}")
    assert result.exit_code == 0, result.stdout
    # the bundle carries the cosigned note (the latest version per size), and verifies with it
    bundle = book.dir / "b.bundle"
    book.cli("export", str(bundle), ok=True)
    result = book.cli("verify", str(bundle), "--witness", f"{W1}={p1}", "--witness", f"{W2}={p2}")
    assert result.exit_code == 0, result.stderr


def _flip_last_signature(note: str) -> str:
    head, _, last = note[:-1].rpartition("\n")
    name, _, encoded = last.partition(" ")[2].partition(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    return f"{head}\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"


def _foreign(book: Ledger, k1: keys.PrivateKey) -> str:
    other = keys.generate()
    cp = notes.Checkpoint("custody.test/other", 1, merkle.leaf_hash(b"x"))
    text = notes.sign_checkpoint(cp, cp.origin, other.public, other.sign)
    return notes.add_cosignature(text, W1, k1.public, k1.sign, 5)


def _unsigned_size(book: Ledger, note: str, k1: keys.PrivateKey) -> str:
    operator = keys.load_private(Path(book.key("operator")), lambda: None)
    cp = notes.parse_note(note).checkpoint
    forged = notes.Checkpoint(cp.origin, cp.size, bytes(32))
    text = notes.sign_checkpoint(forged, cp.origin, operator.public, operator.sign)
    return notes.add_cosignature(text, W1, k1.public, k1.sign, 5)


def test_cosignatures_route(sqlite_ledger: Ledger) -> None:
    book = sqlite_ledger
    k1, _ = witness_key(book, "w1")
    note = sign(book)
    witnessing = Witnessing(book.db, [WitnessConfig(W1, k1.public)])
    app = Starlette(routes=[cosignatures_route(witnessing)])
    try:
        with serving(app) as url, httpx.Client(base_url=url) as client:
            r = client.post("/v1/cosignatures", content=notes.add_cosignature(note, W1, k1.public, k1.sign, 7))
            assert (r.status_code, r.json()) == (200, {"stored": 1})
            r = client.post("/v1/cosignatures", content=note)
            assert r.status_code == 422 and r.json()["error"] == "cosignature" and r.json()["detail"]
            r = client.post("/v1/cosignatures", content=b"x" * 70_000)
            assert r.status_code == 413 and r.json()["error"] == "usage"
            assert client.get("/v1/cosignatures").status_code == 405
        assert W1 in witnessing.decorate(note)
        assert witnessing.decorate("not a note") == "not a note"
    finally:
        witnessing.close()


# --- custody cosign --ledger URL -------------------------------------------------------------------------


class LogServer:
    """The routes `cosign --ledger` reads, made of the library's pieces (a stand-in for `custody serve`)."""

    def __init__(self, book: Ledger, witnesses: list[WitnessConfig]) -> None:
        self.store = Store(book.db)
        self.lock = threading.Lock()
        self.witnessing = Witnessing(book.db, witnesses)
        self.override: str | None = None  # serve this note instead of the latest

    def checkpoint(self, request: Request) -> Response:
        with self.lock:
            note = self.override or served_note(self.store)
        if note is None:
            return JSONResponse({"error": "usage", "detail": "empty"}, status_code=404)
        return Response(self.witnessing.decorate(note), media_type="text/plain; charset=utf-8")

    def genesis(self, request: Request) -> Response:
        with self.lock:
            wire = next(iter(self.store.log(0, 1))).wire
        return Response(len(wire).to_bytes(2, "big") + wire, media_type="application/octet-stream")

    def consistency(self, request: Request) -> Response:
        m, n = int(request.query_params["from"]), int(request.query_params["to"])
        with self.lock:
            proof = StoreProofs(self.store)(m, n)
        return JSONResponse({"proof": [h.hex() for h in proof]})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/checkpoint", self.checkpoint), Route("/tile/entries/000.p/1", self.genesis),
                                 Route("/v1/proofs/consistency", self.consistency),
                                 cosignatures_route(self.witnessing)])

    def close(self) -> None:
        self.witnessing.close()
        self.store.close()


def cosign(book: Ledger, url: str, key: str, state: Path | None, name: str = W1) -> Any:
    args = ["cosign", "--ledger", url, "--name", name, "--key", key]
    if state is not None:
        args += ["--state", str(state)]
    return book.runner.invoke(cli, args)


def test_cosign_ledger_url(sqlite_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = sqlite_ledger
    k1, p1 = witness_key(book, "w1")
    k2, _ = witness_key(book, "w2")
    first = sign(book)
    server = LogServer(book, [WitnessConfig(W1, k1.public)])
    monkeypatch.chdir(tmp_path)
    try:
        with serving(server.app()) as url:
            result = cosign(book, url, book.key("w1"), None)  # trust on first use; state in the working dir
            assert result.exit_code == 0, result.stderr
            assert "first for this witness" in result.stderr and "stored 1" in result.stderr
            check_cosignature(result.stdout.splitlines()[-1] + "\n", W1, k1.public, body_of(first))
            state = tmp_path / "witness-witness.test_w1.state"
            assert state.is_file()
            served = httpx.get(url + "/checkpoint").text
            assert served.startswith(body_of(first)) and f"\u2014 {W1} " in served
            assert verify_witness(book, f"{W1}={p1}").exit_code == 0

            grow(book, "C1", "C2")
            second = sign(book)
            result = cosign(book, url, book.key("w1"), None)
            assert result.exit_code == 0, result.stderr
            assert f"extends size {notes.parse_note(first).checkpoint.size}" in result.stderr
            check_cosignature(result.stdout.splitlines()[-1] + "\n", W1, k1.public, body_of(second))
            assert verify_witness(book, f"{W1}={p1}").exit_code == 0
            saved = state.read_bytes()

            # a rollback: the service serves the older checkpoint again
            server.override = first
            result = cosign(book, url, book.key("w1"), None)
            assert result.exit_code == 1 and "rollback" in result.stderr and result.stdout == ""
            server.override = None
            assert state.read_bytes() == saved

            # a fork: the witness's state holds another root at the served size, or a smaller one
            size = notes.parse_note(second).checkpoint.size
            for fork_size in (size, size - 1):
                fake = notes.Checkpoint(ORIGIN, fork_size, bytes(32))
                forked = tmp_path / f"fork{fork_size}.state"
                forked.write_text(notes.add_cosignature(fake.body() + "\n" + _operator_line(second), W1,
                                                        k1.public, k1.sign, 9))
                before = forked.read_bytes()
                result = cosign(book, url, book.key("w1"), forked)
                assert result.exit_code == 1 and "fork" in result.stderr, result.stderr
                assert forked.read_bytes() == before

            # a witness the service does not know: 422 from the service, exit 1 (the state moved on: it did cosign)
            result = cosign(book, url, book.key("w2"), tmp_path / "w2.state", name=W2)
            assert result.exit_code == 1 and "cosignature" in result.stderr
            assert notes.verify_cosignature((tmp_path / "w2.state").read_text(), W2, k2.public) > 0

            # a checkpoint the operator did not sign, and one it signed with a root that is not the log's
            rogue = keys.load_private(Path(book.key("rogue")), lambda: None)
            server.override = notes.sign_checkpoint(notes.parse_note(second).checkpoint, ORIGIN, rogue.public,
                                                    rogue.sign)
            result = cosign(book, url, book.key("w1"), tmp_path / "x.state")
            assert result.exit_code == 1 and "checkpoint_signature" in result.stderr, result.stderr
            server.override = _unsigned_size(book, second, k1).split("\u2014 " + W1)[0]
            result = cosign(book, url, book.key("w1"), tmp_path / "x.state")
            assert result.exit_code == 1 and "not leaf 0" in result.stderr, result.stderr
            assert not (tmp_path / "x.state").exists()
            server.override = None
        result = cosign(book, url, book.key("w1"), None)  # the server is gone
        assert result.exit_code == 2 and url in result.stderr and result.stderr.count("\n") == 1
        result = book.runner.invoke(cli, ["cosign", "--ledger", url, "x.cp", "--name", W1, "--key", book.key("w1")])
        assert result.exit_code == 2 and "not both" in result.stderr
        result = book.runner.invoke(cli, ["cosign", "--name", W1, "--key", book.key("w1")])
        assert result.exit_code == 2 and "--ledger" in result.stderr
    finally:
        server.close()
    assert key_id(W1, 4, k1.public) == notes.cosignature_key_hash(W1, k1.public)


def _operator_line(note: str) -> str:
    return note.split("\n\n", 1)[1].splitlines()[0] + "\n"


def test_accept_with_an_index_reads_only_what_is_new(sqlite_ledger: Ledger) -> None:
    """The service's index of stored checkpoints: new versions only, old sizes by a full read."""
    book = sqlite_ledger
    k1, p1 = witness_key(book, "w1")
    configured = [WitnessConfig(W1, k1.public)]
    signed = []
    for serial in ("I1", "I2", "I3"):
        grow(book, serial)
        signed.append(sign(book))
    index = StoredCheckpoints(keep=2)
    with Store(book.db) as store:
        index.sync(store)
        sizes = [notes.parse_note(n).checkpoint.size for n in signed]
        assert index.of_size(sizes[0]) is None and index.of_size(sizes[2]) == [(index.version, sizes[2], signed[2])]
        assert index.of_size(sizes[2] + 1) == []
        for note in (signed[2], signed[0]):  # a recent size from the index, an old one by a full read
            accepted = accept_cosignatures(store, notes.add_cosignature(note, W1, k1.public, k1.sign, 3), configured,
                                           index=index)
            assert accepted.written and accepted.stored == 1
        assert index.version == max(v for v, _, _ in store.checkpoints()) - 1  # synced before its own write
        index.sync(store)
        newest = index.newest()
        assert newest is not None and newest[0] == sizes[2] and f"\u2014 {W1} " in newest[1]
        with pytest.raises(CosignatureMissing, match="not one this log signed"):
            forged = _unsigned_size(book, signed[1], k1)
            accept_cosignatures(store, forged, configured, index=index)
    assert verify_witness(book, f"{W1}={p1}").exit_code == 0
