"""A writer never signs on top of a log it has not checked (issue 15, item 4), on both stores.

A participant holding the INSERT grant can put rows into the log that no writer checked, and one holding
the views' grants can edit the views. Three attacks that used to work: an out-of-band self-registration
that lets a carrier sign `fabricated`; an out-of-band step with a bad signature that the next honest step
of that unit would have been chained to; an edited `custody_authority` row that lets a non-authority
approve a customer. Each writer must refuse (an `IntegrityError`, exit 1, naming the check and index)
and write nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import append, keys, merkle, views
from ledger.errors import RoleMissing, SignatureInvalid, UnitLinksInvalid
from ledger.keys import PrivateKey
from ledger.policy import DEFAULT_POLICY_TEXT
from ledger.statement import Statement, assemble
from ledger.store import Store, blob, unblob
from ledger.store.codec import stored_log_event, stored_unit_link

ORIGIN = "custody.test/insider"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
SECOND = 1_000_000
NOW = T0 + 3_600 * SECOND
ROLES = {"tsmc": ("fab", "TW"), "kerry": ("carrier", "US"), "uslab": ("inspector", "US"),
         "nvidia": ("exporter", "US")}


def _clock() -> int:
    return NOW


def _keys() -> dict[str, PrivateKey]:
    return {name: keys.from_seed(bytes([n + 1]) * 32)
            for n, name in enumerate(["authority", "operator", *ROLES])}


def _ledger(url: str) -> dict[str, PrivateKey]:
    """Genesis, four participants, one unit fabricated."""
    ks = _keys()
    with Store(url, create=True) as store:
        append.open_ledger(store, ks["authority"], origin=ORIGIN, co_authorities=[],
                           operator=ks["operator"].public, policy_text=DEFAULT_POLICY_TEXT, at=T0)
        for name, (role, country) in ROLES.items():
            append.record(store, ks["authority"], "participant_registered",
                          {"id": name, "name": name, "country": country, "roles": [role],
                           "key": ks[name].public}, at=T0 + SECOND, clock=_clock)
        append.record(store, ks["tsmc"], "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
                      ["A"], at=T0 + 2 * SECOND, clock=_clock)
    return ks


def _insert(store: Store, statement: Statement, *, links: bool = False) -> int:
    """What a participant with INSERT on the events table can do: the next log event, no writer involved;
    with `links`, its units' chain links too, in the same transaction, as a writer stores them."""
    head = store.head()
    assert head is not None
    size = head.index + 1
    compact = merkle.CompactRange(size, tuple(head.range)).append(merkle.leaf_hash(statement.wire))
    now = datetime.now(UTC)
    events = [stored_log_event(ORIGIN, size, statement.wire, list(compact.hashes), now)]
    if links:
        events += [stored_unit_link(ORIGIN, serial, len(store.unit_links(serial)) + 1, size, statement.hash,
                                    statement.at, now) for serial in statement.serials]
    store.write(events)
    return size


def _sign(key: PrivateKey, kind: str, data: dict[str, Any], units: list[tuple[str, bytes]], at: int) -> Statement:
    return append.sign_statement(key, origin=ORIGIN, kind=kind, at=at, units=units, data=data)


def _head(store: Store, serial: str) -> bytes:
    head: bytes = store.unit_links(serial)[-1]["hash"]
    return head


def test_an_out_of_band_self_registration_does_not_let_a_carrier_sign_fabricated(db_url: str) -> None:
    ks = _ledger(db_url)
    with Store(db_url) as store:
        forged = _sign(ks["kerry"], "participant_registered",
                       {"id": "kerry", "name": "kerry", "country": "US", "roles": ["carrier", "fab"],
                        "key": ks["kerry"].public}, [], T0 + 3 * SECOND)
        index = _insert(store, forged)
        with pytest.raises(RoleMissing) as caught:
            append.record(store, ks["kerry"], "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
                          ["B"], at=T0 + 4 * SECOND, clock=_clock, mode="allow")  # as --allow-violation
        assert caught.value.index == index
        assert store.size() == index + 1  # nothing written
        assert views.position(store) == index  # the views did not take the forged registration in


def test_an_out_of_band_step_with_a_bad_signature_is_not_built_on(db_url: str) -> None:
    ks = _ledger(db_url)
    with Store(db_url) as store:
        good = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"},
                     [("A", _head(store, "A"))], T0 + 3 * SECOND)
        forged = assemble(good.body, bytes(64))  # a signature no key made
        index = _insert(store, forged)
        with pytest.raises(SignatureInvalid) as caught:
            append.record(store, ks["uslab"], "inspected",
                          {"result": "pass", "site": "S", "country": "US", "report": "R"}, ["A"],
                          at=T0 + 4 * SECOND, clock=_clock)
        assert caught.value.index == index
        assert store.size() == index + 1


def test_an_edited_authority_row_does_not_make_an_authority(db_url: str) -> None:
    ks = _ledger(db_url)
    with Store(db_url) as store:
        row = unblob(store.query("SELECT row FROM custody_authority WHERE id = 1")[0][0])
        kid = ks["nvidia"].key_id
        row[4][kid][2] = True  # KeyInfo.authority: what a participant with UPDATE on the views can do
        with store.transaction() as cursor:
            cursor.execute(f"UPDATE custody_authority SET row = {store.param} WHERE id = 1", [blob(row)])
        size = store.size()
        with pytest.raises(RoleMissing):
            append.record(store, ks["nvidia"], "customer_approved", {"id": "alibaba", "cap": 5, "license": "L"},
                          at=T0 + 3 * SECOND, clock=_clock)
        assert store.size() == size


def test_the_command_refuses_with_exit_1_naming_the_failure(tmp_path: Path) -> None:
    url = str(tmp_path / "custody.db")
    ks = _ledger(url)
    with Store(url) as store:
        good = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"},
                     [("A", _head(store, "A"))], T0 + 3 * SECOND)
        index = _insert(store, assemble(good.body, bytes(64)))
    keys.write_keypair(tmp_path / "keys", "uslab", ks["uslab"], passphrase=None)
    result = CliRunner().invoke(app, ["--db", url, "record", "inspected", "--key", str(tmp_path / "keys" / "uslab"),
                                      "--serial", "A", "--result", "pass", "--site", "S", "--country", "US",
                                      "--report", "R"])
    assert result.exit_code == 1, result.output
    assert "signature" in result.stderr and f"index {index}" in result.stderr
    assert result.stdout == ""
    with Store(url, readonly=True) as store:
        assert store.size() == index + 1


def test_an_honest_log_is_still_extended(db_url: str) -> None:
    """The checks refuse what is wrong, not what is merely new: a statement appended by another writer
    without catching the views up (a crash between the two transactions) is checked and built on."""
    ks = _ledger(db_url)
    with Store(db_url) as store:
        shipped = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"},
                        [("A", _head(store, "A"))], T0 + 3 * SECOND)
        index = _insert(store, shipped, links=True)
        done = append.record(store, ks["uslab"], "inspected",
                             {"result": "pass", "site": "S", "country": "US", "report": "R"}, ["A"],
                             at=T0 + 4 * SECOND, clock=_clock)
        assert done.index == index + 1
        assert dict(done.statement.units)["A"] == shipped.hash


def test_a_step_logged_without_its_unit_links_is_not_built_on(db_url: str) -> None:
    """A log event of a step whose unit links are missing (an insider's INSERT): the log does not verify
    (`unit_links`), so the next step of that unit is refused, naming the unit and the index."""
    ks = _ledger(db_url)
    with Store(db_url) as store:
        shipped = _sign(ks["kerry"], "shipped_to_us", {"port_of_entry": "DFW", "waybill": "W"},
                        [("A", _head(store, "A"))], T0 + 3 * SECOND)
        index = _insert(store, shipped)
        with pytest.raises(UnitLinksInvalid) as caught:
            append.record(store, ks["uslab"], "inspected",
                          {"result": "pass", "site": "S", "country": "US", "report": "R"}, ["A"],
                          at=T0 + 4 * SECOND, clock=_clock)
        assert caught.value.index == index and "unit A" in caught.value.detail
        assert store.size() == index + 1
