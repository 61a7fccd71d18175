"""SIGKILL in the middle of a large statement, on both stores: all of it or none of it, the ledger still
verifies, readers see a consistent state at once and the views catch up with the next writer."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from ledger import views
from ledger.statement import decode
from ledger.store import Store
from tests.conftest import Ledger
from tests.stores.test_concurrency import CUSTODY, check_ledger, verify_json

UNITS = 5000
KILL_AT = (0.5, 0.85)  # fractions of an uninterrupted run's wall time


def _start(ledger: Ledger, tmp_path: Path, tag: str) -> subprocess.Popen[str]:
    serials = tmp_path / f"{tag}.txt"
    serials.write_text("# a whole shipment\n" + "".join(f"{tag}-{i:05d}\n" for i in range(UNITS)))
    return subprocess.Popen([CUSTODY, "--db", ledger.db, "record", "fabricated", "--key", ledger.key("tsmc"),
                             "--serials-file", str(serials), "--model", "H200-SXM5-141GB", "--site", "Fab 18",
                             "--lot", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _recorded(db: str, tag: str) -> list[int]:
    """How many of the shipment's units each statement naming any of them holds."""
    with Store(db, readonly=True) as store:
        counts = []
        for event in store.log():
            mine = sum(serial.startswith(f"{tag}-") for serial in decode(event.wire).serials)
            if mine:
                counts.append(mine)
        return counts


def _size(db: str) -> int:
    with Store(db, readonly=True) as store:
        return store.size()


def test_sigkill_mid_batch_leaves_all_or_nothing(ledger: Ledger, tmp_path: Path) -> None:
    started = time.monotonic()
    proc = _start(ledger, tmp_path, "FULL")
    _, err = proc.communicate(timeout=120)
    duration = time.monotonic() - started
    assert proc.returncode == 0, err
    assert sum(_recorded(ledger.db, "FULL")) == UNITS  # in several statements (65,535 bytes each), one transaction

    outcomes = []
    for n, fraction in enumerate(KILL_AT):
        tag = f"KILL{n}"
        before = _size(ledger.db)
        proc = _start(ledger, tmp_path, tag)
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        recorded = _recorded(ledger.db, tag)
        assert sum(recorded) in (0, UNITS), f"killed at {fraction:.0%}: a partial shipment {recorded}"
        assert _size(ledger.db) == before + len(recorded)
        outcomes.append((fraction, proc.returncode, bool(recorded)))

    # killed right after its events committed, before its views were saved: the views lag the log
    before = check_ledger(ledger.db)
    with Store(ledger.db, readonly=True) as watcher:
        proc = _start(ledger, tmp_path, "LAG")
        while proc.poll() is None and watcher.size() == before:
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    recorded = _recorded(ledger.db, "LAG")
    assert sum(recorded) == UNITS
    # readers fold what the views lack: the same state as a fold of the whole log (checked inside)
    assert check_ledger(ledger.db) == before + len(recorded)
    with Store(ledger.db, readonly=True) as store:
        lagging = views.position(store) < store.size()

    report = verify_json(ledger.db)
    assert report["intact"] and report["failures"] == []
    compliance = subprocess.run([CUSTODY, "--db", ledger.db, "report", "compliance", "--json"],
                                capture_output=True, text=True, timeout=60)
    assert compliance.returncode == 0, compliance.stderr
    reported = json.loads(compliance.stdout)
    assert reported["log_size"] == report["log_size"]
    assert sorted((f["code"], f["serial"], f["index"]) for f in reported["findings"]) == \
        sorted((f["code"], f["serial"], f["index"]) for f in report["findings"])

    # the next writer catches the views up
    ledger.record("shipped-to-us", "kerry", ["LAG-00000"], "--port-of-entry", "DFW", "--waybill", "W",
                  ok=True)
    check_ledger(ledger.db, caught_up=True)
    print(f"\nuninterrupted {duration:.2f} s; killed at (fraction, status, recorded): {outcomes}; "
          f"views lagged after the last kill: {lagging}")
