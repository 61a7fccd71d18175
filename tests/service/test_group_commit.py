"""The writer group-commits: a cycle appends everything queued and signs one checkpoint for it at once,
without waiting for `--checkpoint-every` (the timer is for other writers' growth)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ledger import keys
from ledger.append import now_us, sign_statement
from ledger.statement import ZERO_HASH
from ledger.store import Store
from tests.conftest import Ledger as Book
from tests.service.conftest import Served

STATEMENT = {"Content-Type": "application/vnd.custody.statement"}
LONG = 60.0  # a checkpoint interval no test waits for


def test_submissions_are_answered_without_waiting_for_the_interval(book: Book) -> None:
    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    wires = [sign_statement(fab, origin="custody.test/h200-cn", kind="fabricated", at=now_us(),
                            units=[(f"G{i}", ZERO_HASH)], data={"model": "H200-SXM5-141GB", "site": "F",
                                                                 "lot": "L"}).wire for i in range(24)]
    with Served(book.db, Path(book.key("operator")), checkpoint_every=LONG) as served:
        store = Store(book.db)
        try:
            before = len(store.checkpoints())
            answers: list[int] = []
            lock = threading.Lock()
            started = time.monotonic()

            def client(part: list[bytes]) -> None:
                with served.client() as http:
                    for wire in part:
                        r = http.post("/v1/statements", content=wire, headers=STATEMENT)
                        assert r.status_code == 200, r.text
                        with lock:
                            answers.append(r.json()["index"])

            threads = [threading.Thread(target=client, args=(wires[n::8],)) for n in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            assert sorted(answers) == list(range(min(answers), min(answers) + 24))
            assert elapsed < LONG / 4, f"the submissions waited {elapsed:.1f} s for the interval"
            signed = store.checkpoints()[before:]
            # one checkpoint per cycle at most, each larger than the one before: never more than submissions
            assert 1 <= len(signed) <= 24
            sizes = [size for _, size, _ in signed]
            assert sizes == sorted(set(sizes)) and sizes[-1] == max(answers) + 1
            # a cycle that appends nothing signs nothing
            time.sleep(0.3)
            assert len(store.checkpoints()) == before + len(signed)
        finally:
            store.close()


def test_growth_by_another_writer_is_signed_on_the_timer(book: Book) -> None:
    with Served(book.db, Path(book.key("operator")), checkpoint_every=0.2) as served:
        size = served.ledger.checkpoint[0] if served.ledger.checkpoint else 0
        book.record("fabricated", "tsmc", ["CLI1"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                    ok=True)
        deadline = time.monotonic() + 10
        while (served.ledger.checkpoint or (0, ""))[0] <= size:
            assert time.monotonic() < deadline, "growth by the CLI was never signed"
            time.sleep(0.05)
        assert served.ledger.checkpoint is not None and served.ledger.checkpoint[0] == size + 1


def test_a_groups_checkpoint_is_stored_in_its_transaction(book: Book) -> None:
    """The checkpoint of a group is signed and stored in the transaction that appends the group: when it
    cannot be stored, neither are the statements (nothing half-written), and the submissions hear 503;
    when it can, it covers exactly the group and is what the answers carry."""
    from ledger.errors import StoreError
    from ledger.service import submission

    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    wires = [sign_statement(fab, origin="custody.test/h200-cn", kind="fabricated", at=now_us(),
                            units=[(f"T{i}", ZERO_HASH)], data={"model": "H200-SXM5-141GB", "site": "F",
                                                                 "lot": "L"}).wire for i in range(2)]
    with Served(book.db, Path(book.key("operator")), checkpoint_every=LONG) as served, \
            served.client() as http, Store(book.db) as store:
        size, checkpoints = store.size(), len(store.checkpoints())
        real = submission.Ledger._seal

        def failing(self: submission.Ledger, batch: object, sealed: object) -> object:
            raise StoreError("the checkpoint could not be stored")

        served.ledger._seal = failing.__get__(served.ledger)  # type: ignore[method-assign]
        refused = http.post("/v1/statements", content=wires[0], headers=STATEMENT)
        assert refused.status_code == 503 and refused.json()["error"] == "unavailable", refused.text
        assert (store.size(), len(store.checkpoints())) == (size, checkpoints)  # nothing written

        served.ledger._seal = real.__get__(served.ledger)  # type: ignore[method-assign]
        for wire in wires:
            answer = http.post("/v1/statements", content=wire, headers=STATEMENT)
            assert answer.status_code == 200, answer.text
            stored = store.checkpoints()
            # one checkpoint per group, of exactly the log with it, stored with it: the one answered
            assert len(stored) == checkpoints + 1 and stored[-1][1] == store.size() == answer.json()["index"] + 1
            assert stored[-1][2] == answer.json()["checkpoint"]
            checkpoints += 1
