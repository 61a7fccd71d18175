"""A writer signs on a unit's head only as the log has it (issue 15, item 4), on both stores.

A participant holding the views' grants (every PostgreSQL participant: writers need UPDATE and DELETE on
them) can edit a unit's row in `custody_units`, and one holding INSERT on the events table can add rows
under a unit's id and under the log's. The next honest statement of that unit used to take its `prev`,
`at` and link version from the edited row: it was logged and then failed `chain`, `time` or `unit_links`
in `verify`. A writer must refuse instead (exit 1, naming the unit), write nothing, and leave the log as
`verify` accepts it. The service's write path (`append_signed`) and its `POST /v1/heads` are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import append, keys, verify, views
from ledger.errors import SignatureInvalid, UnitLinksInvalid, ViewsDisagree
from ledger.keys import PrivateKey
from ledger.statement import Statement, assemble, decode
from ledger.store import Store, blob, unblob
from ledger.store.codec import stored_unit_link
from tests.adversarial.test_insider_writes import NOW, ORIGIN, SECOND, T0, _clock, _insert, _ledger, _sign

# where `UnitState.to_row` puts each field
HEAD, AT, INDEX, LINKS = 1, 2, 3, 14
INSPECTED = {"result": "pass", "site": "S", "country": "US", "report": "R"}


def _shipped(url: str) -> tuple[dict[str, PrivateKey], Statement, Statement]:
    """The insider ledger, unit A fabricated (index 5) then shipped (index 6)."""
    ks = _ledger(url)
    with Store(url) as store:
        fabricated = store.unit_links("A")[0]
        done = append.record(store, ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"},
                             ["A"], at=T0 + 3 * SECOND, clock=_clock)
        first = next(iter(store.log(fabricated["index"], fabricated["index"] + 1)))
    return ks, decode(first.wire), done.statement


def _edit_unit(store: Store, serial: str, change: Callable[[list[Any]], None]) -> None:
    """What a participant with UPDATE on the views can do to a unit's row."""
    p = store.param
    row = unblob(store.query(f"SELECT row FROM custody_units WHERE serial = {p}", [serial])[0][0])
    change(row)
    with store.transaction() as cursor:
        cursor.execute(f"UPDATE custody_units SET row = {p} WHERE serial = {p}", [blob(row), serial])


def _set(**fields: Any) -> Callable[[list[Any]], None]:
    def change(row: list[Any]) -> None:
        for name, value in fields.items():
            row[{"head": HEAD, "at": AT, "index": INDEX, "links": LINKS}[name]] = value
    return change


def _intact(store: Store) -> bool:
    return verify.verify_store(store, verify.Options(now=NOW)).intact


EDITS = {
    "head pointed back at the fabricated": lambda fab, shipped: _set(head=fab.hash, at=fab.at, index=5, links=1),
    "head of random bytes": lambda fab, shipped: _set(head=bytes(range(32))),
    "at moved back before the shipment": lambda fab, shipped: _set(at=T0),
    "link count moved on": lambda fab, shipped: _set(links=7),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_unit_head_in_the_views_is_not_signed_on(db_url: str, edit: str) -> None:
    ks, fabricated, shipped = _shipped(db_url)
    with Store(db_url) as store:
        _edit_unit(store, "A", EDITS[edit](fabricated, shipped))
        size = store.size()
        with pytest.raises(ViewsDisagree) as caught:
            # `at` after the shipment's: a head moved back in time would let an earlier one through too
            append.record(store, ks["uslab"], "inspected", INSPECTED, ["A"], at=T0 + 2 * SECOND + SECOND // 2
                          if edit.startswith("at") else T0 + 4 * SECOND, clock=_clock)
        assert "unit A" in caught.value.detail and "replay --rebuild" in caught.value.detail
        assert store.size() == size  # nothing written
        assert _intact(store)


def test_a_deleted_unit_row_does_not_let_the_unit_be_fabricated_again(db_url: str) -> None:
    ks, _, _ = _shipped(db_url)
    with Store(db_url) as store:
        with store.transaction() as cursor:
            cursor.execute(f"DELETE FROM custody_units WHERE serial = {store.param}", ["A"])
        size = store.size()
        with pytest.raises(ViewsDisagree) as caught:
            append.record(store, ks["tsmc"], "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
                          ["A", "B"], at=T0 + 4 * SECOND, clock=_clock)
        assert "unit A" in caught.value.detail
        assert store.size() == size
        assert _intact(store)


def test_after_a_rebuild_the_writer_signs_on_the_logs_head(db_url: str) -> None:
    ks, _, shipped = _shipped(db_url)
    with Store(db_url) as store:
        _edit_unit(store, "A", _set(head=bytes(32)))
        views.rebuild(store, NOW, workers=1)
        done = append.record(store, ks["uslab"], "inspected", INSPECTED, ["A"], at=T0 + 4 * SECOND, clock=_clock)
        assert dict(done.statement.units)["A"] == shipped.hash
        assert _intact(store)


def _hide(store: Store, statement: Statement, serial: str, links: int) -> int:
    """An insider's out-of-band step with its unit link, hidden below the views' position, the unit's row
    pointed at it: the writer's catch-up would not check it."""
    index = _insert(store, statement)
    store.write([stored_unit_link(ORIGIN, serial, links, index, statement.hash, statement.at, datetime.now(UTC))])
    with store.transaction() as cursor:
        cursor.execute(f"UPDATE custody_position SET position = {store.param} WHERE id = 1", [index + 1])
    _edit_unit(store, serial, _set(head=statement.hash, at=statement.at, index=index, links=links))
    return index


def test_a_forged_step_hidden_below_the_views_is_not_built_on(db_url: str) -> None:
    ks, _, shipped = _shipped(db_url)
    with Store(db_url) as store:
        good = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W2"}, [("A", shipped.hash)],
                     T0 + 3 * SECOND + 1)
        index = _hide(store, assemble(good.body, bytes(64)), "A", 3)
        with pytest.raises(SignatureInvalid) as caught:
            append.record(store, ks["uslab"], "inspected", INSPECTED, ["A"], at=T0 + 4 * SECOND, clock=_clock)
        assert caught.value.index == index
        assert "the log this writer would extend does not verify" in caught.value.detail
        assert store.size() == index + 1


def test_a_step_of_another_chain_hidden_below_the_views_is_not_built_on(db_url: str) -> None:
    """A validly signed step whose `prev` is not the unit's head in the log: the links do not chain."""
    ks, fabricated, _ = _shipped(db_url)
    with Store(db_url) as store:
        fork = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W2"}, [("A", fabricated.hash)],
                     T0 + 3 * SECOND + 1)
        index = _hide(store, fork, "A", 3)
        with pytest.raises(UnitLinksInvalid) as caught:
            append.record(store, ks["uslab"], "inspected", INSPECTED, ["A"], at=T0 + 4 * SECOND, clock=_clock)
        assert caught.value.index == index and "unit A" in caught.value.detail
        assert store.size() == index + 1


def test_the_service_write_path_refuses_an_edited_head(db_url: str) -> None:
    ks, fabricated, _ = _shipped(db_url)
    with Store(db_url) as store:
        _edit_unit(store, "A", _set(head=fabricated.hash, at=fabricated.at, index=5, links=1))
        size = store.size()
        stale = _sign(ks["uslab"], "inspected", INSPECTED, [("A", fabricated.hash)], T0 + 4 * SECOND)
        out = append.append_signed(store, [(stale, "refuse")], clock=_clock)
        assert isinstance(out[0], append.Rejected) and isinstance(out[0].error, ViewsDisagree)
        assert store.size() == size
        assert _intact(store)


def test_the_command_refuses_with_exit_1_naming_the_unit(tmp_path: Path) -> None:
    url = str(tmp_path / "custody.db")
    ks, fabricated, _ = _shipped(url)
    with Store(url) as store:
        _edit_unit(store, "A", _set(head=fabricated.hash, at=fabricated.at, index=5, links=1))
        size = store.size()
    keys.write_keypair(tmp_path / "keys", "uslab", ks["uslab"], passphrase=None)
    result = CliRunner().invoke(app, ["--db", url, "record", "inspected", "--key", str(tmp_path / "keys" / "uslab"),
                                      "--serial", "A", "--result", "pass", "--site", "S", "--country", "US",
                                      "--report", "R"])
    assert result.exit_code == 1, result.output
    assert "unit A" in result.stderr and "replay --rebuild" in result.stderr
    assert result.stdout == ""
    with Store(url, readonly=True) as store:
        assert store.size() == size


def test_an_honest_ledger_still_verifies_after_many_writes(db_url: str) -> None:
    """The check refuses what differs, not what is merely new: steps in several statements and units."""
    ks, _, shipped = _shipped(db_url)
    with Store(db_url) as store:
        append.record(store, ks["tsmc"], "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
                      ["B", "C"], at=T0 + 4 * SECOND, clock=_clock)
        append.record(store, ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W2"},
                      ["B"], at=T0 + 5 * SECOND, clock=_clock)
        done = append.record(store, ks["uslab"], "inspected", INSPECTED, ["A", "B", "C"], at=T0 + 6 * SECOND,
                             clock=_clock, mode="allow")
        assert dict(done.statement.units)["A"] == shipped.hash
        assert _intact(store)


def test_a_later_step_logged_without_its_unit_links_is_named_as_such(db_url: str) -> None:
    """Further along a chain (the writer reads it from the link before its view's head on), a step whose
    links are missing is still told apart from an edited view: `unit_links` at its index."""
    ks, _, shipped = _shipped(db_url)
    with Store(db_url) as store:
        again = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W2"},
                      [("A", shipped.hash)], T0 + 3 * SECOND + 1)
        index = _insert(store, again)  # the log event only: the catch-up folds it into the views
        with pytest.raises(UnitLinksInvalid) as caught:
            append.record(store, ks["uslab"], "inspected", INSPECTED, ["A"], at=T0 + 4 * SECOND, clock=_clock)
        assert caught.value.index == index and "links end before it" in caught.value.detail
        assert store.size() == index + 1


def _ship_in_a_batch(store: Store, ks: dict[str, PrivateKey]) -> append.Batch:
    """Unit B fabricated and shipped through one batch, committed: a bulk writer's first batch."""
    batch = append.Batch(store, _clock)
    fabricated = _sign(ks["tsmc"], "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
                       batch.heads(["B"]), T0 + 3 * SECOND)
    batch.add(fabricated)
    batch.add(_sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"}, batch.heads(["B"]),
                    T0 + 3 * SECOND + 1))
    batch.commit()
    return batch


def test_a_batch_after_another_trusts_only_the_heads_it_appended(db_url: str, monkeypatch: Any) -> None:
    """A bulk append that starts a fresh batch (`after=`) reads no log for the heads the batch before
    appended (their view rows say what it wrote), and reads it for every other unit."""
    ks, _, _ = _shipped(db_url)
    with Store(db_url) as store:
        first = _ship_in_a_batch(store, ks)
        asked: list[str] = []
        units_rows = store.units_rows
        monkeypatch.setattr(store, "units_rows", lambda serials, first_version: (
            asked.extend(serials), units_rows(serials, first_version))[1])
        after = append.Batch(store, _clock, after=first)
        after.heads(["A", "B"])
        assert asked == ["A"]
        asked.clear()
        append.Batch(store, _clock).heads(["B"])  # a batch on its own checks every unit
        assert asked == ["B"]


def test_a_head_edited_between_two_batches_is_not_signed_on(db_url: str) -> None:
    ks, _, _ = _shipped(db_url)
    with Store(db_url) as store:
        first = _ship_in_a_batch(store, ks)
        _edit_unit(store, "B", _set(head=bytes(range(32))))
        with pytest.raises(ViewsDisagree) as caught:
            append.Batch(store, _clock, after=first).heads(["B"])
        assert "unit B" in caught.value.detail
