"""Two `custody serve` processes on one PostgreSQL database, clients spread over both: no fork, no gap,
one checkpoint sequence."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import checkpoint as notes
from ledger import keys
from ledger.append import now_us, sign_statement
from ledger.service import client as remote
from ledger.statement import ZERO_HASH, decode
from ledger.store import Store
from tests.conftest import PG_ENV, drop_postgres_schema, new_postgres_schema, open_ledger
from tests.stores.test_concurrency import CUSTODY

CLIENTS, EACH = 8, 12  # threads, and the new units each fabricates (then ships, one shared unit too)


def _serve(db: str, operator: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    """A `custody serve` subprocess on a free port; its stderr goes to `log` (named when a test fails)."""
    with log.open("w") as err:
        proc = subprocess.Popen([CUSTODY, "--db", db, "serve", "--operator-key", operator, "--port", "0",
                                 "--checkpoint-every", "0.1"], stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = time.monotonic() + 30
    while not (found := re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, found.group(1)


@pytest.mark.postgres
def test_two_processes_on_one_database_keep_one_log(tmp_path: Path) -> None:
    if not os.environ.get(PG_ENV):
        pytest.skip(f"needs {PG_ENV}")
    db = new_postgres_schema()
    servers: list[subprocess.Popen[str]] = []
    try:
        book = open_ledger(tmp_path, db, CliRunner())
        urls = []
        logs = [tmp_path / f"serve-{n}.log" for n in range(2)]
        for log in logs:
            proc, url = _serve(db, book.key("operator"), log)
            servers.append(proc)
            urls.append(url)
        fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
        carrier = keys.load_private(Path(book.key("kerry")), lambda: None)
        answered: list[tuple[int, str]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            try:
                with remote.connect(urls[n % 2]) as service:
                    for i in range(EACH):
                        serial = f"X{n}-{i}"
                        done = remote.record(service, fab, "fabricated",
                                             {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"}, [serial])
                        with lock:
                            answered.append((done.index, done.statement.hash.hex()))
                    # every client ships the one shared unit: one wins, the others are refused (chain)
                    try:
                        done = remote.record(service, carrier, "shipped_to_us",
                                             {"port_of_entry": "DFW", "waybill": f"W{n}"}, ["SHARED"])
                        with lock:
                            answered.append((done.index, done.statement.hash.hex()))
                    except remote.LedgerError as e:
                        assert "chain" in str(e) or "OUT_OF_ORDER" in str(e), e
            except BaseException as e:
                errors.append(e)

        shared = sign_statement(fab, origin="custody.test/h200-cn", kind="fabricated", at=now_us(),
                                units=[("SHARED", ZERO_HASH)],
                                data={"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})
        with remote.connect(urls[0]) as service:
            first = service.submit(shared)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, (errors, [log.read_text()[-2000:] for log in logs])
        indices = sorted(i for i, _ in answered)
        assert len(indices) == len(set(indices)) == CLIENTS * EACH + 1  # no index given twice: no fork
        assert indices == list(range(first["index"] + 1, first["index"] + 2 + CLIENTS * EACH))  # no gap
        with Store(db) as store:
            size = store.size()
            assert size == first["index"] + 2 + CLIENTS * EACH
            by_index = {e.index: e.wire for e in store.log()}
            for index, digest in answered:  # each answer names the statement the log holds there
                assert decode(by_index[index]).hash.hex() == digest
            stored = store.checkpoints()
        sizes = [s for _, s, _ in stored]
        assert sizes == sorted(set(sizes)), sizes  # one sequence, strictly growing: one signer per size
        # both processes serve the same, final checkpoint once they have caught up
        deadline = time.monotonic() + 30
        while True:
            served = [httpx.get(f"{u}/checkpoint").text for u in urls]
            if served[0] == served[1] and notes.parse_note(served[0]).checkpoint.size == size:
                break
            assert time.monotonic() < deadline, served
            time.sleep(0.1)
        verified = CliRunner().invoke(app, ["--db", db, "verify", "--json"])
        assert verified.exit_code in (0, 3), verified.stdout
        assert '"intact": true' in verified.stdout
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGINT)
        for proc in servers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_postgres_schema(db)
