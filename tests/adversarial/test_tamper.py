"""Tampering with a stored ledger and with a bundle: every change to the evidence must fail `verify`.

A database administrator (or anyone with write access to the database or a copy of a bundle) edits
what is stored: flips bytes of statements, deletes, duplicates, reorders or inserts them, swaps unit
links, truncates the log. Each probe first proves the untouched ledger verifies, then tampers, then
asserts that `verify` fails (exit 1) naming the check and the log index. The byte-flip loops print
their detection rate, which must be 100 %.

The bulk loops call `verify.verify_store`/`verify_bundle` directly; a representative few go through
the CLI. Flips in statements that do not depend on each other (different unit chains, registrations
of different participants) are verified together, each one required to fail at its own index with a
statement check; a statement's validity depends only on the statements before it that it builds on
(genesis, its signer's registration, its units' previous statements), so the batch proves exactly what
one verification per flip would, at a fraction of the cost.

The builder and the table driver here are reused by `test_forgery.py`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import append, bundle, checkpoint, keys, merkle, verify
from ledger.errors import NotALedger
from ledger.keys import PrivateKey
from ledger.policy import DEFAULT_POLICY_TEXT
from ledger.statement import decode, key_id
from ledger.store import Store
from ledger.store.codec import LOG_TOPICS, UNIT_TOPICS, MsgpackTranscoder, stored_checkpoint
from tests.conftest import PG_ENV, new_postgres_schema

ORIGIN = "custody.test/tamper"
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
STEP_SECONDS = 1_000_000
STATEMENT_CHECKS = frozenset(
    {"encoding", "origin", "signature", "signer", "role", "revocation", "chain", "time", "genesis_trust"}
)
ROLES = {
    "tsmc": ("fab", "TW"),
    "kerry": ("carrier", "US"),
    "uslab": ("inspector", "US"),
    "cbp": ("customs", "US"),
    "nvidia": ("exporter", "US"),
    "alibaba": ("customer", "CN"),
    "bytedance": ("customer", "CN"),
}
_TRANSCODER = MsgpackTranscoder()


# --- building a ledger fast, through the library ---------------------------------------------------


@dataclass
class Built:
    """A ledger made by `build_ledger`: its store URL, keys, and every statement's wire form."""

    url: str
    keys: dict[str, PrivateKey]
    wires: list[bytes]
    checkpoints: list[str] = field(default_factory=list)

    @property
    def ancestors(self) -> list[set[int]]:
        return ancestors(self.wires)


def _keys() -> dict[str, PrivateKey]:
    return {name: keys.generate() for name in ["authority", "operator", "rogue", *ROLES]}


STEPS = [
    ("tsmc", "fabricated", lambda g, n, c: {"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": f"L{g}"}),
    ("kerry", "shipped_to_us", lambda g, n, c: {"port_of_entry": "DFW", "waybill": f"W{g}"}),
    (
        "uslab",
        "inspected",
        lambda g, n, c: {"result": "pass", "site": "Lab", "country": "US", "report": f"R{g}"},
    ),
    (
        "cbp",
        "duty_paid",
        lambda g, n, c: {"entry": f"E{g}", "entered_value": 2_000_000 * n, "duty": 500_000 * n},
    ),
    ("nvidia", "re_exported", lambda g, n, c: {"consignee": c, "license": "LIC", "destination": "CN"}),
    (None, "received", lambda g, n, c: {"site": "Hangzhou"}),
]


def build_ledger(
    url: str,
    *,
    groups: int,
    per_group: int = 2,
    steps: int = 6,
    participants: Sequence[str] = tuple(ROLES),
    approvals: Sequence[str] = ("alibaba", "bytedance"),
    checkpoint_sizes: Sequence[int] = (),
    signers: dict[str, PrivateKey] | None = None,
) -> Built:
    """A clean ledger: genesis, registrations, approvals, then `groups` shipments of `per_group` units
    taken through the first `steps` custody steps (one statement per step and shipment), with signed
    checkpoints stored at `checkpoint_sizes`. Written in one batch, as a busy writer would."""
    ks = signers or _keys()
    with Store(url, create=True) as store:
        append.open_ledger(
            store,
            ks["authority"],
            origin=ORIGIN,
            co_authorities=[],
            operator=ks["operator"].public,
            policy_text=DEFAULT_POLICY_TEXT,
            at=T0,
        )
        batch = append.Batch(store, clock=lambda: T0 + 10**12)
        at = T0

        def add(signer: str, kind: str, data: dict[str, Any], units: Sequence[str] = ()) -> None:
            nonlocal at
            at += STEP_SECONDS
            batch.add(
                append.sign_statement(
                    ks[signer], origin=ORIGIN, kind=kind, at=at, units=batch.heads(list(units)), data=data
                )
            )

        for name in participants:
            role, country = ROLES[name]
            add(
                "authority",
                "participant_registered",
                {
                    "id": name,
                    "name": name.upper(),
                    "country": country,
                    "roles": [role],
                    "key": ks[name].public,
                },
            )
        for number, customer in enumerate(approvals, start=1):
            add("authority", "customer_approved", {"id": customer, "cap": 10_000, "license": f"LIC-{number}"})
        for g in range(groups):
            serials = [f"U{g:04d}-{i}" for i in range(per_group)]
            customer = "alibaba" if g % 2 == 0 else "bytedance"
            for signer, kind, data in STEPS[:steps]:
                add(signer or customer, kind, data(g, per_group, customer), serials)
        batch.commit()
        wires = [event.wire for event in store.log(0)]
        notes = [store_checkpoint(store, ks["operator"], wires, size) for size in checkpoint_sizes]
    return Built(url, ks, wires, notes)


def sign_note(operator: PrivateKey, wires: Sequence[bytes], size: int, origin: str = ORIGIN) -> str:
    """The operator's signed checkpoint of the first `size` statements."""
    root = merkle.root_of([merkle.leaf_hash(w) for w in wires[:size]])
    return checkpoint.sign_checkpoint(
        checkpoint.Checkpoint(origin, size, root), origin, operator.public, operator.sign
    )


def store_checkpoint(store: Store, operator: PrivateKey, wires: Sequence[bytes], size: int) -> str:
    note = sign_note(operator, wires, size)
    version = len(store.checkpoints()) + 1
    store.write([stored_checkpoint(ORIGIN, version, size, note, datetime.now(UTC))])
    return note


def ancestors(wires: Sequence[bytes]) -> list[set[int]]:
    """For each statement, the earlier statements its validity rests on: the genesis, the registration
    of its signer's key, and (transitively) its units' previous statements."""
    registered: dict[str, int] = {}
    heads: dict[str, int] = {}
    out: list[set[int]] = []
    for index, wire in enumerate(wires):
        s = decode(wire)
        parents = {0} if index else set()
        if s.signer in registered:
            parents.add(registered[s.signer])
        parents.update(heads[serial] for serial in s.serials if serial in heads)
        closure = set(parents)
        for p in parents:
            closure |= out[p]
        out.append(closure)
        if s.kind == "participant_registered":
            registered.setdefault(key_id(s.data["key"]), index)
        for serial in s.serials:
            heads[serial] = index
    return out


def descendants(anc: Sequence[set[int]]) -> list[int]:
    counts = [0] * len(anc)
    for a in anc:
        for i in a:
            counts[i] += 1
    return counts


# --- editing the stored events as a database administrator would ------------------------------------


@dataclass(frozen=True)
class Row:
    originator_id: Any
    version: int
    topic: str
    state: bytes

    @property
    def decoded(self) -> dict[str, Any]:
        decoded: dict[str, Any] = _TRANSCODER.decode(self.state)
        return decoded


class EventTable:
    """Raw SQL on the eventsourcing events table of a store, SQLite or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.postgres = url.startswith("postgresql://")
        if self.postgres:
            import psycopg

            schema = parse_qs(urlsplit(url).query)["schema"][0]
            self._conn: Any = psycopg.connect(url.split("?")[0], autocommit=True)
            self._conn.execute(f'SET search_path TO "{schema}"')
            self._conn.execute("SET synchronous_commit TO OFF")  # a test's edits need not survive a crash
            self._mark = "%s"
        else:
            self._conn = sqlite3.connect(url, isolation_level=None)
            self._conn.execute("PRAGMA synchronous = OFF")  # a test's edits need not survive a power cut
            self._mark = "?"
        with Store(url, readonly=True) as store:
            self.table = store.recorder.events_table_name

    def close(self) -> None:
        self._conn.close()

    def _sql(self, text: str) -> str:
        return text.replace("?", self._mark)

    def execute(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._conn.execute(self._sql(text.replace("EVENTS", self.table)), tuple(params))
        return list(cursor.fetchall()) if cursor.description else []

    def rows(self, topics: Sequence[str]) -> list[Row]:
        marks = ", ".join("?" * len(topics))
        found = self.execute(
            f"SELECT originator_id, originator_version, topic, state FROM EVENTS WHERE topic IN ({marks})",
            list(topics),
        )
        return sorted(
            (Row(o, v, t, bytes(s)) for o, v, t, s in found), key=lambda r: (str(r.originator_id), r.version)
        )

    def log(self) -> list[Row]:
        return sorted(self.rows(LOG_TOPICS), key=lambda r: r.version)

    def links(self) -> list[Row]:
        return self.rows(UNIT_TOPICS)

    def set_state(self, row: Row, state: bytes) -> None:
        self.execute(
            "UPDATE EVENTS SET state = ? WHERE originator_id = ? AND originator_version = ?",
            [state, row.originator_id, row.version],
        )

    def set_wire(self, row: Row, wire: bytes) -> None:
        """What a DBA does: decode the stored state, replace the statement, encode it again."""
        self.set_state(row, _TRANSCODER.encode({**row.decoded, "wire": wire}))

    def delete(self, row: Row) -> None:
        self.execute(
            "DELETE FROM EVENTS WHERE originator_id = ? AND originator_version = ?",
            [row.originator_id, row.version],
        )

    def insert(self, originator_id: Any, version: int, topic: str, state: bytes) -> None:
        self.execute(
            "INSERT INTO EVENTS (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
            [originator_id, version, topic, state],
        )

    def shift(self, originator_id: Any, first: int, by: int) -> None:
        """Renumber versions ≥ `first` by `by`, in two steps so the primary key never collides."""
        self.execute(
            "UPDATE EVENTS SET originator_version = originator_version + ? "
            "WHERE originator_id = ? AND originator_version >= ?",
            [1_000_000, originator_id, first],
        )
        self.execute(
            "UPDATE EVENTS SET originator_version = originator_version - ? "
            "WHERE originator_id = ? AND originator_version >= ?",
            [1_000_000 - by, originator_id, first + 1_000_000],
        )


def flip(data: bytes, position: int, mask: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= mask
    return bytes(changed)


def options(**given: Any) -> verify.Options:
    """Verification as the CLI does it, now; in this process (a few hundred statements need no workers)."""
    now = append.now_us()
    return verify.Options(**{"now": now, "as_of": now, "workers": 1, **given})


def verify_url(url: str, store: Store | None = None, **given: Any) -> verify.Report:
    if store is not None:
        return verify.verify_store(store, options(**given))
    with Store(url, readonly=True) as opened:
        return verify.verify_store(opened, options(**given))


def verify_bytes(data: bytes, **given: Any) -> verify.Report:
    return verify.verify_bundle(Path("tampered.bundle"), options(**given), io.BytesIO(data))


def bundle_of(wires: Sequence[bytes], notes: Sequence[str] = (), origin: str = ORIGIN) -> bytes:
    """A bundle's bytes, written without `write_bundle`'s framing check so damaged wires go in as they are."""
    return (
        bundle.encode_header(origin)
        + b"".join(wires)
        + b"".join(msgpack.packb(note, use_bin_type=True) for note in notes)
    )


def failed(report: verify.Report) -> list[tuple[str, int | None]]:
    return [(f.check, f.index) for f in report.failures]


def assert_fails(report: verify.Report, check: str, index: int | None) -> None:
    assert not report.intact, "the tampered ledger verified"
    assert (check, index) in failed(report), failed(report)


# --- fixtures ----------------------------------------------------------------------------------------


def _url(kind: str, tmp_path: Path, name: str) -> str:
    if kind == "sqlite":
        return str(tmp_path / f"{name}.db")
    return new_postgres_schema()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres" and not os.environ.get(PG_ENV):
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    return str(request.param)


SMALL = {
    "groups": 1,
    "steps": 2,
    "participants": ("tsmc", "kerry"),
    "approvals": ("alibaba",),
    "checkpoint_sizes": [4],
}
LARGER = {"groups": 34, "checkpoint_sizes": [120, 200]}


@pytest.fixture
def small(store_kind: str, tmp_path: Path) -> Built:
    """Six statements, one of each kind that matters here: genesis, two registrations, an approval,
    a two-unit `fabricated` and its `shipped_to_us`; a stored checkpoint at 4."""
    return build_ledger(_url(store_kind, tmp_path, "small"), **SMALL)  # type: ignore[arg-type]


@pytest.fixture
def larger(store_kind: str, tmp_path: Path) -> Built:
    """214 statements: 34 two-unit shipments through all six steps; stored checkpoints at 120 and 200."""
    return build_ledger(_url(store_kind, tmp_path, "larger"), **LARGER)  # type: ignore[arg-type]


@pytest.fixture
def every_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """List every failure: the bulk loops verify many independent flips at once and need to see each."""
    monkeypatch.setattr(verify, "MAX_FAILURES", 1_000_000)


# --- byte flips: the detection rate ------------------------------------------------------------------


def framing(wire: bytes) -> set[int]:
    """Positions of a wire form's msgpack framing: the array byte, the body's bin header, the signature's.
    In a bundle a flip there can shift where the next object starts, so it is verified on its own."""
    header = {0xC4: 2, 0xC5: 3, 0xC6: 5}.get(wire[1], 1)
    return set(range(1 + header)) | {len(wire) - 66, len(wire) - 65}


def _batches(
    samples: Sequence[tuple[int, int]], anc: Sequence[set[int]], alone: Callable[[int, int], bool]
) -> Iterator[list[tuple[int, int]]]:
    """Group (statement, position) samples so that no statement in a group builds on another in it."""
    pending = list(samples)
    while pending:
        group: list[tuple[int, int]] = []
        used: set[int] = set()
        rest: list[tuple[int, int]] = []
        for index, position in pending:
            single = alone(index, position)
            independent = all(index not in anc[j] and j not in anc[index] for j in used) and index not in used
            if not group or (independent and not single and not any(alone(*g) for g in group)):
                group.append((index, position))
                used.add(index)
            else:
                rest.append((index, position))
        yield group
        pending = rest


_AT_BYTE = re.compile(r"at byte (\d+)")


def caught(
    report: verify.Report, group: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]] | None
) -> list[tuple[int, int]]:
    """The flips of `group` that `report` did not catch at their own index with a statement check (in a
    bundle, also an `encoding` failure at the tampered statement's byte offset: a damaged header can turn
    a statement into what reads as the start of the checkpoints)."""
    at_index = {f.index for f in report.failures if f.check in STATEMENT_CHECKS}
    offsets = [
        int(m.group(1))
        for f in report.failures
        if f.check == "encoding"
        for m in [_AT_BYTE.search(f.detail)]
        if m
    ]
    missed = []
    for index, position in group:
        located = spans is not None and any(spans[index][0] <= o < spans[index][1] for o in offsets)
        if index not in at_index and not located:
            missed.append((index, position))
    return missed


def flip_loop(
    wires: Sequence[bytes],
    samples: Sequence[tuple[int, int]],
    run: Callable[[dict[int, bytes]], verify.Report],
    label: str,
    *,
    bundle_spans: bool = False,
    seed: int = 8,
) -> None:
    """Flip each sampled byte (XOR with a random non-zero mask), verify, require a failure at its index."""
    assert verify.MAX_FAILURES >= 1_000_000, "use the every_failure fixture"
    rng = random.Random(seed)
    anc = ancestors(wires)
    spans: list[tuple[int, int]] | None = None
    if bundle_spans:
        start = len(bundle.encode_header(ORIGIN))
        spans = []
        for wire in wires:
            spans.append((start, start + len(wire)))
            start += len(wire)
    frames = [framing(w) for w in wires]

    def alone(index: int, position: int) -> bool:
        return bundle_spans and position in frames[index]

    missed: list[tuple[int, int]] = []
    checks: dict[str, int] = {}
    started = time.perf_counter()
    runs = 0
    for group in _batches(samples, anc, alone):
        tampered = {index: flip(wires[index], position, rng.randrange(1, 256)) for index, position in group}
        report = run(tampered)
        runs += 1
        missed += caught(report, group, spans)
        for f in report.failures:
            if f.index in tampered or f.index is None:
                checks[f.check] = checks.get(f.check, 0) + 1
    rate = 100.0 * (len(samples) - len(missed)) / len(samples)
    print(
        f"\n{label}: {len(samples)} byte flips in {len({i for i, _ in samples})} statements, "
        f"{runs} verifications, {time.perf_counter() - started:.1f} s: detected {rate:.2f} % "
        f"(failures by check: {dict(sorted(checks.items()))})"
    )
    assert not missed, f"{len(missed)} flips verified as intact or not at their index: {missed[:10]}"
    assert rate == 100.0


@contextlib.contextmanager
def store_runner(built: Built) -> Iterator[Callable[[dict[int, bytes]], verify.Report]]:
    """Write the tampered statements into their rows, verify, and put the rows back."""
    table = EventTable(built.url)
    rows = table.log()
    assert [r.decoded["wire"] for r in rows] == built.wires
    store = Store(built.url, readonly=True)

    def run(tampered: dict[int, bytes]) -> verify.Report:
        for index, wire in tampered.items():
            table.set_wire(rows[index], wire)
        try:
            return verify_url(built.url, store=store)
        finally:
            for index in tampered:
                table.set_state(rows[index], rows[index].state)

    try:
        yield run
    finally:
        store.close()
        table.close()


def bundle_runner(built: Built) -> Callable[[dict[int, bytes]], verify.Report]:
    def run(tampered: dict[int, bytes]) -> verify.Report:
        return verify_bytes(
            bundle_of([tampered.get(i, w) for i, w in enumerate(built.wires)], built.checkpoints)
        )

    return run


def every_position(wires: Sequence[bytes]) -> list[tuple[int, int]]:
    return [(i, p) for i, w in enumerate(wires) for p in range(len(w))]


def sample_positions(wires: Sequence[bytes], count: int, seed: int = 2026) -> list[tuple[int, int]]:
    return random.Random(seed).sample(every_position(wires), count)


def _kind(url: str) -> str:
    return "postgres" if url.startswith("postgresql") else "sqlite"


@pytest.mark.usefixtures("every_failure")
def test_every_byte_of_every_stored_statement_small_ledger(small: Built) -> None:
    assert verify_url(small.url).intact
    with store_runner(small) as run:
        flip_loop(small.wires, every_position(small.wires), run, f"stored ({_kind(small.url)}), every byte")
    assert verify_url(small.url).intact  # every row was put back


@pytest.mark.usefixtures("every_failure")
def test_sampled_bytes_of_a_larger_stored_ledger(larger: Built) -> None:
    assert len(larger.wires) == 214
    assert verify_url(larger.url).intact
    with store_runner(larger) as run:
        flip_loop(
            larger.wires,
            sample_positions(larger.wires, 2000),
            run,
            f"stored ({_kind(larger.url)}), random sample",
        )
    assert verify_url(larger.url).intact


@pytest.mark.usefixtures("every_failure")
def test_every_byte_of_every_statement_in_a_bundle(tmp_path: Path) -> None:
    built = build_ledger(str(tmp_path / "b.db"), **SMALL)  # type: ignore[arg-type]
    assert verify_bytes(bundle_of(built.wires, built.checkpoints)).intact
    flip_loop(
        built.wires,
        every_position(built.wires),
        bundle_runner(built),
        "bundle, every byte",
        bundle_spans=True,
    )


@pytest.mark.usefixtures("every_failure")
def test_sampled_bytes_of_a_larger_bundle(tmp_path: Path) -> None:
    built = build_ledger(str(tmp_path / "b.db"), **LARGER)  # type: ignore[arg-type]
    assert verify_bytes(bundle_of(built.wires, built.checkpoints)).intact
    flip_loop(
        built.wires,
        sample_positions(built.wires, 2000),
        bundle_runner(built),
        "bundle, random sample",
        bundle_spans=True,
    )


# --- deleting, duplicating, reordering, inserting, swapping links, truncating --------------------------
#
# The medium ledger: 0 genesis, 1–7 registrations (tsmc, kerry, uslab, cbp, nvidia, alibaba, bytedance),
# 8–9 approvals, then three shipments of two units, six steps each: 10–15, 16–21, 22–27. A checkpoint
# covers 0–15.

MEDIUM = {"groups": 3, "checkpoint_sizes": [16]}


@pytest.fixture
def medium(store_kind: str, tmp_path: Path) -> Iterator[tuple[Built, EventTable]]:
    built = build_ledger(_url(store_kind, tmp_path, "medium"), **MEDIUM)  # type: ignore[arg-type]
    assert verify_url(built.url).intact
    table = EventTable(built.url)
    yield built, table
    table.close()


def _log_row(table: EventTable, index: int) -> Row:
    return next(r for r in table.log() if r.version == index + 1)


def _links_of(table: EventTable, serial: str) -> list[Row]:
    return sorted((r for r in table.links() if r.decoded["serial"] == serial), key=lambda r: r.version)


def _delete_statement(table: EventTable, index: int, *, renumber: bool, with_links: bool = False) -> None:
    row = _log_row(table, index)
    table.delete(row)
    if with_links:
        for link in table.links():
            if link.decoded["index"] == index:
                table.delete(link)
    if renumber:
        table.shift(row.originator_id, index + 2, -1)


def _insert_statement(table: EventTable, index: int, wire: bytes) -> None:
    """Insert `wire` as log index `index`, moving every later statement one place on (as a DBA would)."""
    rows = table.log()
    table.shift(rows[0].originator_id, index + 1, 1)
    table.insert(
        rows[0].originator_id,
        index + 1,
        LOG_TOPICS[1],
        _TRANSCODER.encode({**rows[min(index, len(rows) - 1)].decoded, "wire": wire}),
    )


def _append_statement(table: EventTable, wire: bytes) -> int:
    rows = table.log()
    table.insert(
        rows[0].originator_id,
        len(rows) + 1,
        LOG_TOPICS[1],
        _TRANSCODER.encode({**rows[-1].decoded, "wire": wire}),
    )
    return len(rows)


def test_deleting_a_statement_leaves_a_gap(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    _delete_statement(table, 12, renumber=False)
    report = verify_url(built.url)
    assert_fails(report, "log_index", 12)
    assert_fails(report, "chain", 12)  # the next statement of those units no longer links


def test_deleting_a_statement_and_closing_the_gap(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    _delete_statement(table, 12, renumber=True)
    report = verify_url(built.url)
    assert_fails(report, "chain", 12)  # statement 13 moved to 12 and its prev is 12's hash
    assert "unit_links" in {c for c, _ in failed(report)}
    assert "checkpoint_root" in {c for c, _ in failed(report)}


def test_deleting_a_statement_and_its_unit_links(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    _delete_statement(table, 17, renumber=True, with_links=True)
    report = verify_url(built.url)
    assert_fails(report, "chain", 17)


def test_deleting_a_registration(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    _delete_statement(table, 2, renumber=True)  # kerry's registration: its steps lose their signer
    report = verify_url(built.url)
    assert_fails(report, "signer", 10)  # kerry's first step, 11, is now at 10
    assert "checkpoint_root" in {c for c, _ in failed(report)}


def test_deleting_the_genesis(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    _delete_statement(table, 0, renumber=True)
    report = verify_url(built.url)
    assert not report.intact
    assert failed(report), "a ledger without its genesis verified"


def test_truncating_below_a_checkpoint(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    for index in range(27, 13, -1):  # a clean cut: the statements after 13 and all their unit links
        _delete_statement(table, index, renumber=False, with_links=True)
    report = verify_url(built.url)
    assert report.log_size == 14
    assert_fails(report, "checkpoint_root", None)
    assert any("exceeds" in f.detail for f in report.failures)


def test_duplicating_a_step_at_the_end(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    at = _append_statement(table, built.wires[12])
    assert_fails(verify_url(built.url), "chain", at)


def test_duplicating_a_step_in_place(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    _insert_statement(table, 13, built.wires[12])
    report = verify_url(built.url)
    assert_fails(report, "chain", 13)
    assert "checkpoint_root" in {c for c, _ in failed(report)}


@pytest.mark.parametrize("index", [1, 8])  # a registration, an approval
def test_duplicating_an_administrative_statement_inside_a_checkpoint(
    medium: tuple[Built, EventTable], index: int
) -> None:
    built, table = medium
    _insert_statement(table, index + 1, built.wires[index])
    report = verify_url(built.url)
    assert not report.intact
    assert "checkpoint_root" in {c for c, _ in failed(report)}


@pytest.mark.parametrize("index", [1, 8])
def test_replaying_an_administrative_statement_at_the_end(
    medium: tuple[Built, EventTable], index: int
) -> None:
    built, table = medium
    at = _append_statement(table, built.wires[index])
    report = verify_url(built.url)
    assert not report.intact
    assert ("chain", at) in set(failed(report))


def test_reordering_two_steps_of_one_unit(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    table.set_wire(_log_row(table, 18), built.wires[19])
    table.set_wire(_log_row(table, 19), built.wires[18])
    report = verify_url(built.url)
    assert_fails(report, "chain", 18)
    assert "unit_links" in {c for c, _ in failed(report)}


def test_reordering_independent_statements_inside_a_checkpoint(medium: tuple[Built, EventTable]) -> None:
    built, table = medium  # two registrations: neither depends on the other, only the tree fixes their order
    table.set_wire(_log_row(table, 3), built.wires[4])
    table.set_wire(_log_row(table, 4), built.wires[3])
    assert_fails(verify_url(built.url), "checkpoint_root", None)


def test_inserting_another_ledgers_statement(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    foreign = append.sign_statement(
        built.keys["authority"],
        origin="custody.test/other",
        kind="customer_approved",
        at=T0 + 99 * STEP_SECONDS,
        units=(),
        data={"id": "alibaba", "cap": 1, "license": "X"},
    )
    at = _append_statement(table, foreign.wire)
    assert_fails(verify_url(built.url), "origin", at)


def test_inserting_a_statement_in_the_middle(medium: tuple[Built, EventTable]) -> None:
    built, table = medium  # a genuine statement of another shipment, moved into the middle
    _insert_statement(table, 20, built.wires[25])
    report = verify_url(built.url)
    assert_fails(report, "chain", 20)
    assert "unit_links" in {c for c, _ in failed(report)}


def test_swapping_two_links_of_one_unit(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    first, second = _links_of(table, "U0001-0")[1:3]
    table.set_state(first, second.state)
    table.set_state(second, first.state)
    report = verify_url(built.url)
    assert not report.intact
    assert ("unit_links", first.decoded["index"]) in failed(report)


def test_swapping_the_links_of_two_units(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    a, b = _links_of(table, "U0002-0")[3], _links_of(table, "U0002-1")[3]
    table.set_state(a, b.state)
    table.set_state(b, a.state)
    report = verify_url(built.url)
    assert not report.intact
    assert ("unit_links", a.decoded["index"]) in failed(report)


def test_editing_a_link_hash(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    link = _links_of(table, "U0000-1")[2]
    table.set_state(link, _TRANSCODER.encode({**link.decoded, "hash": bytes(32)}))
    assert_fails(verify_url(built.url), "unit_links", link.decoded["index"])


def test_deleting_a_link(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    link = _links_of(table, "U0002-1")[-1]
    table.delete(link)
    assert_fails(verify_url(built.url), "unit_links", link.decoded["index"])


def test_editing_a_stored_checkpoint(medium: tuple[Built, EventTable]) -> None:
    built, table = medium
    [row] = table.rows(["ledger.aggregates:Checkpoints.First"])
    note: str = row.decoded["note"]
    table.set_state(row, _TRANSCODER.encode({**row.decoded, "note": note.replace("\n16\n", "\n17\n")}))
    assert_fails(verify_url(built.url), "checkpoint_signature", None)


def test_tampered_views_do_not_fool_verify(medium: tuple[Built, EventTable]) -> None:
    """The materialised views are a cache for writers and reports, not evidence: verify folds the log."""
    built, table = medium
    table.execute("DELETE FROM custody_findings")
    table.execute("DELETE FROM custody_units")
    assert verify_url(built.url).intact


@pytest.mark.parametrize("what", ["genesis", "everything"])
def test_a_ledger_without_its_genesis_does_not_verify(store_kind: str, tmp_path: Path, what: str) -> None:
    built = build_ledger(_url(store_kind, tmp_path, "admin"), groups=0)
    table = EventTable(built.url)
    if what == "genesis":
        _delete_statement(table, 0, renumber=True)
    else:
        table.execute("DELETE FROM EVENTS")
    table.close()
    report = verify_url(built.url, trusted=[built.keys["authority"].public])
    assert not report.intact


# --- raw flips of the stored state: the event as eventsourcing keeps it --------------------------------


def _regions(row: Row) -> dict[str, set[int]]:
    """Byte positions of a stored log event's state by what they hold: the statement, the Merkle compact
    range (a writer's cache of the tree head), eventsourcing's timestamp, and msgpack framing and keys."""
    state = row.state
    decoded = row.decoded
    wire_at = state.index(decoded["wire"])
    regions = {
        "wire": set(range(wire_at, wire_at + len(decoded["wire"]))),
        "range": set(),
        "timestamp": set(),
    }
    search = wire_at + len(decoded["wire"])
    for node in decoded["range"]:
        at = state.index(node, search)
        regions["range"] |= set(range(at, at + len(node)))
        search = at + len(node)
    stamp = decoded["timestamp"].isoformat().encode()
    at = state.index(stamp, search)
    regions["timestamp"] = set(range(at - 3, at + len(stamp)))  # with its ext8 header: c7, length, type
    taken = set().union(*regions.values())
    regions["framing"] = set(range(len(state))) - taken
    return regions


@pytest.mark.usefixtures("every_failure")
def test_raw_flips_of_stored_log_events(small: Built) -> None:
    """Every byte of two stored events' state blobs, flipped raw (no re-encoding): a flip in the statement
    or in the msgpack framing fails at that index; only the writer's caches may change unnoticed here."""
    table = EventTable(small.url)
    store = Store(small.url, readonly=True)
    unnoticed: dict[str, int] = {}
    try:
        for index in (0, 4) if _kind(small.url) == "sqlite" else (4,):  # the blob is the same on both stores
            row = _log_row(table, index)
            regions = _regions(row)
            for region, positions in regions.items():
                for position in sorted(positions):
                    table.set_state(row, flip(row.state, position, 0xFF))
                    try:
                        report = verify_url(small.url, store=store)
                    finally:
                        table.set_state(row, row.state)
                    if region in ("wire", "framing"):
                        first = report.failures[0] if report.failures else None
                        assert first is not None and first.index == index, (region, position, failed(report))
                    elif report.intact:
                        unnoticed[region] = unnoticed.get(region, 0) + 1
    finally:
        store.close()
        table.close()
    print(f"\nraw state flips left unnoticed by verify, by region: {unnoticed}")
    assert set(unnoticed) <= {"range", "timestamp"}


def test_a_tampered_stored_tree_head_fails_verify(small: Built) -> None:
    table = EventTable(small.url)
    row = _log_row(table, 5)
    nodes = [flip(node, 0, 1) for node in row.decoded["range"]]
    table.set_state(row, _TRANSCODER.encode({**row.decoded, "range": nodes}))
    table.close()
    assert not verify_url(small.url).intact


def test_a_tampered_stored_tree_head_is_refused_by_the_operator(tmp_path: Path) -> None:
    built = build_ledger(str(tmp_path / "head.db"), **SMALL)  # type: ignore[arg-type]
    key = tmp_path / "operator"
    keys.write_keypair(tmp_path, "operator", built.keys["operator"], None, comment="operator")
    table = EventTable(built.url)
    row = _log_row(table, 5)
    table.set_state(
        row, _TRANSCODER.encode({**row.decoded, "range": [flip(n, 0, 1) for n in row.decoded["range"]]})
    )
    table.close()
    result = CliRunner().invoke(app, ["--db", built.url, "checkpoint", "--key", str(key)])
    assert result.exit_code == 1, result.stdout
    assert "tree head" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("what", ["newest statement", "checkpoint"])
def test_an_undecodable_stored_event_is_an_integrity_failure(tmp_path: Path, what: str) -> None:
    built = build_ledger(str(tmp_path / "undecodable.db"), **SMALL)  # type: ignore[arg-type]
    table = EventTable(built.url)
    row = (
        _log_row(table, 5)
        if what == "newest statement"
        else table.rows(["ledger.aggregates:Checkpoints.First"])[0]
    )
    table.set_state(row, flip(row.state, 0, 0xFF))
    table.close()
    result = CliRunner().invoke(app, ["--db", built.url, "verify"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr


# --- through the command line: what an auditor sees ---------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _one_line_failure(result: Any, check: str, index: int | None) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert ("Traceback" not in result.stderr and result.exception is None) or isinstance(
        result.exception, SystemExit
    )
    document = json.loads(result.stdout)
    assert document["intact"] is False
    assert {"check": check, "index": index} in [
        {"check": f["check"], "index": f["index"]} for f in document["failures"]
    ]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("custody: verification failed: ")


def test_cli_flipped_byte_in_the_database(ledger: Any) -> None:
    """On both stores, through `custody verify`: an auditor's view of a DBA's edit."""
    ledger.full_flow(["C1", "C2"])
    db = ledger.db
    assert _cli("--db", db, "verify", "--json").exit_code == 0
    table = EventTable(db)
    row = _log_row(table, 12)
    wire: bytes = row.decoded["wire"]
    table.set_wire(row, flip(wire, len(wire) - 10, 0x01))  # a bit of the signature
    table.close()
    _one_line_failure(_cli("--db", db, "verify", "--json"), "signature", 12)


def test_cli_deleted_row_and_swapped_links(sqlite_ledger: Any) -> None:
    sqlite_ledger.full_flow(["D1"])
    db = sqlite_ledger.db
    table = EventTable(db)
    first, second = _links_of(table, "D1")[2:4]
    table.set_state(first, second.state)
    table.set_state(second, first.state)
    _one_line_failure(_cli("--db", db, "verify", "--json"), "unit_links", first.decoded["index"])
    table.set_state(first, first.state)
    table.set_state(second, second.state)
    assert _cli("--db", db, "verify").exit_code == 0
    table.delete(_log_row(table, 11))
    table.close()
    _one_line_failure(_cli("--db", db, "verify", "--json"), "log_index", 11)


def test_cli_flipped_byte_in_an_exported_bundle(sqlite_ledger: Any, tmp_path: Path) -> None:
    sqlite_ledger.full_flow(["E1"])
    out = tmp_path / "ledger.bundle"
    result = _cli("--db", sqlite_ledger.db, "export", str(out))
    if result.exit_code != 0 and "No such command" in result.stderr:
        pytest.skip("`custody export` is not there yet")
    assert result.exit_code == 0, result.stderr
    assert _cli("verify", str(out), "--trust", sqlite_ledger.pub("authority")).exit_code == 0
    data = out.read_bytes()
    with Store(sqlite_ledger.db, readonly=True) as store:
        wire = next(e.wire for e in store.log(13, 14))
    at = data.index(wire) + len(wire) - 10  # inside the signature of statement 13
    out.write_bytes(flip(data, at, 0x01))
    _one_line_failure(_cli("verify", str(out), "--json"), "signature", 13)


# --- a bundle's statements deleted, duplicated, reordered, inserted, cut --------------------------------


@pytest.fixture(scope="module")
def medium_bundle(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build_ledger(str(tmp_path_factory.mktemp("bundle") / "m.db"), **MEDIUM)  # type: ignore[arg-type]


def _edited(built: Built, edit: Callable[[list[bytes]], None]) -> verify.Report:
    wires = list(built.wires)
    edit(wires)
    return verify_bytes(bundle_of(wires, built.checkpoints))


def test_bundle_untouched_verifies(medium_bundle: Built) -> None:
    assert verify_bytes(bundle_of(medium_bundle.wires, medium_bundle.checkpoints)).intact


@pytest.mark.parametrize(
    ("name", "edit", "check", "index"),
    [
        ("delete a step", lambda w: w.pop(13), "chain", 13),
        ("delete a registration", lambda w: w.pop(3), "signer", 11),  # uslab's first step, 12, moves to 11
        ("delete the genesis", lambda w: w.pop(0), "genesis_trust", 0),
        ("duplicate a step in place", lambda w: w.insert(14, w[13]), "chain", 14),
        ("duplicate a step at the end", lambda w: w.append(w[20]), "chain", 28),
        ("swap two steps of one unit", lambda w: w.__setitem__(slice(20, 22), [w[21], w[20]]), "chain", 20),
        ("insert a step of another shipment", lambda w: w.insert(17, w[23]), "chain", 17),
        ("cut below the checkpoint", lambda w: w.__delitem__(slice(12, None)), "checkpoint_root", None),
        (
            "swap two registrations",
            lambda w: w.__setitem__(slice(3, 5), [w[4], w[3]]),
            "checkpoint_root",
            None,
        ),
    ],
)
def test_bundle_edits(
    medium_bundle: Built, name: str, edit: Callable[[list[bytes]], None], check: str, index: int | None
) -> None:
    assert_fails(_edited(medium_bundle, edit), check, index)


def test_bundle_every_byte_outside_the_statements(medium_bundle: Built) -> None:
    """The header and the checkpoints: a flip is 'not a bundle' (exit 2) or a named failure, never a pass."""
    data = bundle_of(medium_bundle.wires, medium_bundle.checkpoints)
    header = len(bundle.encode_header(ORIGIN))
    tail = len(data) - sum(len(w) for w in medium_bundle.wires) - header
    outcomes: dict[str, int] = {}
    for position in [*range(header), *range(len(data) - tail, len(data))]:
        try:
            report = verify_bytes(flip(data, position, 0x01))
        except NotALedger:
            outcomes["not a bundle"] = outcomes.get("not a bundle", 0) + 1
            continue
        assert not report.intact, position
        outcomes[report.failures[0].check] = outcomes.get(report.failures[0].check, 0) + 1
    print(f"\nbundle header and checkpoint flips: {outcomes}")
