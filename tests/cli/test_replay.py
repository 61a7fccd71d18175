"""Replay: any prefix of the log folds to exactly what the views held then; what-if; rebuild; bad input."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import append, keys, parallel, views
from ledger import replay as replaying
from ledger.errors import BadInput, Conflict, EncodingInvalid, LedgerError, SignatureInvalid
from ledger.policy import DEFAULT_POLICY_TEXT, parse_policy
from ledger.state import State
from ledger.store import Store
from ledger.store.codec import LOG_TOPICS, MsgpackTranscoder
from tests.cli.test_compliance import (
    build_ledger,
)
from tests.conftest import ORIGIN, PARTICIPANTS, Ledger

BASE_AT = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000_000
STRICT = DEFAULT_POLICY_TEXT.replace('"H200-SXM5-141GB", ', "").replace("duty_rate_bp = 2500",
                                                                          "duty_rate_bp = 3000")
SCRATCH = "/dev/shm" if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK) else None
LENIENT = DEFAULT_POLICY_TEXT.replace('"H200-NVL-141GB"]', '"H200-NVL-141GB", "B200-SXM6-192GB"]')
# the default as it was before issue 17's optional keys: none of their rules checked
PREVIOUS = "".join(line for line in DEFAULT_POLICY_TEXT.splitlines(keepends=True)
                   if line.split("=")[0].strip() not in ("consignee_checks", "hts_lines", "volume_ratio_bp",
                                                          "volume_destinations", "attestation_days"))


def snapshot(state: State) -> dict[str, Any]:
    """What a replay must reproduce: units, customers, duty, findings, authority, signing history."""
    return {"units": {k: v.to_row() for k, v in state.units.items()},
            "customers": {k: v.to_row() for k, v in state.customers.items()},
            "duty": {k: v.to_row() for k, v in state.duty.items()},
            "findings": sorted(f.to_row() for f in state.findings),
            "authority": state.authority_row(),
            "signed": {k: sorted(v) for k, v in state.signed.items()}}


# --- the property ---------------------------------------------------------------------------------------

SERIALS = ("P1", "P2", "P3", "P4")  # P1-P3 start fabricated; P4 only if an op makes it
STEP_VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "fabricated": [("tsmc", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"}),
                   ("tsmc", {"model": "B200-SXM6-192GB", "site": "F", "lot": "L"}),
                   ("smic", {"model": "H200-NVL-141GB", "site": "F", "lot": "L"})],
    "shipped_to_us": [("kerry", {"port_of_entry": "LAX", "waybill": "W"}),
                      ("dhl", {"port_of_entry": "SFO", "waybill": "W"})],
    "inspected": [("uslab", {"result": "pass", "site": "S", "country": "US", "report": "R"}),
                  ("uslab", {"result": "fail", "site": "S", "country": "US", "report": "R"}),
                  ("uslab", {"result": "pass", "site": "S", "country": "MX", "report": "R"})],
    "duty_paid": [("cbp", {"entry": "E1", "entered_value": 2_000_000, "duty": 500_000}),
                  ("cbp", {"entry": "E1", "entered_value": 2_000_000, "duty": 1}),
                  ("cbp", {"entry": "E2", "entered_value": 1, "duty": 1})],
    "re_exported": [("nvidia", {"consignee": "alibaba", "license": "L", "destination": "CN"}),
                    ("nvidia", {"consignee": "bytedance", "license": "L", "destination": "CN"}),
                    ("nvidia", {"consignee": "tencent", "license": "L", "destination": "CN"})],
    "received": [("alibaba", {"site": "H"}), ("bytedance", {"site": "U"})],
    "located": [("alibaba", {"site": "H", "country": "US", "method": "m"}),
                ("alibaba", {"site": "H", "country": "CN", "method": "m"}),
                ("bytedance", {"site": "U", "country": "US", "method": "m"})],
    "destroyed": [("uslab", {"method": "m", "site": "S", "certificate": "C"}),
                  ("alibaba", {"method": "m", "site": "H", "certificate": "C"})],
    "withdrawn": [("nvidia", {"reason": "r", "destination": "US"})],
}
SIGNERS = ("authority", "operator", *PARTICIPANTS, "smic", "dhl")

step_ops = st.tuples(st.just("step"), st.sampled_from(sorted(STEP_VARIANTS)),
                     st.lists(st.sampled_from(SERIALS), min_size=1, max_size=3, unique=True),
                     st.integers(0, 2))
admin_ops = st.one_of(
    st.tuples(st.just("approve"), st.sampled_from(["alibaba", "bytedance"]), st.integers(0, 2),
              st.booleans()),
    st.tuples(st.just("suspend"), st.sampled_from(["alibaba", "bytedance"]), st.just(0), st.just(False)),
    st.tuples(st.just("policy"), st.sampled_from([STRICT, LENIENT, DEFAULT_POLICY_TEXT, PREVIOUS]), st.just(0),
              st.just(False)),
    st.tuples(st.just("declare"), st.sampled_from(["H200-SXM5-141GB", "H200-NVL-141GB"]), st.integers(0, 4),
              st.booleans()),
    st.tuples(st.just("revoke"), st.just("dhl"), st.integers(0, 6), st.just(False)))


class Scenario:
    """A ledger on SQLite recorded through the library, snapshotting the views after every statement."""

    def __init__(self, directory: Path) -> None:
        self.store = Store(str(directory / "custody.db"), create=True)
        self.key = {name: keys.generate() for name in SIGNERS}
        self.at = BASE_AT
        self.snapshots: list[dict[str, Any]] = []
        self.ats: list[int] = []
        done = append.open_ledger(self.store, self.key["authority"], origin=ORIGIN, co_authorities=(),
                                  operator=self.key["operator"].public, policy_text=DEFAULT_POLICY_TEXT,
                                  at=self.at)
        self._snap(done)
        roles = {name: role for name, (_, role, _) in PARTICIPANTS.items()}
        roles.update(smic="fab", dhl="carrier")
        for name, role in roles.items():
            self.admin("participant_registered", {"id": name, "name": name, "country": "US", "roles": [role],
                                                  "key": self.key[name].public})
        self.admin("customer_approved", {"id": "alibaba", "cap": 2, "license": "L"})
        self.admin("customer_approved", {"id": "bytedance", "cap": 1, "license": "L"})
        self.run(("step", "fabricated", list(SERIALS[:3]), 0))

    def _snap(self, done: append.Recorded) -> None:
        assert done.index == len(self.snapshots)
        self.snapshots.append(snapshot(views.load_full(self.store)))
        self.ats.append(done.statement.at)

    def tick(self) -> int:
        self.at += MINUTE
        return self.at

    def admin(self, kind: str, data: dict[str, Any]) -> None:
        self._snap(append.record(self.store, self.key["authority"], kind, data, at=self.tick()))

    def run(self, op: tuple[Any, ...]) -> None:
        try:
            if op[0] == "step":
                _, kind, serials, variant = op
                choices = STEP_VARIANTS[kind]
                signer, data = choices[variant % len(choices)]
                self._snap(append.record(self.store, self.key[signer], kind, data, serials, at=self.tick(),
                                         mode="allow"))
            elif op[0] == "approve":
                data: dict[str, Any] = {"id": op[1], "cap": op[2], "license": "L"}
                if op[3]:
                    data["valid_until"] = self.at + 3 * MINUTE
                self.admin("customer_approved", data)
            elif op[0] == "suspend":
                self.admin("customer_suspended", {"id": op[1], "reason": ""})
            elif op[0] == "policy":
                self.admin("policy_issued", {"policy": op[1]})
            elif op[0] == "declare":  # a U.S. volume for the first half hour, or the first hour
                period = {"model": op[1], "from": BASE_AT, "until": BASE_AT + (60 if op[3] else 30) * MINUTE,
                          "us_units": op[2]}
                self._snap(append.record(self.store, self.key["nvidia"], "us_volume_reported", period,
                                         at=self.tick()))
            else:
                revoked = {"key": self.key["dhl"].public, "effective": self.at - op[2] * MINUTE, "reason": ""}
                self.admin("key_revoked", revoked)
        except LedgerError:
            pass  # a hard rule refused it (no chain, a revoked key…): nothing was written


@contextmanager
def played(ops: list[tuple[Any, ...]]) -> Iterator[Scenario]:
    """A fresh ledger (in tmpfs where there is one: the property tests are about the fold, not fsync) on
    which `ops` were run; closed afterwards."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as directory:
        scenario = Scenario(Path(directory))
        try:
            for op in ops:
                scenario.run(op)
            yield scenario
        finally:
            scenario.store.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(step_ops, step_ops, step_ops, admin_ops), min_size=4, max_size=24))
def test_replaying_any_prefix_equals_the_views_at_that_index(ops: list[tuple[Any, ...]]) -> None:
    with played(ops) as scenario:
        now = append.now_us()
        for index, expected in enumerate(scenario.snapshots):
            by_index = replaying.replay(scenario.store, now_us=now, upto=index)
            assert snapshot(by_index.state) == expected, index
            assert by_index.folded == index + 1 and by_index.last_index == index
            if index % 3 == 0:  # by time too: each `at` is later than the last, so it is a prefix
                by_time = replaying.replay(scenario.store, now_us=now, until=scenario.ats[index])
                assert snapshot(by_time.state) == expected, index
        assert snapshot(views.current(scenario.store, now)) == scenario.snapshots[-1]


# --- the command ----------------------------------------------------------------------------------------


def view_rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every view table, in a stable order."""
    store = Store(url, readonly=True)
    try:
        tables = ("custody_position", "custody_authority", "custody_units", "custody_customers",
                  "custody_duty", "custody_findings", "custody_signed")
        return {t: sorted((tuple(bytes(c) if isinstance(c, memoryview) else c for c in row)
                           for row in store.query(f"SELECT * FROM {t}")), key=repr) for t in tables}
    finally:
        store.close()


def stored_log(url: str) -> list[bytes]:
    store = Store(url, readonly=True)
    try:
        return [e.wire for e in store.log(0)] + [n.encode() for _, _, n in store.checkpoints()]
    finally:
        store.close()


def file_digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("custody.db*"))}


def scenario(ledger: Ledger) -> None:
    ledger.full_flow(["R1", "R2"])
    ledger.record("fabricated", "tsmc", ["R3"], "--model", "H200-NVL-141GB", "--site", "F", "--lot", "L",
                  ok=True)
    ledger.record("shipped-to-us", "kerry", ["R3"], "--port-of-entry", "LAX", "--waybill", "W", ok=True)
    ledger.record("re-exported", "nvidia", ["R3"], "--consignee", "bytedance", "--license", "LIC-2",
                  "--destination", "CN", "--allow-violation", ok=True)


def test_replay_summarises_the_whole_log(ledger: Ledger) -> None:
    scenario(ledger)
    result = ledger.cli("replay", "--json", ok=True)
    summary = json.loads(result.stdout)
    assert summary["log_size"] == summary["folded"] == 10 + 6 + 3
    assert summary["last_index"] == 18
    assert summary["policy"] == {"name": "h200-china-2026-01", "what_if": False}
    assert summary["units"]["total"] == 3
    assert summary["units"]["steps"]["received"] == 2 and summary["units"]["steps"]["re_exported"] == 1
    assert summary["findings"]["counts"] == {"SKIPPED_INSPECTION": 1, "SKIPPED_DUTY": 1}
    assert summary["duty"]["entries"] == 1 and summary["duty"]["shortfall_cents"] == 0
    assert {c["id"]: c["consigned"] for c in summary["customers"]} == {"alibaba": 2, "bytedance": 1}
    text = ledger.cli("replay", ok=True).stdout
    assert "replayed 19 of 19 statements" in text and "SKIPPED_DUTY 1" in text


def _in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes even for a tiny log, and many chunks."""
    monkeypatch.setattr(parallel, "MIN_STATEMENTS", 0)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(parallel, "CHUNK_STATEMENTS", 3)


@pytest.mark.parametrize("bounds", [[], ["--upto", "12"], ["--until", "2030-01-01"]])
def test_replay_workers_give_the_same_summary(ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
                                              bounds: list[str]) -> None:
    scenario(ledger)
    _in_workers(monkeypatch)

    def summary(*workers: str) -> tuple[dict[str, Any], str]:
        doc = json.loads(ledger.cli("replay", "--json", *bounds, *workers, ok=True).stdout)
        text = ledger.cli("replay", *bounds, *workers, ok=True).stdout
        if not bounds or bounds[0] != "--until":  # reported as of now, which moves between runs
            doc.pop("as_of")
            text = text.split(", as of ")[0] + text.split("\n", 1)[1]
        return doc, text

    one = summary("--workers", "1")
    assert one[0]["folded"] == (13 if bounds[:1] == ["--upto"] else 19)
    assert summary() == one
    assert summary("--workers", "2") == one


def test_replay_workers_must_be_positive(shared_sqlite: Ledger) -> None:
    result = shared_sqlite.cli("replay", "--workers", "0")
    assert result.exit_code == 2 and "--workers" in result.stderr
    result = shared_sqlite.cli("replay", "--rebuild", "--workers", "0")
    assert result.exit_code == 2 and "--workers" in result.stderr


def _tamper_log(db: str, index: int, change: Any) -> None:
    """Rewrite the stored log event at `index` with `change(state)` (a database administrator's edit)."""
    transcoder = MsgpackTranscoder()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        where = f"topic IN ({', '.join('?' * len(LOG_TOPICS))}) AND originator_version = ?"
        [(state,)] = conn.execute(f"SELECT state FROM stored_events WHERE {where}", [*LOG_TOPICS, index + 1])
        conn.execute(f"UPDATE stored_events SET state = ? WHERE {where}",
                     [change(transcoder, bytes(state)), *LOG_TOPICS, index + 1])
    finally:
        conn.close()


def _flip_signature(transcoder: MsgpackTranscoder, state: bytes) -> bytes:
    event = transcoder.decode(state)
    event["wire"] = event["wire"][:-1] + bytes([event["wire"][-1] ^ 1])
    return transcoder.encode(event)


def _drop_wire(transcoder: MsgpackTranscoder, state: bytes) -> bytes:
    event = transcoder.decode(state)
    del event["wire"]
    return transcoder.encode(event)


@pytest.mark.parametrize(("change", "error"), [(_flip_signature, SignatureInvalid), (_drop_wire, EncodingInvalid)])
def test_replay_refuses_a_tampered_log_with_any_workers(sqlite_ledger: Ledger, monkeypatch: pytest.MonkeyPatch,
                                                        change: Any, error: type[Exception]) -> None:
    scenario(sqlite_ledger)
    _tamper_log(sqlite_ledger.db, 14, change)
    _in_workers(monkeypatch)
    with Store(sqlite_ledger.db, readonly=True) as store:
        raised = []
        for workers in (1, 2):
            with pytest.raises(error) as caught:
                replaying.replay(store, now_us=append.now_us(), workers=workers)
            raised.append((caught.value.index, str(caught.value)))
        assert raised[0] == raised[1] and raised[0][0] == 14
        assert replaying.replay(store, now_us=append.now_us(), upto=13, workers=2).folded == 14
    result = sqlite_ledger.cli("replay", "--workers", "2")
    assert result.exit_code == 1 and "index 14" in result.stderr


def test_replay_upto_matches_the_views_at_that_index(ledger: Ledger) -> None:
    ledger.record("fabricated", "tsmc", ["U1"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                  ok=True)
    store = Store(ledger.db, readonly=True)
    try:
        then = snapshot(views.load_full(store))
    finally:
        store.close()
    ledger.full_flow(["U2"])
    summary = json.loads(ledger.cli("replay", "--upto", "10", "--json", ok=True).stdout)
    assert summary["folded"] == 11 and summary["last_index"] == 10 and summary["log_size"] == 17
    assert summary["units"]["total"] == len(then["units"]) == 1
    store = Store(ledger.db, readonly=True)
    try:
        assert snapshot(replaying.replay(store, now_us=append.now_us(), upto=10).state) == then
    finally:
        store.close()


def test_replay_until_folds_statements_at_or_before_the_time(ledger: Ledger) -> None:
    ledger.full_flow(["T1"], at="2026-01-05T00:00:00Z")
    ledger.record("fabricated", "tsmc", ["T2"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                  "--at", "2026-01-07T00:00:00Z", ok=True)
    result = ledger.cli("replay", "--until", "2026-01-06", "--json", ok=True)
    summary = json.loads(result.stdout)
    assert summary["as_of"] == "2026-01-06T00:00:00Z"
    assert summary["folded"] == 6  # the six steps of T1; the admin statements are stamped now
    assert summary["units"] == {"total": 1, "steps": {"fabricated": 0, "shipped_to_us": 0, "inspected": 0,
                                                      "duty_paid": 0, "re_exported": 0, "received": 1,
                                                      "located": 0, "destroyed": 0, "withdrawn": 0}}


def test_what_if_stricter_policy_finds_more_and_changes_nothing(ledger: Ledger, tmp_path: Path) -> None:
    scenario(ledger)
    strict = tmp_path / "strict.toml"
    strict.write_text(STRICT)
    before = (view_rows(ledger.db), stored_log(ledger.db))
    digests = file_digests(tmp_path) if not ledger.db.startswith("postgres") else {}
    recorded = json.loads(ledger.cli("replay", "--json", ok=True).stdout)
    what_if = json.loads(ledger.cli("replay", "--policy", str(strict), "--json", ok=True).stdout)
    assert what_if["policy"]["what_if"] is True
    assert what_if["findings"]["total"] > recorded["findings"]["total"]
    # SXM5 parts are barred and 30 % is due: R1, R2 (and R3's fabricated SXM5? no: NVL) are flagged
    assert what_if["findings"]["counts"]["PROHIBITED_MODEL"] == 2
    assert what_if["findings"]["counts"]["UNDERPAID_DUTY"] == 2
    assert what_if["duty"]["shortfall_cents"] > 0 == recorded["duty"]["shortfall_cents"]
    assert (view_rows(ledger.db), stored_log(ledger.db)) == before
    if digests:
        assert file_digests(tmp_path) == digests
    after = json.loads(ledger.cli("report", "compliance", "--json", ok=True).stdout)
    assert after["counts"] == recorded["findings"]["counts"]


def test_what_if_replaces_recorded_policies_genesis_included(ledger: Ledger, tmp_path: Path) -> None:
    lenient = tmp_path / "lenient.toml"
    lenient.write_text(LENIENT)
    ledger.cli("policy", "issue", str(lenient), "--key", ledger.key("authority"), ok=True)
    ledger.record("fabricated", "tsmc", ["W1"], "--model", "B200-SXM6-192GB", "--site", "F", "--lot", "L",
                  ok=True)  # allowed under the recorded policy
    assert json.loads(ledger.cli("replay", "--json", ok=True).stdout)["findings"]["total"] == 0
    default = tmp_path / "default.toml"
    default.write_text(DEFAULT_POLICY_TEXT)
    what_if = json.loads(ledger.cli("replay", "--policy", str(default), "--json", ok=True).stdout)
    assert what_if["findings"]["counts"] == {"PROHIBITED_MODEL": 1}
    assert what_if["policy"] == {"name": "h200-china-2026-01", "what_if": True}


def test_rebuild_gives_identical_view_rows(ledger: Ledger) -> None:
    scenario(ledger)
    ledger.cli("participant", "revoke-key", ledger.pub("kerry"), "--key", ledger.key("authority"), ok=True)
    before = view_rows(ledger.db)
    result = ledger.cli("replay", "--rebuild", "--json", ok=True)
    assert json.loads(result.stdout)["folded"] == 20
    assert view_rows(ledger.db) == before
    # and it repairs views that lost rows
    store = Store(ledger.db)
    try:
        with store.transaction() as cursor:
            cursor.execute("DELETE FROM custody_units")
            cursor.execute("DELETE FROM custody_findings")
    finally:
        store.close()
    assert view_rows(ledger.db) != before
    assert "rebuilt the views from 20 of 20" in ledger.cli("replay", "--rebuild", ok=True).stdout
    assert view_rows(ledger.db) == before
    for workers in ("1", "2"):  # in this process alone, and with another verifying signatures
        cut = Store(ledger.db)
        try:
            with cut.transaction() as cursor:
                cursor.execute("DELETE FROM custody_units")
        finally:
            cut.close()
        assert "rebuilt the views from 20 of 20" in ledger.cli("replay", "--rebuild", "--workers", workers,
                                                                 ok=True).stdout
        assert view_rows(ledger.db) == before
    ledger.record("fabricated", "tsmc", ["R9"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                  ok=True)  # writers carry on from the rebuilt views
    rows = view_rows(ledger.db)
    assert rows["custody_position"] == [(1, 21)] and len(rows["custody_units"]) == 4
    assert json.loads(ledger.cli("verify", "--json").stdout)["log_size"] == 21


@pytest.fixture(scope="module")
def shared_sqlite(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Ledger:
    """One SQLite ledger for the tests that must change nothing."""
    request.getfixturevalue("fast_cli")
    directory = tmp_path_factory.mktemp("replay-bad-input")
    return build_ledger(directory, str(directory / "custody.db"))


@pytest.mark.parametrize(("args", "message"), [
    (["--upto", "5", "--until", "2026-01-01"], "not both"),
    (["--upto", "10"], "beyond the log"),
    (["--upto", "-1"], "--upto"),
    (["--upto", "x"], "--upto"),
    (["--until", "yesterday"], "bad time"),
    (["--until", "2026-02-30"], "no day 30"),
    (["--rebuild", "--upto", "3"], "--rebuild"),
    (["--policy", "/nonexistent/policy.toml"], "policy"),
])
def test_replay_bad_input_is_one_line_exit_2(shared_sqlite: Ledger, args: list[str], message: str) -> None:
    before = view_rows(shared_sqlite.db)
    result = shared_sqlite.cli("replay", *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert view_rows(shared_sqlite.db) == before


def test_replay_bad_policy_file_is_exit_2(shared_sqlite: Ledger, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'red'\n" + DEFAULT_POLICY_TEXT)
    result = shared_sqlite.cli("replay", "--policy", str(bad))
    assert result.exit_code == 2 and "unknown key 'colour'" in result.stderr and result.stdout == ""


def test_replay_library_rejects_bad_bounds(shared_sqlite: Ledger) -> None:
    store = Store(shared_sqlite.db, readonly=True)
    try:
        with pytest.raises(BadInput):
            replaying.replay(store, now_us=append.now_us(), upto=store.size())
        with pytest.raises(BadInput):
            replaying.replay(store, now_us=append.now_us(), upto=1, until=1)
        policy = parse_policy(STRICT)
        assert replaying.replay(store, now_us=append.now_us(), policy=policy).state.policy is policy
    finally:
        store.close()


def test_rebuild_needs_a_writable_store(shared_sqlite: Ledger) -> None:
    store = Store(shared_sqlite.db, readonly=True)
    try:
        with pytest.raises(LedgerError):
            views.rebuild(store, append.now_us())
    finally:
        store.close()


def test_views_never_apply_a_statement_twice(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Statements folded into the views once are never applied again: saving them again from the position
    they were folded from (another writer's late save) is refused before any row is written."""
    store = Store(db_url, create=True)
    key = {name: keys.generate() for name in SIGNERS}
    try:
        append.open_ledger(store, key["authority"], origin=ORIGIN, co_authorities=(),
                           operator=key["operator"].public, policy_text=DEFAULT_POLICY_TEXT, at=BASE_AT)
        append.record(store, key["authority"], "participant_registered",
                      {"id": "tsmc", "name": "tsmc", "country": "TW", "roles": ["fab"],
                       "key": key["tsmc"].public},
                      at=BASE_AT + MINUTE)
        real_save_in = views.save_in
        saved: list[tuple[Any, ...]] = []

        def spied(cursor: Any, *args: Any) -> None:
            saved.append(args)
            real_save_in(cursor, *args)

        monkeypatch.setattr(views, "save_in", spied)
        append.record(store, key["tsmc"], "fabricated", {"model": "B200-SXM6-192GB", "site": "F", "lot": "L"},
                      ["V1", "V2"], at=BASE_AT + 2 * MINUTE, mode="allow")
        monkeypatch.undo()
        _, state, statements, start = saved[-1]
        with pytest.raises(Conflict):  # the same statements again, from where they were folded
            views.save(store, state, statements, start)
        rows = store.query("SELECT idx, serial, code FROM custody_findings")
        assert sorted(rows) == [(2, "V1", "PROHIBITED_MODEL"), (2, "V2", "PROHIBITED_MODEL")]
        assert len(store.query("SELECT idx FROM custody_signed")) == 3
        assert views.position(store) == 3
        replayed = replaying.replay(store, now_us=append.now_us()).state
        assert snapshot(views.load_full(store)) == snapshot(replayed)
    finally:
        store.close()
