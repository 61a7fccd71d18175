"""A participant holding only INSERT on the events table (the README's PostgreSQL grant), on both stores.

What it can add: rows at any aggregate id, version, topic and row id (notification id) not taken yet,
lower than the genesis's too. What it must not achieve: a second log that readers or writers take for the
ledger, a row under a unit's id that `history` or `prove` show as a step, or any row that `verify` does
not account for. Each test first builds the attack, then checks every reader.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ledger import append, keys, merkle
from ledger.statement import ZERO_HASH, Statement
from ledger.store import Store
from ledger.store.codec import (
    LOG_APPENDED,
    LOG_OPENED,
    MsgpackTranscoder,
    log_id,
    stored_log_event,
    stored_unit_link,
    unit_id,
)
from tests.conftest import ORIGIN, Ledger

FAB = ("--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1")
_TRANSCODER = MsgpackTranscoder()


class Insider:
    """Direct INSERTs into the events table, with the row id (SQLite's rowid, PostgreSQL's notification_id)
    chosen by the insider, as INSERT allows."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql://")
        if self.postgres:
            import psycopg

            base, _, schema = url.partition("?schema=")
            self._conn: Any = psycopg.connect(base, autocommit=True)
            self._conn.execute(f'SET search_path TO "{schema}"')
        else:
            self._conn = sqlite3.connect(url, isolation_level=None)

    def __enter__(self) -> Insider:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()

    def insert(self, row_id: int | None, originator: uuid.UUID, version: int, topic: str, state: bytes) -> None:
        if self.postgres:
            columns, mark, ident = "notification_id, ", "%s, ", [row_id]
            if row_id is None:
                columns, mark, ident = "", "", []
            self._conn.execute(f"INSERT INTO stored_events ({columns}originator_id, originator_version, topic, "
                               f"state) VALUES ({mark}%s, %s, %s, %s)", [*ident, originator, version, topic, state])
        else:
            columns, mark, ident = "rowid, ", "?, ", [row_id]
            if row_id is None:
                columns, mark, ident = "", "", []
            self._conn.execute(f"INSERT INTO stored_events ({columns}originator_id, originator_version, topic, "
                               f"state) VALUES ({mark}?, ?, ?, ?)", [*ident, originator.hex, version, topic, state])

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM stored_events").fetchone()[0])


def _verify(ledger: Ledger, *extra: str) -> tuple[int, dict[str, Any]]:
    result = ledger.cli("verify", "--json", "--trust", ledger.pub("authority"), *extra)
    return result.exit_code, json.loads(result.stdout) if result.stdout else {}


def _failures(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["check"], f["detail"]) for f in report.get("failures", [])]


def _refuses(result: Any) -> None:
    """Exit 1, one line naming the failure, no traceback, nothing on stdout."""
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _signed(ledger: Ledger, name: str, kind: str, units: list[tuple[str, bytes]], data: dict[str, Any],
            at: int) -> Statement:
    key = keys.load_private(Path(ledger.key(name)), lambda: None)
    return append.sign_statement(key, origin=ORIGIN, kind=kind, at=at, units=units, data=data)


# --- a second log -------------------------------------------------------------------------------------


def _second_log(ledger: Ledger, *, with_genesis: bool) -> str:
    """The issue's attack: the log copied (without its newest statement, a revocation) under a new id at
    row ids below the genesis's, then a statement signed with the revoked key appended to the copy."""
    ledger.record("fabricated", "tsmc", ["SL-1"], *FAB, ok=True)
    ledger.cli("checkpoint", "--key", ledger.key("operator"), ok=True)  # covers everything but what follows
    ledger.cli("participant", "revoke-key", ledger.pub("tsmc"), "--reason", "stolen", "--key",
               ledger.key("authority"), ok=True)
    with Store(ledger.db, readonly=True) as store:
        events = list(store.log())[:-1]  # leave out the revocation
        last_at = max(e.index for e in events)
    copy = uuid.uuid4()
    now = datetime.now(UTC)
    leaves = [merkle.leaf_hash(e.wire) for e in events]
    forged = _signed(ledger, "tsmc", "fabricated", [("SL-2", ZERO_HASH)],
                     {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": "L9"}, int(now.timestamp() * 1e6))
    leaves.append(merkle.leaf_hash(forged.wire))
    compact = merkle.CompactRange.from_leaves(leaves)
    with Insider(ledger.db) as insider:
        for position, event in enumerate(events):
            if position == 0 and not with_genesis:
                continue
            topic = LOG_OPENED if position == 0 else LOG_APPENDED
            state = stored_log_event(ORIGIN, event.index, event.wire, list(event.range), now).state
            insider.insert(-1000 + position, copy, event.version, topic, state)
        index = last_at + 1
        state = stored_log_event(ORIGIN, index, forged.wire, list(compact.hashes), now).state
        insider.insert(-1000 + index, copy, index + 1, LOG_APPENDED, state)
        link = stored_unit_link(ORIGIN, "SL-2", 1, index, forged.hash, forged.at, now)
        insider.insert(-2000, unit_id(ORIGIN, "SL-2"), 1, link.topic, link.state)
    return str(copy)


def test_a_second_log_is_refused_by_readers_and_writers_and_fails_verify(ledger: Ledger) -> None:
    _second_log(ledger, with_genesis=True)
    status, report = _verify(ledger)
    assert status == 1 and not report["intact"], report
    assert any(check == "log_index" and "second log" in detail for check, detail in _failures(report)), report
    _refuses(ledger.cli("history", "SL-2"))
    _refuses(ledger.cli("history", "SL-1"))
    _refuses(ledger.cli("report", "compliance"))
    with Insider(ledger.db) as insider:
        before = insider.count()
        _refuses(ledger.record("shipped-to-us", "kerry", ["SL-1"], "--port-of-entry", "DFW", "--waybill", "W"))
        assert insider.count() == before, "a writer appended beside a second log"


def test_a_second_log_without_a_genesis_is_ignored_by_readers_and_fails_verify(ledger: Ledger) -> None:
    _second_log(ledger, with_genesis=False)
    status, report = _verify(ledger)
    assert status == 1 and not report["intact"], report
    failures = _failures(report)
    assert any(check == "log_index" and "stored row -999" in detail for check, detail in failures), failures
    history = ledger.cli("history", "SL-1", "--json")  # readers follow the one log, from its genesis
    assert history.exit_code == 0, history.stderr
    assert [s["kind"] for s in json.loads(history.stdout)["steps"]] == ["fabricated"]
    _refuses(ledger.cli("history", "SL-2"))  # its forged link points at the ledger's statement 11, not its own
    ledger.record("shipped-to-us", "kerry", ["SL-1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    with Store(ledger.db, readonly=True) as store:
        assert store.size() == 13 and store.head() is not None


def test_a_log_row_under_another_id_fails_verify_naming_its_row(ledger: Ledger) -> None:
    status, report = _verify(ledger)
    assert status == 0, report
    with Store(ledger.db, readonly=True) as store:
        event = next(store.log())
    with Insider(ledger.db) as insider:
        insider.insert(None, uuid.uuid4(), 1, LOG_OPENED, stored_log_event(
            "custody.test/other", 0, event.wire, [], datetime.now(UTC)).state)
        insider.insert(987_654, uuid.uuid4(), 7, "custody:not-a-topic", b"\x80")
    status, report = _verify(ledger)
    assert status == 1, report
    failures = _failures(report)
    assert any(check == "log_index" and "second log" in detail for check, detail in failures), failures
    assert any(check == "log_index" and "stored row 987654" in detail for check, detail in failures), failures


# --- rows under a unit's id ---------------------------------------------------------------------------


def _unit_statement_index(ledger: Ledger, serial: str) -> tuple[int, bytes]:
    with Store(ledger.db, readonly=True) as store:
        link = store.unit_links(serial)[-1]
        return int(link["index"]), bytes(link["hash"])


def _two_units(ledger: Ledger) -> None:
    ledger.record("fabricated", "tsmc", ["U-A"], *FAB, ok=True)
    ledger.record("fabricated", "tsmc", ["U-B"], *FAB, ok=True)
    ledger.record("shipped-to-us", "kerry", ["U-B"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    ledger.cli("checkpoint", "--key", ledger.key("operator"), ok=True)


@pytest.mark.parametrize("topic", ["ledger.aggregates:Checkpoints.Signed", "custody:anything",
                                   "ledger.aggregates:Unit.Linked"])
def test_a_row_under_a_unit_id_is_a_link_or_an_integrity_failure(ledger: Ledger, topic: str) -> None:
    """The issue's item 2 (another topic) and item 5 (another unit's step as a link): `verify` names it,
    `history` and `prove` refuse (exit 1), never show U-B's step as U-A's."""
    _two_units(ledger)
    index, hash_ = _unit_statement_index(ledger, "U-B")  # U-B's shipment: not a step of U-A
    link = stored_unit_link(ORIGIN, "U-A", 2, index, hash_, 0, datetime.now(UTC))
    with Insider(ledger.db) as insider:
        insider.insert(None, unit_id(ORIGIN, "U-A"), 2, topic, link.state)
    status, report = _verify(ledger)
    assert status == 1, report
    assert any(check == "unit_links" for check, _ in _failures(report)), report
    _refuses(ledger.cli("history", "U-A"))
    _refuses(ledger.cli("history", "U-A", "--json"))
    _refuses(ledger.cli("prove", "U-A", "--out", str(ledger.dir / "u-a.proof")))
    assert not (ledger.dir / "u-a.proof").exists()
    assert ledger.cli("history", "U-B").exit_code == 0  # the other unit is untouched


def test_an_undecodable_link_is_an_integrity_failure_not_a_traceback(ledger: Ledger) -> None:
    _two_units(ledger)
    with Insider(ledger.db) as insider:
        insider.insert(None, unit_id(ORIGIN, "U-A"), 2, "ledger.aggregates:Unit.Linked", b"\xc1garbage")
    _refuses(ledger.cli("history", "U-A"))
    _refuses(ledger.cli("prove", "U-A", "--out", str(ledger.dir / "u-a.proof")))
    status, report = _verify(ledger)
    assert status == 1 and any(check == "unit_links" for check, _ in _failures(report)), report


def test_a_stray_row_of_no_known_aggregate_fails_verify_naming_its_row(ledger: Ledger) -> None:
    _two_units(ledger)
    with Insider(ledger.db) as insider:
        insider.insert(4_000_000, uuid.uuid4(), 1, "custody:anything", _TRANSCODER.encode({"x": 1}))
    status, report = _verify(ledger)
    assert status == 1, report
    assert any(check == "log_index" and "stored row 4000000" in detail for check, detail in _failures(report))
    assert ledger.cli("history", "U-A").exit_code == 0  # not part of the ledger: readers never see it


# --- writers blocked by a row in the place they need ----------------------------------------------


def test_a_row_at_a_units_next_version_makes_writers_refuse_not_retry(ledger: Ledger) -> None:
    """A writer cannot store U-A's next link while another row holds its place: it says so (exit 1,
    naming the unit), writes nothing, and does not retry for ever; other units are recorded as usual."""
    _two_units(ledger)
    with Insider(ledger.db) as insider:
        insider.insert(None, unit_id(ORIGIN, "U-A"), 2, "custody:anything", b"")
        before = insider.count()
        result = ledger.record("shipped-to-us", "kerry", ["U-A"], "--port-of-entry", "DFW", "--waybill", "W")
        _refuses(result)
        assert "U-A" in result.stderr and "verify" in result.stderr
        assert insider.count() == before
    ledger.record("inspected", "uslab", ["U-B"], "--result", "pass", "--site", "Lab", "--country", "US",
                  "--report", "R", ok=True)


def test_a_row_at_the_logs_next_place_makes_writers_refuse(ledger: Ledger) -> None:
    with Store(ledger.db, readonly=True) as store:
        size = store.size()
    with Insider(ledger.db) as insider:
        insider.insert(None, log_id(ORIGIN), size + 1, "custody:anything", b"")
        before = insider.count()
        _refuses(ledger.record("fabricated", "tsmc", ["U-C"], *FAB))
        assert insider.count() == before
    assert ledger.cli("history", "U-A").exit_code == 2  # readers read the ledger's log as it is
    status, report = _verify(ledger)
    assert status == 1 and any(check == "log_index" and "not a log event" in detail
                               for check, detail in _failures(report)), report
