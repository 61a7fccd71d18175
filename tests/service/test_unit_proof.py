"""`GET /v1/units/{serial}/proof` reads the unit's rows, not the whole log, and answers what `prove` does."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger import keys
from ledger.append import now_us, sign_statement
from ledger.proof import build_proof
from ledger.statement import ZERO_HASH
from ledger.store import Store
from ledger.store.base import LogEvent
from tests.conftest import Ledger as Book
from tests.service.conftest import Served

STATEMENT = {"Content-Type": "application/vnd.custody.statement"}
OTHERS = 80  # other units in the log


def test_a_unit_proof_reads_only_the_units_statements(served: Served, book: Book,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    data = {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"}
    with served.client() as http:
        for i in range(OTHERS):
            wire = sign_statement(fab, origin="custody.test/h200-cn", kind="fabricated", at=now_us(),
                                  units=[(f"P{i:03d}", ZERO_HASH)], data=data).wire
            assert http.post("/v1/statements", content=wire, headers=STATEMENT).status_code == 200
        size = int(http.post("/v1/heads", json={"serials": []}).json()["log_size"])
        assert size > OTHERS

        read: list[int] = []
        original = Store.log

        def counted(self: Store, *args: Any, **kwargs: Any) -> Iterator[LogEvent]:
            for event in original(self, *args, **kwargs):
                read.append(event.index)
                yield event

        monkeypatch.setattr(Store, "log", counted)
        answer = http.get("/v1/units/P040/proof")
        monkeypatch.undo()
        assert answer.status_code == 200, answer.text
        # the genesis (the ledger's identity) and the unit's one statement, each read once: not the log
        assert sorted(read) == [0, size - OTHERS + 40], read

    time.sleep(0.2)
    with Store(book.db) as store:  # what `prove` builds from the database, against the same checkpoint
        assert answer.content == build_proof(store, "P040", now_us=now_us()).encode()
