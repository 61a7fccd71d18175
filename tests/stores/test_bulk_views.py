"""Bulk appends write the view rows in one statement per table (an upsert or a COPY on PostgreSQL, a row
at a time on SQLite): rows updated across commits come out byte for byte as a rebuild, and alike on both
stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import append, keys, views
from ledger.statement import Statement
from ledger.store import Store, blob, unblob
from tests.cli.test_replay import view_rows
from tests.conftest import _postgres_url, drop_postgres_schema, new_postgres_schema
from tests.stores.test_concurrency import check_ledger

ORIGIN = "custody.test/bulk"
AT = 1_700_000_000_000_000
PARTICIPANTS = {"tsmc": ("fab", "TW"), "kerry": ("carrier", "US"), "uslab": ("inspector", "US"),
                "cbp": ("customs", "US"), "nvidia": ("exporter", "US"), "alibaba": ("customer", "CN")}
KEYS = {name: keys.from_seed(bytes([n + 1]) * 32)
        for n, name in enumerate(["authority", "operator", *PARTICIPANTS])}
SIGNER = {"fabricated": "tsmc", "shipped_to_us": "kerry", "inspected": "uslab", "duty_paid": "cbp",
          "re_exported": "nvidia", "received": "alibaba"}


def _sign(batch: append.Batch, kind: str, serials: list[str], data: dict[str, Any], at: int) -> Statement:
    return append.sign_statement(KEYS[SIGNER[kind]], origin=ORIGIN, kind=kind, at=at,
                                 units=batch.heads(serials), data=data)


def build(url: str) -> None:
    """Units taken through the steps in several bulk commits: each commit after the first rewrites unit rows
    the one before wrote; some units are re-exported without duty paid (findings)."""
    with Store(url, create=True) as store:
        append.open_ledger(store, KEYS["authority"], origin=ORIGIN, co_authorities=(),
                           operator=KEYS["operator"].public, policy_text=_policy(), at=AT)
        batch = append.Batch(store)
        for pid, (role, country) in PARTICIPANTS.items():
            batch.add(append.sign_statement(KEYS["authority"], origin=ORIGIN, kind="participant_registered",
                                            at=AT, units=(), data={"id": pid, "name": pid, "country": country,
                                                                   "roles": [role], "key": KEYS[pid].public}))
        batch.add(append.sign_statement(KEYS["authority"], origin=ORIGIN, kind="customer_approved", at=AT,
                                        units=(), data={"id": "alibaba", "cap": 10**9, "license": "LIC-1"}))
        batch.commit()
        serials = [f"B{i:04d}" for i in range(48)]
        at = AT + 1_000_000
        batch = append.Batch(store)
        for start in range(0, 48, 8):
            batch.add(_sign(batch, "fabricated", serials[start:start + 8],
                            {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": f"L{start}"}, at))
            if start == 16:
                batch.commit()  # the next fabrications land in a second commit
        batch.commit()
        steps: list[tuple[str, list[str], dict[str, Any]]] = [
            ("shipped_to_us", serials[:40], {"port_of_entry": "DFW", "waybill": "W-1"}),
            ("inspected", serials[:40], {"result": "pass", "site": "Lab", "country": "US", "report": "R-1"}),
            ("duty_paid", serials[:24], {"entry": "E-1", "entered_value": 24 * 2_000_000, "duty": 12_000_000}),
            ("re_exported", serials[:32], {"consignee": "alibaba", "license": "LIC-1", "destination": "CN"}),
            ("received", serials[:8], {"site": "Hangzhou"}),
        ]
        for n, (kind, chosen, data) in enumerate(steps):
            at += 1_000_000
            if n % 2 == 0:
                batch = append.Batch(store)
            batch.add(_sign(batch, kind, chosen, data, at))
            if n % 2 == 1 or n == len(steps) - 1:
                batch.commit()


def _policy() -> str:
    from ledger.policy import default_policy
    return default_policy().source


def test_bulk_view_rows_equal_a_rebuild(db_url: str) -> None:
    build(db_url)
    size = check_ledger(db_url, caught_up=True)
    written = view_rows(db_url)
    assert written["custody_findings"], "the scenario should leave findings"
    assert len(written["custody_signed"]) == size
    with Store(db_url) as store:
        views.rebuild(store, append.now_us())
    assert view_rows(db_url) == written


def test_bulk_view_rows_alike_on_both_stores(tmp_path: Path) -> None:
    if not _postgres_url():
        pytest.skip("needs PostgreSQL (CUSTODY_TEST_PG)")
    sqlite = str(tmp_path / "custody.db")
    postgres = new_postgres_schema()
    try:
        build(sqlite)
        build(postgres)
        assert view_rows(postgres) == view_rows(sqlite)
    finally:
        drop_postgres_schema(postgres)


ROW_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=40) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ROW_VALUES, max_size=17))
def test_view_rows_are_plain_msgpack(row: list[Any]) -> None:
    """Rows are written with msgspec's encoder, read with msgpack's: the bytes are msgpack's own."""
    assert blob(row) == msgpack.packb(row, use_bin_type=True)
    assert unblob(blob(row)) == row
