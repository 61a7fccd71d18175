"""Many writers at once, on both stores: no forks, no gaps, no duplicate links, views consistent.

The writers are separate processes: this file run as a script is the driver (`append.record` in a loop,
exactly what `custody record` calls), and a few real `custody record` processes race through the CLI.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ledger import append, fold, keys, views
from ledger.errors import Conflict, ViolationsFound
from ledger.state import State
from ledger.statement import decode
from ledger.store import Store
from tests.conftest import ROOT, Ledger

CUSTODY = str(Path(sys.executable).with_name("custody"))
SHARED = [f"S{i}" for i in range(6)]  # units every writer inspects, again and again
RACES = 10  # units every writer tries to ship: one of them can, the others must be refused
WRITERS, ROUNDS = 4, 100
MODEL = "H200-SXM5-141GB"


# --- invariants --------------------------------------------------------------------------------------


def _snapshot(state: State) -> dict[str, Any]:
    return {
        "units": {s: u.to_row() for s, u in state.units.items()},
        "customers": {c: v.to_row() for c, v in state.customers.items()},
        "duty": {e: d.to_row() for e, d in state.duty.items()},
        "findings": sorted((f.index, f.serial or "", f.code, f.detail) for f in state.findings),
        "signed": {k: sorted((i, at, tuple(s)) for i, at, s in v) for k, v in state.signed.items()},
    }


def check_ledger(db: str, *, caught_up: bool = False) -> int:
    """The store's invariants; returns the log size.

    Log versions are 1…N with no gap; every unit's stored links are exactly the log's statements that
    name it, versions 1…k; what readers see (views + the tail folded in memory) equals a fold of the
    whole log from scratch, and with `caught_up` the views themselves are at the end of the log.
    """
    now = append.now_us()
    with Store(db, readonly=True) as store:
        fresh = State(origin=store.origin)
        expected: dict[str, list[tuple[int, bytes]]] = {}
        size = 0
        for event in store.log():
            assert event.version == size + 1, f"log version {event.version} after {size}"
            statement = decode(event.wire)
            fold.apply(fresh, event.index, statement)
            for serial in statement.serials:
                expected.setdefault(serial, []).append((event.index, statement.hash))
            size += 1
        stored: dict[str, list[tuple[int, int, bytes]]] = {}
        for _, version, link in store.all_unit_links():
            stored.setdefault(link["serial"], []).append((version, link["index"], link["hash"]))
        assert set(stored) == set(expected)
        for serial, links in stored.items():
            links.sort()
            assert [v for v, _, _ in links] == list(range(1, len(links) + 1)), f"{serial}: {links}"
            assert [(i, h) for _, i, h in links] == expected[serial], f"{serial}: links disagree with the log"
        assert _snapshot(views.current(store, now)) == _snapshot(fresh)
        if caught_up:
            assert views.position(store) == size
            assert _snapshot(views.load_full(store)) == _snapshot(fresh)
    return size


def verify_json(db: str) -> dict[str, Any]:
    done = subprocess.run([CUSTODY, "--db", db, "verify", "--json"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode in (0, 3), done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


# --- the driver: one writer process ------------------------------------------------------------------


def _key(keydir: str, name: str) -> keys.PrivateKey:
    return keys.load_private(Path(keydir) / name, lambda: None)


def writer(db: str, keydir: str, me: int, rounds: int, start_at: float) -> dict[str, Any]:
    """`rounds` statements: mostly inspections of shared units, a new unit every tenth, a race every tenth."""
    rng = random.Random(me)
    lab, fab, carrier = _key(keydir, "uslab"), _key(keydir, "tsmc"), _key(keydir, "kerry")
    out: dict[str, Any] = {"accepted": [], "refused": [], "gave_up": [], "attempts": []}
    with Store(db) as store:
        time.sleep(max(0.0, start_at - time.time()))
        for n in range(rounds):
            if n % 10 == 0:
                job = (fab, "fabricated", {"model": MODEL, "site": "Fab 18", "lot": f"L{me}"}, [f"W{me}-{n}"])
            elif n % 10 == 5:
                job = (carrier, "shipped_to_us", {"port_of_entry": "DFW", "waybill": f"AWB-{me}"},
                       [f"R{n // 10}"])
            else:
                report = {"result": "pass", "site": "Lab", "country": "US", "report": f"{me}-{n}"}
                job = (lab, "inspected", report, rng.sample(SHARED, rng.randint(1, 3)))
            key, kind, data, serials = job
            try:
                done = append.record(store, key, kind, data, serials)
            except ViolationsFound as e:
                out["refused"].append([kind, serials, e.detail])
                continue
            except Conflict as e:
                out["gave_up"].append([kind, serials, e.detail])
                continue
            out["accepted"].append([done.index, kind, serials])
            out["attempts"].append(done.attempts)
    return out


def run_writers(ledger: Ledger, count: int = WRITERS, rounds: int = ROUNDS) -> list[dict[str, Any]]:
    start_at = time.time() + 1.5  # once every process has imported and opened its store
    procs = [subprocess.Popen([sys.executable, __file__, ledger.db, str(ledger.dir / "keys"), str(me),
                               str(rounds), repr(start_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
             for me in range(count)]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout))
    return results


# --- tests -------------------------------------------------------------------------------------------


def _prepare(ledger: Ledger) -> None:
    ledger.record("fabricated", "tsmc", SHARED + [f"R{i}" for i in range(RACES)], "--model", MODEL,
                  "--site", "Fab 18", "--lot", "L0", ok=True)
    ledger.record("shipped-to-us", "kerry", SHARED, "--port-of-entry", "DFW", "--waybill", "W0", ok=True)


def test_four_writers_hundred_statements_each(ledger: Ledger) -> None:
    _prepare(ledger)
    before = check_ledger(ledger.db)
    started = time.monotonic()
    results = run_writers(ledger)
    elapsed = time.monotonic() - started

    accepted = [a for r in results for a in r["accepted"]]
    refused = [x for r in results for x in r["refused"]]
    assert [x for r in results for x in r["gave_up"]] == []
    assert len(accepted) + len(refused) == WRITERS * ROUNDS
    # each race unit was shipped exactly once; the three losers were refused because the unit moved on
    shipped = sorted(serials[0] for _, kind, serials in accepted if kind == "shipped_to_us")
    assert shipped == sorted(f"R{i}" for i in range(RACES))
    assert len(refused) == (WRITERS - 1) * RACES
    assert all("OUT_OF_ORDER" in detail for _, _, detail in refused)
    # every accepted statement got its own index, and they fill the log after what was there
    indices = sorted(index for index, _, _ in accepted)
    assert indices == list(range(before, before + len(accepted)))

    size = check_ledger(ledger.db)
    assert size == before + len(accepted)
    report = verify_json(ledger.db)
    assert report["intact"] and report["failures"] == [] and report["log_size"] == size
    attempts = [n for r in results for n in r["attempts"]]
    print(f"\n{len(accepted)} accepted, {len(refused)} refused in {elapsed:.1f} s; attempts: "
          f"max {max(attempts)}, mean {sum(attempts) / len(attempts):.2f}, "
          f"retried {sum(n > 1 for n in attempts)}")
    ledger.record("inspected", "uslab", ["S0"], "--result", "pass", "--site", "Lab", "--country", "US",
                  "--report", "last", ok=True)
    check_ledger(ledger.db, caught_up=True)


def _custody(db: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([CUSTODY, "--db", db, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def test_cli_processes_race_for_one_step(ledger: Ledger) -> None:
    """Four `custody record` processes ship one unit: one wins, three are refused with OUT_OF_ORDER
    (after a lost race, or because they started late); two inspect another unit: both are recorded."""
    ledger.record("fabricated", "tsmc", ["RACE", "REPEAT"], "--model", MODEL, "--site", "F", "--lot", "L",
                  ok=True)
    ledger.record("shipped-to-us", "kerry", ["REPEAT"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    before = check_ledger(ledger.db)
    ships = [_custody(ledger.db, "record", "shipped-to-us", "--key", ledger.key("kerry"), "--serial", "RACE",
                      "--port-of-entry", "DFW", "--waybill", f"W{n}") for n in range(4)]
    inspections = [_custody(ledger.db, "record", "inspected", "--key", ledger.key("uslab"), "--serial",
                            "REPEAT", "--result", "pass", "--site", "Lab", "--country", "US", "--report",
                            f"R{n}") for n in range(2)]
    shipped = [(p.wait(timeout=120), *p.communicate()) for p in ships]
    inspected = [(p.wait(timeout=120), *p.communicate()) for p in inspections]

    assert sorted(code for code, _, _ in shipped) == [0, 1, 1, 1], shipped
    for code, out, err in shipped:
        if code == 1:
            assert out == "" and err.count("\n") == 1 and "OUT_OF_ORDER" in err and "RACE" in err, err
    assert [code for code, _, _ in inspected] == [0, 0], inspected
    assert check_ledger(ledger.db) == before + 1 + 2
    steps = json.loads(ledger.cli("history", "REPEAT", "--json", ok=True).stdout)["steps"]
    assert [s["kind"] for s in steps] == ["fabricated", "shipped_to_us"] + ["inspected"] * 2


def _hold_write_lock(path: str, seconds: float, ready: threading.Event, release: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # the write lock, as another writer's transaction holds it
    ready.set()
    release.wait(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def test_sqlite_writer_waits_for_another_process(sqlite_ledger: Ledger) -> None:
    """A second writer on the file waits for the lock instead of failing with "database is locked"."""
    sqlite_ledger.record("fabricated", "tsmc", ["WAIT"], "--model", MODEL, "--site", "F", "--lot", "L",
                         ok=True)
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(sqlite_ledger.db, 2.0, ready, release))
    holder.start()
    ready.wait(5)
    started = time.monotonic()
    proc = _custody(sqlite_ledger.db, "record", "shipped-to-us", "--key", sqlite_ledger.key("kerry"),
                    "--serial", "WAIT", "--port-of-entry", "DFW", "--waybill", "W")
    out, err = proc.communicate(timeout=60)
    holder.join()
    assert proc.returncode == 0, err
    assert time.monotonic() - started > 1.0  # it did wait for the lock
    assert "recorded shipped-to-us for 1 unit" in out
    check_ledger(sqlite_ledger.db, caught_up=True)


def test_sqlite_lock_held_too_long_fails_clearly(sqlite_ledger: Ledger) -> None:
    """…within a bounded time (CUSTODY_LOCK_TIMEOUT), then one line and exit 2; nothing recorded."""
    sqlite_ledger.record("fabricated", "tsmc", ["LOCKED"], "--model", MODEL, "--site", "F", "--lot", "L",
                         ok=True)
    before = check_ledger(sqlite_ledger.db)
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(sqlite_ledger.db, 30.0, ready, release))
    holder.start()
    ready.wait(5)
    started = time.monotonic()
    proc = _custody(sqlite_ledger.db, "record", "shipped-to-us", "--key", sqlite_ledger.key("kerry"),
                    "--serial", "LOCKED", "--port-of-entry", "DFW", "--waybill", "W",
                    env={"CUSTODY_LOCK_TIMEOUT": "1"})
    out, err = proc.communicate(timeout=60)
    waited = time.monotonic() - started
    release.set()
    holder.join()
    assert proc.returncode == 2, err
    assert out == "" and err.count("\n") == 1
    assert "is locked by another writer" in err and sqlite_ledger.db in err and "CUSTODY_LOCK_TIMEOUT" in err
    assert 1.0 <= waited < 5.0
    assert check_ledger(sqlite_ledger.db) == before


def test_a_stale_sqlite_snapshot_is_a_lost_race(sqlite_ledger: Ledger) -> None:
    """SQLITE_BUSY_SNAPSHOT (a read transaction that then writes after another process committed) comes
    at once, without the busy wait: the store calls it a `Conflict`, which `record` retries."""
    from eventsourcing import persistence as es

    reader = sqlite3.connect(sqlite_ledger.db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM stored_events").fetchone()
    other = sqlite3.connect(sqlite_ledger.db, isolation_level=None)
    other.execute("UPDATE custody_position SET position = position + 1 WHERE id = 1")  # a real commit…
    other.execute("UPDATE custody_position SET position = position - 1 WHERE id = 1")  # …and back
    with pytest.raises(sqlite3.OperationalError) as stale:
        reader.execute("UPDATE custody_position SET position = position WHERE id = 1")
    reader.execute("ROLLBACK")
    assert stale.value.sqlite_errorcode == 517  # SQLITE_BUSY_SNAPSHOT
    wrapped = es.OperationalError(str(stale.value))
    wrapped.__cause__ = stale.value
    with Store(sqlite_ledger.db) as store:
        assert isinstance(store._error("write to", wrapped), Conflict)


def test_bad_lock_timeout_is_a_usage_error(sqlite_ledger: Ledger) -> None:
    result = sqlite_ledger.cli("verify", env={"CUSTODY_LOCK_TIMEOUT": "soon"})
    assert result.exit_code == 2
    assert "CUSTODY_LOCK_TIMEOUT" in result.stderr and result.stdout == ""


def test_a_refusal_after_a_lost_race_says_the_unit_moved_on(ledger: Ledger,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Library level: a writer whose first attempt lost the race re-runs the pre-check on the new heads."""
    ledger.record("fabricated", "tsmc", ["MOVED"], "--model", MODEL, "--site", "F", "--lot", "L", ok=True)
    carrier = _key(str(ledger.dir / "keys"), "kerry")
    data = {"port_of_entry": "DFW", "waybill": "W"}
    with Store(ledger.db) as store, Store(ledger.db) as rival:
        real_commit = append.Batch.commit
        calls = {"n": 0}

        def commit_after_a_rival(batch: append.Batch, seal: append.Seal | None = None) -> None:
            calls["n"] += 1
            if calls["n"] == 1:  # the rival ships the unit between our pre-check and our commit
                append.record(rival, carrier, "shipped_to_us", data, ["MOVED"])
            real_commit(batch, seal)

        monkeypatch.setattr(append.Batch, "commit", commit_after_a_rival)
        with pytest.raises(ViolationsFound) as refused:
            append.record(store, carrier, "shipped_to_us", data, ["MOVED"])
    assert "another writer appended first" in refused.value.detail and "OUT_OF_ORDER" in refused.value.detail
    check_ledger(ledger.db, caught_up=True)


def test_a_lost_race_is_retried_with_a_new_signature(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loser restamps `at`, re-signs on the new head and lands at the next index."""
    ledger.record("fabricated", "tsmc", ["AGAIN"], "--model", MODEL, "--site", "F", "--lot", "L", ok=True)
    ledger.record("shipped-to-us", "kerry", ["AGAIN"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    lab = _key(str(ledger.dir / "keys"), "uslab")
    data = {"result": "pass", "site": "Lab", "country": "US", "report": "R"}
    with Store(ledger.db) as store, Store(ledger.db) as rival:
        real_commit = append.Batch.commit
        seen: list[bytes] = []

        def commit_after_a_rival(batch: append.Batch, seal: append.Seal | None = None) -> None:
            seen.append(batch.statements[-1][1].hash)
            if len(seen) == 1:
                append.record(rival, lab, "inspected", data, ["AGAIN"])
            real_commit(batch, seal)

        monkeypatch.setattr(append.Batch, "commit", commit_after_a_rival)
        done = append.record(store, lab, "inspected", data, ["AGAIN"])
        links = store.unit_links("AGAIN")
    assert done.attempts == 2 and len(seen) == 3 and seen[0] != seen[2] == done.statement.hash
    assert [link["index"] for link in links][-2:] == [done.index - 1, done.index]
    assert done.statement.units[0][1] == links[-2]["hash"]  # its prev is the rival's statement
    check_ledger(ledger.db, caught_up=True)


if __name__ == "__main__":  # the driver: DB KEYDIR WRITER ROUNDS START_AT
    db_arg, keydir_arg, me_arg, rounds_arg, start_arg = sys.argv[1:6]
    print(json.dumps(writer(db_arg, keydir_arg, int(me_arg), int(rounds_arg), float(start_arg))))
