"""A checkpoint another process stored is served only once the tiles hold the log it covers: an answer's
inclusion proof is taken in it (`test_scale_out` once answered 500 when this raced)."""

from __future__ import annotations

from pathlib import Path

from ledger import append, keys, tree_head
from ledger.service.app import Service
from ledger.service.submission import Covered, Ledger
from ledger.store import Store
from tests.conftest import Ledger as Book

DATA = {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"}


def test_a_checkpoint_stored_elsewhere_is_adopted_with_the_tiles_it_needs(book: Book) -> None:
    operator = keys.load_private(Path(book.key("operator")), lambda: None)
    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    ledger = Ledger(book.db, operator, checkpoint_every=60.0)  # its tiles hold the log as it is now
    try:
        held = ledger.tiles.size
        with Store(book.db) as rival:  # another process appends and signs, after the writer's tiles look
            done = append.record(rival, fab, "fabricated", DATA, ["RIVAL1"])
            signed = tree_head.sign_tree_head(rival, operator)
        assert signed.checkpoint.size == held + 1 == done.index + 1
        ledger._load_checkpoints(ledger.writer)  # the writer's look at the checkpoints, next
        assert ledger.checkpoint is not None and ledger.checkpoint[0] == held + 1
        assert ledger.tiles.size >= ledger.checkpoint[0]
        size, note = ledger.checkpoint
        answer = Service(ledger).answer(Covered(done.index, done.statement, size, note))
        assert answer["index"] == done.index and answer["checkpoint"] == note
    finally:
        ledger.close()
