"""Submitting over HTTP: the CLI's `--ledger URL`, and the statements route's answers."""

from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import keys, merkle
from ledger.append import now_us, sign_statement
from ledger.checkpoint import parse_note, verify_operator
from ledger.statement import ZERO_HASH
from ledger.store import Store, blob, unblob
from tests.conftest import Ledger as Book
from tests.service.conftest import Served

STATEMENT = {"Content-Type": "application/vnd.custody.statement"}
SIX = [
    ("fabricated", "tsmc", ["--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1"]),
    ("shipped-to-us", "kerry", ["--port-of-entry", "DFW", "--waybill", "W1"]),
    ("inspected", "uslab", ["--result", "pass", "--site", "Lab", "--country", "US", "--report", "R1"]),
    ("duty-paid", "cbp", ["--entry", "E-1", "--entered-value", "40000.00", "--duty", "10000.00"]),
    ("re-exported", "nvidia", ["--consignee", "alibaba", "--license", "LIC-1", "--destination", "CN"]),
    ("received", "alibaba", ["--site", "Hangzhou"]),
]


def remote(url: str, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, [*args, "--ledger", url], env={"CUSTODY_DB": "", **(env or {})})


def check_receipt(receipt: str, wire: bytes, operator: bytes, origin: str) -> int:
    """A c2sp.org/tlog-proof@v1 receipt, checked from the spec: header, index, proof lines, blank, note."""
    head, _, note = receipt.partition("\n\n")
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert (lines[1].startswith("index ") and not lines[1].startswith("index 0")) or lines[1] == "index 0"
    index = int(lines[1].removeprefix("index "))
    proof = [base64.b64decode(line, validate=True) for line in lines[2:]]
    checkpoint = verify_operator(parse_note(note), origin, operator)
    leaf = hashlib.sha256(b"\x00" + wire).digest()
    merkle.verify_inclusion(index, checkpoint.size, leaf, proof, checkpoint.root)
    return index


def test_a_participant_with_only_its_key_and_a_url_records_all_six_steps(served: Served, book: Book,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for step, signer, options in SIX:
        mine = elsewhere / signer
        shutil.copy(book.key(signer), mine)
        mine.chmod(0o600)
        result = remote(served.url, "record", step, "--key", str(mine), "--serial", "U1", "--serial", "U2",
                        *options)
        assert result.exit_code == 0, (step, result.stdout, result.stderr)
        assert f"recorded {step} for 2 units at index" in result.stdout
    assert list(elsewhere.iterdir()) == [elsewhere / s for _, s, _ in SIX] or len(list(elsewhere.iterdir())) == 6
    history = remote(served.url, "history", "U1", "--json")
    assert history.exit_code == 0, history.stderr
    assert [s["kind"] for s in __import__("json").loads(history.stdout)["steps"]] == [
        "fabricated", "shipped_to_us", "inspected", "duty_paid", "re_exported", "received"]
    compliance = remote(served.url, "report", "compliance", "--json")
    assert compliance.exit_code == 0 and '"findings": []' in compliance.stdout
    verified = CliRunner().invoke(app, ["--db", book.db, "verify"])
    assert verified.exit_code == 0, verified.stdout


def test_reads_over_http_match_the_database(served: Served, book: Book, tmp_path: Path) -> None:
    book.full_flow(["R1", "R2"])
    for name in ("compliance", "duty", "customers", "units"):
        for form in ("--json", "--csv"):
            over_db = CliRunner().invoke(app, ["--db", book.db, "report", name, form])
            over_http = remote(served.url, "report", name, form)
            assert over_http.exit_code == 0, over_http.stderr
            strip = (lambda t: [line for line in t.splitlines() if "as_of" not in line]) if form == "--json" \
                else (lambda t: t.splitlines())
            assert strip(over_http.stdout) == strip(over_db.stdout), (name, form)
    assert remote(served.url, "history", "R1").stdout == CliRunner().invoke(
        app, ["--db", book.db, "history", "R1"]).stdout
    proof = tmp_path / "r1.proof"
    import time
    time.sleep(0.3)
    made = remote(served.url, "prove", "R1", "--out", str(proof))
    assert made.exit_code == 0, made.stderr
    checked = CliRunner().invoke(app, ["verify-proof", str(proof), "--trust", book.pub("authority")])
    assert checked.exit_code == 0, checked.stdout + checked.stderr
    verified = remote(served.url, "verify", "--json", "--trust", book.pub("authority"))
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert '"intact": true' in verified.stdout
    note = remote(served.url, "checkpoint")
    assert note.exit_code == 0 and note.stdout.startswith("custody.test/h200-cn\n")


def _key(book: Book, name: str) -> keys.PrivateKey:
    return keys.load_private(Path(book.key(name)), lambda: None)


def _fab(book: Book, serials: list[str], *, origin: str = "custody.test/h200-cn", at: int | None = None):  # type: ignore[no-untyped-def]
    return sign_statement(_key(book, "tsmc"), origin=origin, kind="fabricated", at=at or now_us(),
                          units=[(s, ZERO_HASH) for s in serials],
                          data={"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})


def test_the_statements_route_answers_as_design_says(served: Served, book: Book) -> None:
    origin = "custody.test/h200-cn"
    operator = keys.load_public(Path(book.pub("operator")))
    first = _fab(book, ["S1", "S2"])
    with served.client() as http:
        post = lambda wire, **kw: http.post("/v1/statements", content=wire, headers=STATEMENT, **kw)  # noqa: E731
        r = post(first.wire)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert set(answer) == {"index", "hash", "checkpoint", "inclusion", "receipt"}
        assert answer["index"] == 10 and answer["hash"] == first.hash.hex()
        assert check_receipt(answer["receipt"], first.wire, operator, origin) == 10
        assert answer["receipt"].endswith(answer["checkpoint"])
        # resubmitting is idempotent: the same index, nothing logged twice
        again = post(first.wire)
        assert again.status_code == 200 and again.json()["index"] == 10
        # a step signed on a stale head: 409 with every serial's head
        ship = lambda prev, at=None: sign_statement(  # noqa: E731
            _key(book, "kerry"), origin=origin, kind="shipped_to_us", at=at or now_us(),
            units=[("S1", prev), ("S2", first.hash)], data={"port_of_entry": "DFW", "waybill": "W"})
        moved = ship(first.hash)
        assert post(moved.wire).status_code == 200
        stale = ship(first.hash, now_us() + 1)
        r = post(stale.wire)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "chain" and r.json()["heads"] == {"S1": moved.hash.hex(), "S2": moved.hash.hex()}
        # a step on a unit with no chain, or a second fabricated: 422 chain
        r = post(sign_statement(_key(book, "kerry"), origin=origin, kind="shipped_to_us", at=now_us(),
                                units=[("NEW", first.hash)], data={"port_of_entry": "DFW", "waybill": "W"}).wire)
        assert (r.status_code, r.json()["error"]) == (422, "chain"), r.text
        assert r.json()["heads"] == {"NEW": None}
        r = post(_fab(book, ["S1"]).wire)
        assert (r.status_code, r.json()["error"]) == (422, "chain"), r.text
        # another origin, another signer's role, a broken signature: 422 with the check
        assert post(_fab(book, ["O1"], origin="custody.test/other").wire).json()["error"] == "origin"
        wrong_role = sign_statement(_key(book, "kerry"), origin=origin, kind="fabricated", at=now_us(),
                                    units=[("O2", ZERO_HASH)], data={"model": "M", "site": "F", "lot": "L"})
        assert post(wrong_role.wire).json()["error"] == "role"
        forged = bytearray(_fab(book, ["O3"]).wire)
        forged[-1] ^= 1
        r = post(bytes(forged))
        assert (r.status_code, r.json()["error"]) == (422, "signature")
        # findings: refused by default with the findings, logged with findings=allow
        bad_model = sign_statement(_key(book, "tsmc"), origin=origin, kind="fabricated", at=now_us(),
                                   units=[("P1", ZERO_HASH)], data={"model": "B200", "site": "F", "lot": "L"})
        r = post(bad_model.wire)
        assert (r.status_code, r.json()["error"]) == (422, "compliance")
        assert r.json()["findings"][0]["code"] == "PROHIBITED_MODEL"
        assert r.json()["findings"][0]["serial"] == "P1"
        assert post(bad_model.wire, params={"findings": "allow"}).status_code == 200
        # encoding, size, query and type
        assert post(b"\x92\xc4\x01x").status_code == 400
        assert post(b"\x00" * 70_000).status_code == 413
        assert post(first.wire, params={"findings": "maybe"}).json()["error"] == "usage"
        r = http.post("/v1/statements", content=first.wire, headers={"Content-Type": "application/json"})
        assert (r.status_code, r.json()["error"]) == (400, "usage")
        heads = http.post("/v1/heads", json={"serials": ["S1", "NOPE"]}).json()
        assert heads["heads"] == {"S1": moved.hash.hex(), "NOPE": None}
        assert heads["at"]["NOPE"] is None and heads["at"]["S1"].endswith("Z")
        log_size = heads["log_size"]
    # nothing refused was logged
    assert log_size == 13
    assert CliRunner().invoke(app, ["--db", book.db, "verify"]).exit_code == 3  # intact; the allowed finding


def test_the_client_retries_a_lost_race_and_fails_as_design_says(served: Served, book: Book,
                                                                tmp_path: Path) -> None:
    book.record("fabricated", "tsmc", ["C1"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L", ok=True)
    from ledger.service import client as remote_client

    with remote_client.connect(served.url) as service:
        calls = {"n": 0}
        real = service.heads

        def stale(serials):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            heads, ats = real(serials)
            return ({s: ZERO_HASH if calls["n"] == 1 else h for s, h in heads.items()}, ats)

        service.heads = stale  # type: ignore[method-assign]
        done = remote_client.record(service, _key(book, "kerry"), "shipped_to_us",
                                    {"port_of_entry": "DFW", "waybill": "W"}, ["C1"])
        assert done.attempts == 2 and calls["n"] == 2
    both = remote(served.url, "record", "received", "--key", book.key("alibaba"), "--serial", "C1", "--site", "X",
                  "--db", book.db)
    assert both.exit_code == 2 and "not both" in both.stderr
    refused = remote(served.url, "record", "received", "--key", book.key("alibaba"), "--serial", "C1",
                     "--site", "X")
    assert refused.exit_code == 1 and "refused" in refused.stderr and "SKIPPED" in refused.stderr
    skipped = remote(served.url, "record", "inspected", "--key", book.key("uslab"), "--serial", "C1",
                     "--serial", "C2", "--result", "pass", "--site", "L", "--country", "US", "--report", "R",
                     "--allow-violation")
    assert skipped.exit_code == 1 and "chain" in skipped.stderr  # C2 has no chain: 422
    unreachable = remote("http://127.0.0.1:9", "record", "received", "--key", book.key("alibaba"), "--serial",
                         "C1", "--site", "X")
    assert unreachable.exit_code == 2 and "http://127.0.0.1:9" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    env = remote(served.url, "history", "C1", env={"CUSTODY_LEDGER": served.url})
    assert env.exit_code == 0
    by_env = CliRunner().invoke(app, ["history", "C1"], env={"CUSTODY_LEDGER": served.url, "CUSTODY_DB": ""})
    assert by_env.exit_code == 0 and "fabricated" in by_env.stdout


def test_a_ledger_opened_through_an_empty_service(tmp_path: Path) -> None:
    from tests.conftest import make_keys

    make_keys(tmp_path / "keys", ["authority", "operator", "tsmc", "rogue"])
    k = lambda name: str(tmp_path / "keys" / name)  # noqa: E731
    with Served(str(tmp_path / "custody.db"), Path(k("operator"))) as server:
        with server.client() as http:
            assert http.get("/checkpoint").status_code == 404
        wrong = remote(server.url, "init", "--origin", "custody.test/new", "--authority", k("authority"),
                       "--operator", k("rogue.pub"))
        assert wrong.exit_code == 1 and "genesis_trust" in wrong.stderr
        opened = remote(server.url, "init", "--origin", "custody.test/new", "--authority", k("authority"),
                        "--operator", k("operator.pub"))
        assert opened.exit_code == 0, opened.stderr
        again = remote(server.url, "init", "--origin", "custody.test/new", "--authority", k("authority"),
                       "--operator", k("operator.pub"))
        assert again.exit_code == 1 and "already holds a ledger" in again.stderr
        added = remote(server.url, "participant", "add", "tsmc", "--role", "fab", "--country", "TW", "--pubkey",
                       k("tsmc.pub"), "--key", k("authority"))
        assert added.exit_code == 0, added.stderr
        clean = remote(server.url, "record", "fabricated", "--key", k("tsmc"), "--serial", "N1", "--serial", "N2",
                       "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L")
        assert clean.exit_code == 0, clean.stderr
        skipped = remote(server.url, "record", "fabricated", "--key", k("tsmc"), "--serial", "N3",
                         "--model", "B200", "--site", "F", "--lot", "L", "--skip-violating")
        assert skipped.exit_code == 1 and "PROHIBITED_MODEL" in skipped.stderr  # no clean unit left
        mixed = remote(server.url, "record", "shipped-to-us", "--key", k("tsmc"), "--serial", "N1",
                       "--port-of-entry", "DFW", "--waybill", "W")
        assert mixed.exit_code == 1 and "role" in mixed.stderr
        revoked = remote(server.url, "participant", "revoke-key", "0" * 64, "--key", k("authority"))
        assert revoked.exit_code == 2 and "public key file" in revoked.stderr
        verified = remote(server.url, "verify", "--trust", k("authority.pub"))
        assert verified.exit_code == 0, verified.stdout + verified.stderr


def test_skip_violating_over_http_records_the_clean_units(served: Served, book: Book) -> None:
    book.record("fabricated", "tsmc", ["K1", "K2"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                ok=True)
    book.record("shipped-to-us", "kerry", ["K1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    inspect = ["record", "inspected", "--key", book.key("uslab"), "--serial", "K1", "--serial", "K2", "--result",
               "pass", "--site", "L", "--country", "US", "--report", "R"]
    refused = remote(served.url, *inspect)
    assert refused.exit_code == 1 and "NOT_ROUTED_VIA_US" in refused.stderr and "--skip-violating" in refused.stderr
    done = remote(served.url, *inspect, "--skip-violating")
    assert done.exit_code == 0, done.stderr
    assert "for 1 unit" in done.stdout and "skipped 1 violating unit(s): K2" in done.stdout
    allowed = remote(served.url, *inspect[:4], "--serial", "K2", *inspect[8:], "--allow-violation")
    assert allowed.exit_code == 0, allowed.stderr


def test_the_writers_bounds_apply_to_submissions(served: Served, book: Book) -> None:
    """What the CLI writer refuses beyond the hard rules (money beyond `limits`, the operator's key
    registered to a participant) is refused over HTTP too: 422 with the check, never 503, nothing logged."""
    from ledger import limits

    origin = "custody.test/h200-cn"
    fab = _fab(book, ["M1"])
    cbp = _key(book, "cbp")

    head = [fab.hash]

    def duty(entry: str, entered: int, paid: int, at: int) -> bytes:
        signed = sign_statement(cbp, origin=origin, kind="duty_paid", at=at, units=[("M1", head[0])],
                                data={"entry": entry, "entered_value": entered, "duty": paid})
        head.append(signed.hash)
        return signed.wire

    operator = keys.load_public(Path(book.pub("operator")))
    rogue = sign_statement(_key(book, "authority"), origin=origin, kind="participant_registered", at=now_us(),
                           units=(), data={"id": "op", "name": "Operator", "country": "US",
                                           "roles": ["fab"], "key": operator})
    with served.client() as http:
        post = lambda wire: http.post("/v1/statements", content=wire, headers=STATEMENT,  # noqa: E731
                                      params={"findings": "allow"})
        assert post(fab.wire).status_code == 200
        size = http.post("/v1/heads", json={"serials": []}).json()["log_size"]
        r = post(duty("E-BIG", limits.MAX_STATEMENT_CENTS + 1, 1, now_us()))
        del head[1:]
        assert (r.status_code, r.json()["error"]) == (422, "encoding"), r.text
        assert "entered_value" in r.json()["detail"]
        r = post(duty("E-BIG", 1, limits.MAX_STATEMENT_CENTS + 1, now_us()))
        del head[1:]
        assert (r.status_code, r.json()["error"]) == (422, "encoding"), r.text
        r = post(rogue.wire)
        assert (r.status_code, r.json()["error"]) == (422, "signer"), r.text
        assert "operator" in r.json()["detail"]
        assert http.post("/v1/heads", json={"serials": []}).json()["log_size"] == size
        # an entry's running total beyond the bound, over several statements within it each
        at = now_us()
        for i in range(9):
            r = post(duty("E-SUM", limits.MAX_STATEMENT_CENTS, 0, at + i))
            assert r.status_code == 200, r.text
            head[0] = head.pop()
        r = post(duty("E-SUM", limits.MAX_STATEMENT_CENTS, 0, at + 9))
        assert (r.status_code, r.json()["error"]) == (422, "encoding"), r.text
        assert "E-SUM" in r.json()["detail"]
        assert http.post("/v1/heads", json={"serials": []}).json()["log_size"] == size + 9


def test_heads_come_from_the_log_and_edited_views_are_not_signed_on(served: Served, book: Book) -> None:
    """A unit's row in the views edited (a PostgreSQL participant holds UPDATE on them): `/v1/heads` still
    answers the log's head, and a statement whose unit's row disagrees with the log is refused with 503
    (the views need `replay --rebuild`), nothing logged."""
    origin = "custody.test/h200-cn"
    first = _fab(book, ["S1"])
    with served.client() as http:
        assert http.post("/v1/statements", content=first.wire, headers=STATEMENT).status_code == 200
        with Store(book.db) as store:
            p = store.param
            row = unblob(store.query(f"SELECT row FROM custody_units WHERE serial = {p}", ["S1"])[0][0])
            row[1] = bytes(32)  # the head
            with store.transaction() as cursor:
                cursor.execute(f"UPDATE custody_units SET row = {p} WHERE serial = {p}", [blob(row), "S1"])
            size = store.size()
        heads = http.post("/v1/heads", json={"serials": ["S1"]}).json()
        assert heads["heads"] == {"S1": first.hash.hex()} and heads["log_size"] == size
        ship = sign_statement(_key(book, "kerry"), origin=origin, kind="shipped_to_us", at=now_us(),
                              units=[("S1", first.hash)], data={"port_of_entry": "DFW", "waybill": "W"})
        r = http.post("/v1/statements", content=ship.wire, headers=STATEMENT)
        assert (r.status_code, r.json()["error"]) == (503, "unavailable"), r.text
        assert "unit S1" in r.json()["detail"] and "replay --rebuild" in r.json()["detail"]
        assert http.post("/v1/heads", json={"serials": []}).json()["log_size"] == size
