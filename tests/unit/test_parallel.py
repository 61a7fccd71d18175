"""Verification in worker processes reports exactly what verification in one process reports.

Every probe verifies the same ledger (or bundle) with one worker and with several, in tiny chunks so
that statements, registrations and unit links straddle chunk and range boundaries, and requires the two
reports to be identical: the same failures in the same order, the same findings, the same warnings.
Tampered ledgers must fail either way. The fast paths (a signature verified in a worker, the unit links
compared in row order before the exact comparison) are also probed on their own.
"""

from __future__ import annotations

import io
import json
import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import append, bundle, keys, links, parallel, rules, verify
from ledger.errors import WorkerLost
from ledger.keys import PrivateKey
from ledger.policy import DEFAULT_POLICY_TEXT
from ledger.store import Store
from ledger.store.codec import LOG_TOPICS, UNIT_TOPICS, MsgpackTranscoder, unit_hex, unit_id
from tests.conftest import ROOT, Ledger

ORIGIN = "custody.test/parallel"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
NOW = T0 + 400 * 86_400 * 1_000_000
ROLES = {"tsmc": ("fab", "TW"), "kerry": ("carrier", "US"), "uslab": ("inspector", "US"),
         "cbp": ("customs", "US"), "nvidia": ("exporter", "US"), "alibaba": ("customer", "CN")}
_TRANSCODER = MsgpackTranscoder()


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of three statements and link reads of a few rows: every boundary gets crossed."""
    monkeypatch.setattr(parallel, "CHUNK_STATEMENTS", 3)
    monkeypatch.setattr(links, "RANGE_ROWS", 7)


# --- a ledger built through the library ------------------------------------------------------------------


@dataclass
class Built:
    url: str
    keys: dict[str, PrivateKey]
    wires: list[bytes]


def build(url: str, groups: int = 4, per_group: int = 3, late_participant: bool = True) -> Built:
    """Genesis, registrations, an approval, `groups` shipments through all six steps; a carrier
    registered in the middle of the log signs the later shipments (so its key is learnt mid-stream)."""
    ks = {name: keys.generate() for name in ["authority", "operator", "rogue", "late", *ROLES]}
    with Store(url, create=True) as store:
        append.open_ledger(store, ks["authority"], origin=ORIGIN, co_authorities=[],
                           operator=ks["operator"].public, policy_text=DEFAULT_POLICY_TEXT, at=T0)
        batch = append.Batch(store, clock=lambda: NOW)
        at = T0

        def add(signer: str, kind: str, data: dict[str, Any], units: Sequence[str] = ()) -> None:
            nonlocal at
            at += 1_000_000
            batch.add(append.sign_statement(ks[signer], origin=ORIGIN, kind=kind, at=at,
                                            units=batch.heads(list(units)), data=data))

        for name, (role, country) in ROLES.items():
            add("authority", "participant_registered",
                {"id": name, "name": name, "country": country, "roles": [role], "key": ks[name].public})
        add("authority", "customer_approved", {"id": "alibaba", "cap": 5, "license": "LIC-1"})
        for g in range(groups):
            if late_participant and g == groups // 2:
                add("authority", "participant_registered", {"id": "late", "name": "late", "country": "US",
                                                             "roles": ["carrier"], "key": ks["late"].public})
            serials = [f"U{g:03d}-{i}" for i in range(per_group)]
            carrier = "late" if late_participant and g >= groups // 2 else "kerry"
            value = 2_000_000 * per_group
            add("tsmc", "fabricated", {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": f"L{g}"}, serials)
            add(carrier, "shipped_to_us", {"port_of_entry": "DFW", "waybill": f"W{g}"}, serials)
            add("uslab", "inspected", {"result": "pass", "site": "Lab", "country": "US", "report": f"R{g}"},
                serials)
            add("cbp", "duty_paid", {"entry": f"E{g}", "entered_value": value, "duty": value // 4}, serials)
            add("nvidia", "re_exported", {"consignee": "alibaba", "license": "LIC-1", "destination": "CN"},
                serials)
            add("alibaba", "received", {"site": "Hangzhou"}, serials)
        batch.commit()
        wires = [event.wire for event in store.log(0)]
    return Built(url, ks, wires)


class Table:
    """Raw SQL on the events table, as a database administrator would tamper with it."""

    def __init__(self, url: str) -> None:
        self.postgres = url.startswith("postgresql://")
        if self.postgres:
            import psycopg

            self.conn: Any = psycopg.connect(url.split("?")[0], autocommit=True)
            self.conn.execute(f'SET search_path TO "{parse_qs(urlsplit(url).query)["schema"][0]}"')
        else:
            self.conn = sqlite3.connect(url, isolation_level=None)

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def sql(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(text.replace("?", "%s") if self.postgres else text, tuple(params))
        return list(cursor.fetchall()) if cursor.description else []

    def rows(self, topics: Sequence[str]) -> list[tuple[Any, int, bytes]]:
        found = self.sql("SELECT originator_id, originator_version, state FROM stored_events "
                         "WHERE topic IN (?, ?)", list(topics))
        return sorted(((o, v, bytes(s)) for o, v, s in found), key=lambda r: (str(r[0]), r[1]))

    def log(self) -> list[tuple[Any, int, bytes]]:
        return sorted(self.rows(LOG_TOPICS), key=lambda r: r[1])

    def links(self) -> list[tuple[Any, int, bytes]]:
        return self.rows(UNIT_TOPICS)

    def set_state(self, row: tuple[Any, int, bytes], state: bytes) -> None:
        self.sql("UPDATE stored_events SET state = ? WHERE originator_id = ? AND originator_version = ?",
                 [state, row[0], row[1]])

    def edit(self, row: tuple[Any, int, bytes], **changes: Any) -> None:
        self.set_state(row, _TRANSCODER.encode({**_TRANSCODER.decode(row[2]), **changes}))

    def delete(self, row: tuple[Any, int, bytes]) -> None:
        self.sql("DELETE FROM stored_events WHERE originator_id = ? AND originator_version = ?",
                 [row[0], row[1]])

    def insert(self, originator: Any, version: int, topic: str, state: bytes) -> None:
        self.sql("INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                 "VALUES (?, ?, ?, ?)", [originator, version, topic, state])


def _summary(report: verify.Report) -> dict[str, Any]:
    return {"intact": report.intact, "compliant": report.compliant, "log_size": report.log_size,
            "checks": report.checks, "failures": report.failures, "findings": report.findings,
            "warnings": [w for w in report.warnings if not w.startswith("no --trust")]}


def verify_url(url: str, workers: int) -> verify.Report:
    with Store(url, readonly=True) as store:
        return verify.verify_store(store, verify.Options(now=NOW, as_of=NOW, workers=workers))


def same_either_way(url: str) -> verify.Report:
    """Verify with one worker and with two and three; the reports must be identical."""
    one = verify_url(url, 1)
    for workers in (2, 3):
        assert _summary(verify_url(url, workers)) == _summary(one), workers
    return one


def verify_bundle_bytes(data: bytes, workers: int) -> verify.Report:
    return verify.verify_bundle(Path("probe.bundle"), verify.Options(now=NOW, as_of=NOW, workers=workers),
                                io.BytesIO(data))


def bundle_bytes(wires: Sequence[bytes], origin: str = ORIGIN) -> bytes:
    out = io.BytesIO()
    bundle.write_bundle(out, origin, iter(wires), iter(()))
    return out.getvalue()


@pytest.fixture
def built(db_url: str) -> Built:
    return build(db_url)


# --- the untouched ledger ---------------------------------------------------------------------------------


def test_clean_ledger_same_report_with_any_number_of_workers(built: Built) -> None:
    report = same_either_way(built.url)
    assert report.intact and report.compliant is False  # cap 5 for 12 units: CAP_EXCEEDED
    assert report.log_size == len(built.wires)
    # and, 400 days on, the received units' location attestations are overdue (90 days)
    assert {f.code for f in report.findings} == {"CAP_EXCEEDED", "ATTESTATION_OVERDUE"}


def test_clean_bundle_same_report_with_any_number_of_workers(built: Built) -> None:
    data = bundle_bytes(built.wires)
    one = verify_bundle_bytes(data, 1)
    assert one.intact
    assert _summary(verify_bundle_bytes(data, 2)) == _summary(one)


# --- tampered databases: each must fail, identically, whatever the workers -------------------------------


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


Probe = Callable[[Table, Built], None]


def _flip_signature(table: Table, built: Built) -> None:
    row = table.log()[20]
    wire = built.wires[20]
    table.edit(row, wire=wire[:-1] + bytes([wire[-1] ^ 1]))


def _flip_body(table: Table, built: Built) -> None:
    row = table.log()[25]
    table.edit(row, wire=_flip(built.wires[25], len(built.wires[25]) // 2))


def _forged_by_rogue(table: Table, built: Built) -> None:
    """A well-formed statement signed by a key nobody registered."""
    row = table.log()[-5]
    statement = append.sign_statement(built.keys["rogue"], origin=ORIGIN, kind="shipped_to_us", at=T0,
                                      units=[("U003-0", bytes(32))],
                                      data={"port_of_entry": "X", "waybill": "Y"})
    table.edit(row, wire=statement.wire)


def _replayed(table: Table, built: Built) -> None:
    """A statement replaced by the one before it: validly signed, but its units' heads have moved on."""
    index = 31
    table.edit(table.log()[index], wire=built.wires[index - 1])


def _delete_log_row(table: Table, built: Built) -> None:
    table.delete(table.log()[17])


def _undecodable_log_event(table: Table, built: Built) -> None:
    table.set_state(table.log()[12], b"\xc1garbage")


def _delete_link(table: Table, built: Built) -> None:
    table.delete(table.links()[5])


def _swap_links(table: Table, built: Built) -> None:
    links = table.links()
    a, b = links[3], links[4]  # two links of one unit (sorted by unit id, then version)
    assert a[0] == b[0]
    table.set_state(a, b[2])
    table.set_state(b, a[2])


def _wrong_link_index(table: Table, built: Built) -> None:
    row = table.links()[9]
    table.edit(row, index=_TRANSCODER.decode(row[2])["index"] + 1)


def _extra_link(table: Table, built: Built) -> None:
    row = table.links()[0]
    versions = [r[1] for r in table.links() if r[0] == row[0]]
    table.insert(row[0], max(versions) + 1, UNIT_TOPICS[1], row[2])


def _link_under_other_unit(table: Table, built: Built) -> None:
    row = table.links()[0]
    other = unit_id(ORIGIN, "NOT-A-UNIT")
    table.insert(other if table.postgres else other.hex, 1, UNIT_TOPICS[0], row[2])


def _undecodable_link(table: Table, built: Built) -> None:
    table.set_state(table.links()[11], b"\x92\xc1")


PROBES: dict[str, tuple[Probe, str]] = {
    "flipped signature": (_flip_signature, "signature"),
    "flipped body byte": (_flip_body, "encoding"),
    "forged by a rogue key": (_forged_by_rogue, "signer"),
    "statement replaced by its predecessor": (_replayed, "chain"),
    "log row deleted": (_delete_log_row, "log_index"),
    "undecodable log event": (_undecodable_log_event, "encoding"),
    "unit link deleted": (_delete_link, "unit_links"),
    "unit links swapped": (_swap_links, "unit_links"),
    "unit link index changed": (_wrong_link_index, "unit_links"),
    "extra unit link": (_extra_link, "unit_links"),
    "unit link under another unit's id": (_link_under_other_unit, "unit_links"),
    "undecodable unit link": (_undecodable_link, "unit_links"),
}


@pytest.mark.parametrize("name", list(PROBES))
def test_tampered_ledger_fails_identically(built: Built, name: str) -> None:
    probe, check = PROBES[name]
    with Table(built.url) as table:
        probe(table, built)
    report = same_either_way(built.url)
    assert not report.intact, name
    assert check in {f.check for f in report.failures}, (name, report.failures)


def test_sampled_byte_flips_in_stored_statements(built: Built) -> None:
    """Random single-byte flips: one worker and two give the same report, and both fail."""
    rng = random.Random(7)
    with Table(built.url) as table:
        rows = table.log()
        for _ in range(12):
            index = rng.randrange(len(built.wires))
            position = rng.randrange(len(built.wires[index]))
            table.edit(rows[index], wire=_flip(built.wires[index], position))
            report = same_either_way(built.url)
            assert not report.intact and any(f.index == index for f in report.failures), (index, position)
            table.set_state(rows[index], rows[index][2])


def test_sampled_byte_flips_in_a_bundle(tmp_path: Path) -> None:
    built = build(str(tmp_path / "custody.db"))
    data = bundle_bytes(built.wires)
    rng = random.Random(11)
    for _ in range(25):
        position = rng.randrange(len(data))
        tampered = _flip(data, position)
        try:
            one = verify_bundle_bytes(tampered, 1)
        except Exception as e:  # a header flip can make it "not a bundle" (exit 2): the same either way
            with pytest.raises(type(e)):
                verify_bundle_bytes(tampered, 2)
            continue
        assert not one.intact, position
        assert _summary(verify_bundle_bytes(tampered, 2)) == _summary(one), position


def test_truncated_bundle_reports_the_statements_before_the_cut(tmp_path: Path) -> None:
    built = build(str(tmp_path / "custody.db"))
    data = bundle_bytes(built.wires)
    for cut in (len(data) // 3, len(data) // 2, len(data) - 10):
        one = verify_bundle_bytes(data[:cut], 1)
        assert not one.intact
        assert _summary(verify_bundle_bytes(data[:cut], 3)) == _summary(one)


# --- the fast paths on their own -------------------------------------------------------------------------


def test_signature_verified_again_unless_a_worker_verified_it_under_the_signers_key(tmp_path: Path) -> None:
    built = build(str(tmp_path / "custody.db"), groups=1, late_participant=False)
    index = 12
    good = built.wires[index]
    bad = good[:-1] + bytes([good[-1] ^ 1])

    def fold_with(verified: bytes | None) -> verify.Report:
        verifier = verify.Verifier(ORIGIN, verify.Options(now=NOW, as_of=NOW))
        for i, wire in enumerate(built.wires[:index]):
            verifier.statement(i, wire)
        items, leaves = parallel.decode_chunk(index, [bad], False, {})
        verifier.chunk([parallel.Item(items[0].index, items[0].statement, items[0].failure, verified)], leaves)
        return verifier.report(verify.CORE_CHECKS)

    signer = built.keys["kerry"].public
    assert [f.check for f in fold_with(None).failures] == ["signature"]
    assert [f.check for f in fold_with(built.keys["rogue"].public).failures] == ["signature"]
    # a worker's word counts only for the registered key: here it vouches (falsely) and is believed,
    # which is why workers only ever vouch for what libsodium accepted
    assert rules.signature_done(signer, signer, index)
    assert not rules.signature_done(signer, built.keys["rogue"].public, index)
    assert not rules.signature_done(None, signer, index)
    assert not rules.signature_done(signer, signer, 0)  # the genesis: always verified in order


def test_a_worker_never_vouches_for_a_bad_signature(tmp_path: Path) -> None:
    built = build(str(tmp_path / "custody.db"), groups=1, late_participant=False)
    known = {k.key_id: k.public for k in built.keys.values()}
    wires = [w[:-1] + bytes([w[-1] ^ 1]) for w in built.wires]
    items, _ = parallel.decode_chunk(0, wires, False, dict(known))
    assert all(item.verified is None for item in items)
    items, _ = parallel.decode_chunk(0, built.wires, False, dict(known))
    assert all(item.verified is not None for item in items)
    # what the worker processes run: one byte per (body, signature, key)
    statements = [item.statement for item in items if item.statement is not None]
    jobs = [(s.body, s.signature, known[s.signer]) for s in statements]
    assert parallel._verify_task(jobs) == b"\x01" * len(jobs)
    bad = [(body, signature[:-1] + bytes([signature[-1] ^ 1]), key) for body, signature, key in jobs]
    assert parallel._verify_task(bad) == b"\x00" * len(jobs)
    other = built.keys["rogue"].public
    assert parallel._verify_task([(body, signature, other) for body, signature, _ in jobs]) == b"\x00" * len(jobs)


def test_worker_learns_keys_from_registrations_it_decodes(tmp_path: Path) -> None:
    built = build(str(tmp_path / "custody.db"), groups=1, late_participant=False)
    items, _ = parallel.decode_chunk(0, built.wires, False, {})  # knows nothing to start with
    assert all(item.verified is not None for item in items)


@given(st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), min_size=1, max_size=20),
       st.from_regex(r"[a-z.]{1,20}/[a-z0-9-]{1,20}", fullmatch=True))
@settings(max_examples=60, deadline=None)
def test_unit_hex_is_the_aggregate_id(serials: list[str], origin: str) -> None:
    for serial in serials:
        assert unit_hex(origin, serial) == unit_id(origin, serial).hex


def _exact_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the runs of the exact unit link comparison."""
    runs: list[int] = []
    exact = links.check_exactly

    def counted(*args: Any) -> None:
        runs.append(1)
        exact(*args)

    monkeypatch.setattr(links, "check_exactly", counted)
    return runs


def test_links_in_row_order_need_no_exact_comparison(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _exact_runs(monkeypatch)
    assert same_either_way(built.url).intact
    assert runs == []


def test_links_stored_in_another_order_are_still_right(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    """A link row deleted and written again (the same unit, version and state, a new row id) is out of
    row order: the walk sees a difference, the exact comparison finds every chain right."""
    runs = _exact_runs(monkeypatch)
    with Table(built.url) as table:
        row = table.links()[4]
        table.delete(row)
        table.insert(row[0], row[1], UNIT_TOPICS[0] if row[1] == 1 else UNIT_TOPICS[1], row[2])
    assert same_either_way(built.url).intact
    assert len(runs) == 3  # one per verification: workers 1, 2 and 3


def test_default_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "available_cores", lambda: 6)
    assert parallel.worker_count(None, 10**6) == 6
    assert parallel.worker_count(None, None) == 6
    assert parallel.worker_count(None, 10) == 1  # a small log: no processes to start
    assert parallel.worker_count(3, 10) == 3  # asked for: always
    assert parallel.worker_count(0, 10) == 1


def test_chunks_stay_small(built: Built) -> None:
    with Store(built.url, readonly=True) as store:
        chunks = list(parallel.store_chunks(store))
    assert all(len(states) <= parallel.CHUNK_STATEMENTS for _, states, _ in chunks)
    assert [start for start, _, _ in chunks] == list(range(0, len(built.wires), parallel.CHUNK_STATEMENTS))
    assert sum(len(v) for _, _, v in chunks) == len(built.wires)


# --- the command line ------------------------------------------------------------------------------------


def _cli_json(book: Ledger, *extra: str) -> tuple[int, dict[str, Any]]:
    result = book.cli("verify", "--json", "--as-of", "2030-01-01", *extra)
    return result.exit_code, json.loads(result.stdout)


def test_cli_workers_option_gives_the_same_document(ledger: Ledger) -> None:
    ledger.full_flow(["A1", "A2", "A3"])
    ledger.record("fabricated", "tsmc", ["B1"], "--model", "B200", "--site", "x", "--lot", "y",
                  "--allow-violation", ok=True)
    one = _cli_json(ledger, "--workers", "1")
    assert one[0] == 3 and one[1]["intact"] and not one[1]["compliant"]
    assert _cli_json(ledger, "--workers", "2") == one
    assert _cli_json(ledger) == one


def test_cli_workers_must_be_positive(ledger: Ledger) -> None:
    result = ledger.cli("verify", "--workers", "0")
    assert result.exit_code == 2
    assert result.stdout == ""


def test_cli_tampered_database_fails_with_any_workers(sqlite_ledger: Ledger) -> None:
    sqlite_ledger.full_flow(["C1", "C2"])
    with Table(sqlite_ledger.db) as table:
        _delete_link(table, Built(sqlite_ledger.db, {}, []))
    outcomes = []
    for workers in ("1", "2"):
        result = sqlite_ledger.cli("verify", "--json", "--workers", workers)
        assert result.exit_code == 1
        document = json.loads(result.stdout)
        assert not document["intact"]
        assert [f["check"] for f in document["failures"]] == ["unit_links"]
        outcomes.append(document)
    assert outcomes[0] == outcomes[1]


def test_tamper_suite_with_all_workers() -> None:
    """The adversarial suite (`adversarial/test_tamper.py`, SQLite) again, every verification in worker processes
    with tiny chunks (`tests/all_workers.py`): the same probes must fail the same way."""
    import os
    import subprocess
    import sys

    root = ROOT
    env = {k: v for k, v in os.environ.items() if k != "CUSTODY_TEST_PG"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                           "-p", "tests.all_workers", str(root / "tests" / "adversarial" / "test_tamper.py")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


# --- the other processes: stopped with the pipeline, and a lost one is an error, not a hang ------------


def test_closing_early_stops_the_other_processes(built: Built) -> None:
    with Store(built.url, readonly=True) as store:
        pipe = parallel.Pipeline(3)
        processes = [worker.process for worker in pipe._others]
        assert len(processes) == 2 and all(p.is_alive() for p in processes)
        with pipe:
            chunks = pipe.decode(parallel.store_chunks(store), stored=True)
            next(chunks)
            chunks.close()  # as replay --upto does
        assert not any(p.is_alive() for p in processes)


def test_finishing_stops_the_other_processes(built: Built) -> None:
    with Store(built.url, readonly=True) as store, parallel.Pipeline(2) as pipe:
        processes = [worker.process for worker in pipe._others]
        assert sum(len(items) for _, items, _ in pipe.decode(parallel.store_chunks(store), stored=True)) \
            == len(built.wires)
    assert [p.exitcode for p in processes] == [0]


def test_a_lost_worker_is_an_error(built: Built) -> None:
    with Store(built.url, readonly=True) as store, parallel.Pipeline(2) as pipe:
        pipe._others[0].process.kill()
        pipe._others[0].process.join()
        with pytest.raises(WorkerLost, match="stopped unexpectedly"):
            list(pipe.decode(parallel.store_chunks(store), stored=True))
