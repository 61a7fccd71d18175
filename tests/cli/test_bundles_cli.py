"""Bundles end to end: `custody export`, `import` and `verify BUNDLE`, on both stores.

Round trips (export → import → same root, same reports, same bytes), prefixes and their checkpoints,
every refusal of `import` (and that it writes nothing), DESIGN.md's exit split for bad bundles, and a
byte-flip sweep: no single-byte change of a bundle verifies.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
from typer.testing import CliRunner

from commands._errors import exit_status
from commands.main import app
from ledger import bundle as bundle_format
from ledger import checkpoint, keys, merkle, transfer, views
from ledger import verify as verification
from ledger.append import now_us
from ledger.errors import LedgerError, NotALedger, StoreError
from ledger.store import Store
from ledger.store.codec import LOG_TOPICS, stored_checkpoint, stored_log_event, stored_unit_link
from tests.conftest import ORIGIN, Ledger, new_postgres_schema

AS_OF = "2030-01-01"  # a fixed report time, so two verifies compare equal


# --- helpers -------------------------------------------------------------------------------------------


def _fresh_target(ledger: Ledger, name: str = "copy") -> str:
    """An empty store of the same kind as the ledger's: an absent SQLite file or a new schema."""
    if ledger.db.startswith("postgresql"):
        return new_postgres_schema()
    return str(ledger.dir / f"{name}.db")


def _cli(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, list(args))


def _export(ledger: Ledger, name: str = "out.bundle", *extra: str, db: str | None = None) -> Path:
    path = ledger.dir / name
    result = _cli(ledger.runner, "--db", db or ledger.db, "export", str(path), *extra)
    assert result.exit_code == 0, result.stderr
    return path


def _leaves(db: str) -> list[bytes]:
    with Store(db, readonly=True) as store:
        return [merkle.leaf_hash(e.wire) for e in store.log(0)]


def _sign_checkpoint(ledger: Ledger, size: int, *, cosigner: bool = False) -> str:
    """Sign the tree head at `size` with the operator key (optionally cosigned) and store the note."""
    operator = keys.load_private(Path(ledger.key("operator")), lambda: None)
    root = merkle.root_of(_leaves(ledger.db)[:size])
    note = checkpoint.sign_checkpoint(checkpoint.Checkpoint(ORIGIN, size, root), ORIGIN, operator.public,
                                      operator.sign)
    if cosigner:
        witness = keys.load_private(Path(ledger.key("rogue")), lambda: None)
        note = checkpoint.add_cosignature(note, "witness.example", witness.public, witness.sign,
                                          1_800_000_000)
    with Store(ledger.db) as store:
        version = len(store.checkpoints()) + 1
        store.write([stored_checkpoint(ORIGIN, version, size, note, datetime.now(UTC))])
    return note


def _bundle_objects(path: Path) -> tuple[str, list[bytes], list[str]]:
    with path.open("rb") as handle:
        reader = bundle_format.open_bundle(handle)
        wires = [w for _, w in reader.statements()]
        return reader.origin, wires, list(reader.checkpoints())


def _verify_json(runner: CliRunner, *args: str) -> tuple[int, dict[str, Any]]:
    result = _cli(runner, "verify", *args, "--json", "--as-of", AS_OF)
    return result.exit_code, json.loads(result.stdout)


def _size(db: str) -> int:
    with Store(db, readonly=True) as store:
        return store.size()


def _populate(ledger: Ledger) -> None:
    """Two clean shipments, a checkpoint, and a step with findings (so reports have content)."""
    ledger.full_flow(["A1", "A2", "A3"])
    _sign_checkpoint(ledger, 13)
    ledger.full_flow(["B1"], customer="bytedance")
    ledger.record("fabricated", "tsmc", ["C1"], "--model", "H200-SXM5-141GB", "--site", "Fab 18",
                  "--lot", "L2", ok=True)
    ledger.record("re-exported", "nvidia", ["C1"], "--consignee", "alibaba", "--license", "LIC-1",
                  "--destination", "CN", "--allow-violation", ok=True)


def _no_store_at(url: str) -> None:
    """Nothing was written: no SQLite file; a schema without a ledger's tables, or with empty ones."""
    if url.startswith("postgresql"):
        try:
            store = Store(url, readonly=True)
        except NotALedger:
            return
        with store:  # a failure after the tables were created: they stay, empty (an empty store still)
            assert store.size() == 0 and not store.opened and store.checkpoints() == []
    else:
        assert not any(Path(url).parent.glob(Path(url).name + "*")), url


# --- round trips ---------------------------------------------------------------------------------------


def test_round_trip_gives_the_same_root_reports_and_bytes(ledger: Ledger) -> None:
    _populate(ledger)
    size = _size(ledger.db)
    bundle = _export(ledger)
    target = _fresh_target(ledger)

    result = _cli(ledger.runner, "--db", target, "import", str(bundle))
    assert result.exit_code == 0, result.stderr
    assert f"({size})" in result.stdout and "1 checkpoint(s)" in result.stdout
    assert "compliance finding" in result.stderr  # C1 skipped the U.S.: imported anyway, and said so

    assert merkle.root_of(_leaves(target)) == merkle.root_of(_leaves(ledger.db))
    status_a, report_a = _verify_json(ledger.runner, "--db", ledger.db)
    status_b, report_b = _verify_json(ledger.runner, "--db", target)
    assert (status_a, report_a) == (status_b, report_b)
    assert status_a == 3 and report_a["intact"] and report_a["violations"] > 0
    for serial in ("A1", "B1", "C1"):
        history = [_cli(ledger.runner, "--db", db, "history", serial, "--json") for db in (ledger.db, target)]
        assert history[0].exit_code == history[1].exit_code == 0
        assert json.loads(history[0].stdout) == json.loads(history[1].stdout)
    if "report" in {c.name for c in app.registered_commands}:
        reports = [_cli(ledger.runner, "--db", db, "report", "compliance", "--json", "--until", AS_OF)
                   for db in (ledger.db, target)]
        assert reports[0].exit_code == reports[1].exit_code
        assert reports[0].stdout == reports[1].stdout
    with Store(target, readonly=True) as store:  # the import built the views
        assert views.position(store) == size
    again = _export(ledger, "again.bundle", db=target)
    assert again.read_bytes() == bundle.read_bytes()


def test_verify_bundle_reports_what_verify_database_reports(ledger: Ledger) -> None:
    _populate(ledger)
    bundle = _export(ledger)
    trust = ["--trust", ledger.pub("authority")]
    status_db, from_db = _verify_json(ledger.runner, "--db", ledger.db, *trust)
    status_bundle, from_bundle = _verify_json(ledger.runner, str(bundle), *trust)
    assert status_db == status_bundle == 3
    assert list(from_db) == list(from_bundle)  # the same fields, in the same order
    assert [c for c in from_db["checks"] if c not in ("log_index", "unit_links")] == from_bundle["checks"]
    for field in ("intact", "compliant", "log_size", "failures", "violations", "findings"):
        assert from_db[field] == from_bundle[field], field
    text_db = _cli(ledger.runner, "--db", ledger.db, "verify", *trust, "--as-of", AS_OF)
    text_bundle = _cli(ledger.runner, "verify", str(bundle), *trust, "--as-of", AS_OF)
    assert text_db.stdout.splitlines()[1:] == text_bundle.stdout.splitlines()[1:]  # all but the checks line


def test_golden_bundle_imports_and_exports_to_the_same_bytes(shared: Path, db_url: str, tmp_path: Path,
                                                             runner: CliRunner) -> None:
    golden = shared / "vectors" / "custody" / "golden.bundle"
    result = _cli(runner, "--db", db_url, "import", str(golden))
    assert result.exit_code == 0, result.stderr
    assert "(15)" in result.stdout and "2 checkpoint(s)" in result.stdout
    out = tmp_path / "copy.bundle"
    assert _cli(runner, "--db", db_url, "export", str(out)).exit_code == 0
    assert out.read_bytes() == golden.read_bytes()
    verified = _cli(runner, "--db", db_url, "verify", "--trust",
                    str(shared / "vectors" / "custody" / "authority.pub"))
    assert verified.exit_code == 0, verified.stdout


def test_import_extends_a_prefix_and_equal_is_nothing_to_do(ledger: Ledger) -> None:
    ledger.full_flow(["E1"])
    full = _export(ledger, "full.bundle")
    prefix = _export(ledger, "prefix.bundle", "--upto", "11")
    target = _fresh_target(ledger)
    assert _cli(ledger.runner, "--db", target, "import", str(prefix)).exit_code == 0
    assert _size(target) == 12
    grown = _cli(ledger.runner, "--db", target, "import", str(full))
    assert grown.exit_code == 0, grown.stderr
    assert "imported statements 12…15 (4)" in grown.stdout
    same = _cli(ledger.runner, "--db", target, "import", str(full))
    assert same.exit_code == 0 and "nothing to import" in same.stdout
    assert _export(ledger, "copy.bundle", db=target).read_bytes() == full.read_bytes()
    status, report = _verify_json(ledger.runner, "--db", target)
    # intact; as of 2030, the received unit's location attestation is overdue, nothing else is found
    assert status == 3 and report["intact"]
    assert {(f["code"], f["serial"]) for f in report["findings"]} == {("ATTESTATION_OVERDUE", "E1")}


def test_import_of_an_equal_log_stores_the_missing_checkpoints(ledger: Ledger) -> None:
    ledger.full_flow(["K1"])
    target = _fresh_target(ledger)
    assert _cli(ledger.runner, "--db", target, "import", str(_export(ledger, "bare.bundle"))).exit_code == 0
    _sign_checkpoint(ledger, 16)
    signed = _export(ledger, "signed.bundle")
    result = _cli(ledger.runner, "--db", target, "import", str(signed))
    assert result.exit_code == 0 and "stored 1 new checkpoint(s)" in result.stdout
    assert _export(ledger, "copy.bundle", db=target).read_bytes() == signed.read_bytes()
    again = _cli(ledger.runner, "--db", target, "import", str(signed))
    assert again.exit_code == 0 and "new checkpoint" not in again.stdout


# --- prefixes and checkpoints --------------------------------------------------------------------------


def test_upto_exports_a_prefix_whose_root_is_the_checkpoints(ledger: Ledger) -> None:
    ledger.full_flow(["P1", "P2"])
    note_12 = _sign_checkpoint(ledger, 12)
    _sign_checkpoint(ledger, 16)
    bundle = ledger.dir / "prefix.bundle"
    result = _cli(ledger.runner, "--db", ledger.db, "export", str(bundle), "--upto", "11")
    assert result.exit_code == 0, result.stderr
    origin, wires, notes = _bundle_objects(bundle)
    assert origin == ORIGIN and len(wires) == 12
    assert notes == [note_12]  # the size-16 checkpoint covers statements the prefix lacks
    cp = checkpoint.verify_operator(note_12, ORIGIN, keys.load_public(Path(ledger.pub("operator"))))
    root = merkle.root_of([merkle.leaf_hash(w) for w in wires])
    assert cp.size == 12 and cp.root == root
    assert root.hex() in result.stdout
    verified = _cli(ledger.runner, "verify", str(bundle), "--trust", ledger.pub("authority"))
    assert verified.exit_code == 0, verified.stdout
    assert "no checkpoint covers" not in verified.stderr


def test_upto_matches_a_checkpoint_signed_with_the_cli(ledger: Ledger) -> None:
    """`custody checkpoint` at 12 statements, more appended, `export --upto 11`: the roots agree."""
    if "checkpoint" not in {c.name for c in app.registered_commands}:
        pytest.skip("`custody checkpoint` is not built yet")
    ledger.record("fabricated", "tsmc", ["V1"], "--model", "H200-SXM5-141GB", "--site", "Fab 18",
                  "--lot", "L", ok=True)
    ledger.record("shipped-to-us", "kerry", ["V1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    note_file = ledger.dir / "cp12.txt"
    signed = ledger.cli("checkpoint", "--key", ledger.key("operator"), "--out", str(note_file))
    assert signed.exit_code == 0, signed.stderr
    ledger.full_flow(["V2"])
    bundle = _export(ledger, "prefix.bundle", "--upto", "11")
    _, wires, notes = _bundle_objects(bundle)
    note = note_file.read_text(encoding="utf-8")
    assert notes == [note] and len(wires) == 12
    cp = checkpoint.parse_note(note).checkpoint
    assert cp.size == 12 and cp.root == merkle.root_of([merkle.leaf_hash(w) for w in wires])
    full = _verify_json(ledger.runner, str(_export(ledger)), "--checkpoint", str(note_file))
    assert full[0] == 3 and full[1]["intact"]  # V1 waits at shipped_to_us: OVERDUE as of 2030
    assert "checkpoint_consistency" in full[1]["checks"]


def test_checkpoints_ascend_by_size_and_the_latest_note_of_a_size_wins(ledger: Ledger) -> None:
    ledger.full_flow(["Q1"])
    _sign_checkpoint(ledger, 16)
    plain_11 = _sign_checkpoint(ledger, 11)
    cosigned_11 = _sign_checkpoint(ledger, 11, cosigner=True)
    assert plain_11 != cosigned_11
    with Store(ledger.db, readonly=True) as store:
        assert [size for _, size, _ in store.checkpoints()] == [16, 11, 11]
        chosen = transfer.bundle_checkpoints(store, 16)
        assert [checkpoint.parse_note(n).checkpoint.size for n in chosen] == [11, 16]
        assert transfer.bundle_checkpoints(store, 16)[0] == cosigned_11
        assert transfer.bundle_checkpoints(store, 15) == [cosigned_11]
        assert transfer.bundle_checkpoints(store, 10) == []


@pytest.mark.parametrize("upto", ["10", "99"])
def test_upto_beyond_the_log_is_exit_2_and_writes_nothing(ledger: Ledger, upto: str) -> None:
    bundle = ledger.dir / "none.bundle"
    for command in ("export", "export-epcis"):
        result = _cli(ledger.runner, "--db", ledger.db, command, str(bundle), "--upto", upto)
        assert result.exit_code == 2, result.stderr
        assert "beyond the log" in result.stderr and len(result.stderr.splitlines()) == 1
        assert result.stdout == "" and not bundle.exists()
    negative = _cli(ledger.runner, "--db", ledger.db, "export", str(bundle), "--upto", "-1")
    assert negative.exit_code == 2 and not bundle.exists()


def test_export_is_written_whole_or_not_at_all(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger.full_flow(["W1"])
    bundle = ledger.dir / "kept.bundle"
    bundle.write_bytes(b"the previous bundle")

    def crash(_n: int) -> None:
        raise StoreError("the database went away")

    with Store(ledger.db, readonly=True) as store, pytest.raises(StoreError):
        transfer.export_bundle(store, bundle, progress=crash)
    assert bundle.read_bytes() == b"the previous bundle"
    assert [p.name for p in ledger.dir.iterdir() if p.name.endswith(".tmp")] == []
    missing = _cli(ledger.runner, "--db", ledger.db, "export", str(ledger.dir / "no" / "such" / "x.bundle"))
    assert missing.exit_code == 2 and missing.stdout == "" and len(missing.stderr.splitlines()) == 1
    directory = _cli(ledger.runner, "--db", ledger.db, "export", str(ledger.dir))
    assert directory.exit_code == 2


def test_export_keeps_constant_memory_by_streaming_chunks(sqlite_ledger: Ledger) -> None:
    """The log is read in chunks as the bundle is written: a chunk of 2 still gives the same bytes."""
    sqlite_ledger.full_flow(["M1"])
    whole = _export(sqlite_ledger, "whole.bundle")
    with Store(sqlite_ledger.db, readonly=True) as store:
        chunks: list[int] = []
        original = store.log

        def small_chunks(start: int = 0, stop: int | None = None, chunk: int = 2000) -> Iterator[Any]:
            chunks.append(chunk)
            return original(start, stop, chunk=2)

        store.log = small_chunks  # type: ignore[method-assign]
        transfer.export_bundle(store, sqlite_ledger.dir / "chunked.bundle")
    assert chunks and (sqlite_ledger.dir / "chunked.bundle").read_bytes() == whole.read_bytes()


def test_export_of_an_empty_store_is_exit_2(tmp_path: Path, runner: CliRunner) -> None:
    result = _cli(runner, "--db", str(tmp_path / "absent.db"), "export", str(tmp_path / "x.bundle"))
    assert result.exit_code == 2 and result.stdout == ""
    assert not (tmp_path / "absent.db").exists() and not (tmp_path / "x.bundle").exists()


# --- import refusals: nothing is written ---------------------------------------------------------------


def test_import_refuses_a_fork_and_writes_nothing(ledger: Ledger) -> None:
    ledger.full_flow(["F1"])
    full = _export(ledger, "full.bundle")
    target = _fresh_target(ledger)
    assert _cli(ledger.runner, "--db", target, "import", str(_export(ledger, "p.bundle", "--upto", "12"))
                ).exit_code == 0
    fork = Ledger(ledger.dir, target, ledger.runner)  # the copy takes another step at index 13
    fork.record("inspected", "uslab", ["F1"], "--result", "fail", "--site", "Lab", "--country", "US",
                "--report", "R9", ok=True)
    before = _export(ledger, "before.bundle", db=target).read_bytes()
    result = _cli(ledger.runner, "--db", target, "import", str(full))
    assert result.exit_code == 1, result.stderr
    assert "forks" in result.stderr and "index 13" in result.stderr and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert _export(ledger, "after.bundle", db=target).read_bytes() == before


def test_import_refuses_a_shorter_bundle_and_another_ledgers(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["S1"])
    short = _export(ledger, "short.bundle", "--upto", "3")
    result = _cli(ledger.runner, "--db", ledger.db, "import", str(short))
    assert result.exit_code == 1 and "shorter" in result.stderr and result.stdout == ""
    other = ledger.dir / "other.bundle"
    with other.open("wb") as out:  # the same statements under another header: refused before reading on
        bundle_format.write_bundle(out, "other.example/ledger", _bundle_objects(short)[1], [])
    refused = _cli(ledger.runner, "--db", ledger.db, "import", str(other))
    assert refused.exit_code == 1 and "other.example/ledger" in refused.stderr
    assert _size(ledger.db) == 16


def test_import_refuses_a_tampered_bundle_and_creates_nothing(ledger: Ledger) -> None:
    ledger.full_flow(["T1"])
    bundle = _export(ledger)
    data = bytearray(bundle.read_bytes())
    data[len(data) - 10] ^= 0x01  # inside the last statement's signature (no checkpoints here)
    bundle.write_bytes(bytes(data))
    target = _fresh_target(ledger)
    result = _cli(ledger.runner, "--db", target, "import", str(bundle))
    assert result.exit_code == 1, result.stderr
    assert result.stderr.startswith("custody: signature at index 15") and "nothing imported" in result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    _no_store_at(target)


def test_import_into_a_file_that_is_not_a_ledger_is_exit_2(ledger: Ledger) -> None:
    bundle = _export(ledger)
    junk = ledger.dir / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    result = _cli(ledger.runner, "--db", str(junk), "import", str(bundle))
    assert result.exit_code == 2 and result.stdout == ""
    assert junk.read_bytes() == b"not a database " * 100


def test_import_is_one_write_and_a_failed_write_leaves_nothing(ledger: Ledger,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The statements, unit links and checkpoints go in one transaction: a failure leaves none of them."""
    ledger.full_flow(["H1"])
    _sign_checkpoint(ledger, 16)
    full = _export(ledger, "full.bundle")
    target = _fresh_target(ledger)
    assert _cli(ledger.runner, "--db", target, "import", str(_export(ledger, "p.bundle", "--upto", "9"))
                ).exit_code == 0
    real_write = Store.write
    writes: list[int] = []

    def counting_write(self: Store, events: Any, **kwargs: Any) -> None:
        writes.append(len(events))
        real_write(self, events, **kwargs)

    monkeypatch.setattr(Store, "write", counting_write)
    probe = _fresh_target(ledger, "probe")
    transfer.import_bundle(probe, full)
    monkeypatch.undo()
    assert writes == [16 + 6 + 1]  # 16 statements, 6 unit links, 1 checkpoint: a single transaction

    def failing_write(self: Store, events: Any, **kwargs: Any) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(Store, "write", failing_write)
    with pytest.raises(StoreError):  # into the non-empty copy: it keeps its 10 statements, no checkpoint
        transfer.import_bundle(target, full)
    fresh = _fresh_target(ledger, "fresh")
    with pytest.raises(StoreError):  # into a new store: no SQLite file is left behind
        transfer.import_bundle(fresh, full)
    monkeypatch.undo()
    with Store(target, readonly=True) as store:
        assert store.size() == 10 and store.checkpoints() == []
    _no_store_at(fresh)


def test_chunks_cut_only_between_statements() -> None:
    now = datetime.now(UTC)
    events = []
    for index, units in enumerate([0, 2, 1, 7, 0]):
        events.append(stored_log_event(ORIGIN, index, b"w", [], now))
        events += [stored_unit_link(ORIGIN, f"S{index}-{u}", 1, index, bytes(32), 0, now)
                   for u in range(units)]
    events.append(stored_checkpoint(ORIGIN, 1, 5, "note", now))
    chunks = transfer._chunks(events, 4)
    assert [e for chunk in chunks for e in chunk] == events
    assert [len(c) for c in chunks] == [4, 2, 8, 2]  # 1+2+1 | 2 | 8 (one statement, over the limit) | 1+cp
    assert all(c[0].topic in LOG_TOPICS for c in chunks)
    assert transfer._chunks(events, 1000) == [events]


def test_a_large_import_commits_whole_statements_and_resumes(ledger: Ledger,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_EVENTS_PER_TRANSACTION: whole-statement transactions; a failure leaves a verified
    prefix that the next import completes."""
    ledger.full_flow(["G1", "G2"])
    _sign_checkpoint(ledger, 16)
    full = _export(ledger, "full.bundle")
    monkeypatch.setattr(transfer, "MAX_EVENTS_PER_TRANSACTION", 5)
    real_write = Store.write
    writes: list[list[str]] = []

    def spying_write(self: Store, events: Any, **kwargs: Any) -> None:
        writes.append([e.topic for e in events])
        real_write(self, events, **kwargs)

    monkeypatch.setattr(Store, "write", spying_write)
    fresh = _fresh_target(ledger, "fresh")
    transfer.import_bundle(fresh, full)
    assert len(writes) > 3 and all(topics[0] in LOG_TOPICS for topics in writes)
    assert all(len(topics) <= 5 for topics in writes)
    with_notes = [i for i, topics in enumerate(writes) if any("Checkpoints" in t for t in topics)]
    assert with_notes == [len(writes) - 1]
    assert _export(ledger, "fresh.bundle", db=fresh).read_bytes() == full.read_bytes()

    target = _fresh_target(ledger, "resumed")
    transfer.import_bundle(target, _export(ledger, "p.bundle", "--upto", "9"))
    calls = 0

    def failing_second_write(self: Store, events: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StoreError("the connection was lost")
        real_write(self, events, **kwargs)

    monkeypatch.setattr(Store, "write", failing_second_write)
    result = _cli(ledger.runner, "--db", target, "import", str(full))
    assert result.exit_code == 2 and result.stdout == ""
    assert "were imported before the failure" in result.stderr and "run the import again" in result.stderr
    monkeypatch.setattr(Store, "write", real_write)
    assert 10 < _size(target) < 16
    with Store(target, readonly=True) as store:
        assert store.checkpoints() == []
    _, report = _verify_json(ledger.runner, "--db", target)  # the prefix is a valid ledger
    assert report["intact"], report["failures"]
    again = _cli(ledger.runner, "--db", target, "import", str(full))
    assert again.exit_code == 0, again.stderr
    assert _export(ledger, "resumed.bundle", db=target).read_bytes() == full.read_bytes()


def test_the_bundle_may_not_change_between_verify_and_import(ledger: Ledger) -> None:
    ledger.full_flow(["X1"])
    bundle = _export(ledger)
    target = _fresh_target(ledger)
    plan = transfer.prepare_import(target, bundle)
    bundle.write_bytes(bundle.read_bytes() + b"\xc0")  # trailing garbage after it verified
    with pytest.raises(LedgerError, match="changed"):
        transfer.run_import(plan)
    _no_store_at(target)


# --- DESIGN.md's split: not a bundle (2), every other defect (1) ----------------------------------------


def _bad_bundles(good: bytes) -> dict[str, tuple[bytes, int]]:
    header = bundle_format.encode_header(ORIGIN)
    body = good[len(header):]
    first = msgpack.Unpacker()
    first.feed(body)
    first.skip()
    first_len = first.tell()
    return {
        "empty file": (b"", 2),
        "not msgpack": (b"\xc1\xc1 hello", 2),
        "json": (b'{"format": "custody-bundle/1"}', 2),
        "a list first": (body, 2),
        "wrong format": (msgpack.packb({"format": "other/1", "origin": ORIGIN}) + body, 2),
        "wrong format version": (msgpack.packb({"format": "custody-bundle/2", "origin": ORIGIN}) + body, 2),
        "header cut before the format": (header[:3], 2),
        "header with another key": (
            msgpack.packb({"extra": 1, "format": "custody-bundle/1", "origin": ORIGIN}) + body, 1),
        "header not canonical": (msgpack.packb({"origin": ORIGIN, "format": "custody-bundle/1"}) + body, 1),
        "header only": (header, 1),
        "truncated mid-record": (good[:len(header) + first_len + 40], 1),
        "statement of three elements": (header + msgpack.packb([b"a", b"b", b"c"]) + body, 1),
        "statement not an array": (header + msgpack.packb(7) + body, 1),
        "trailing garbage": (good + b"\xc1junk", 1),
        "trailing statement after checkpoints": (good + msgpack.packb("x") + body[:first_len], 1),
    }


def test_bad_bundles_fail_verify_and_import_with_one_line(ledger: Ledger) -> None:
    good = _export(ledger).read_bytes()
    wrong: list[str] = []
    for name, (data, status) in _bad_bundles(good).items():
        path = ledger.dir / "bad.bundle"
        path.write_bytes(data)
        checked = _cli(ledger.runner, "verify", str(path), "--json")
        if checked.exit_code != status:
            wrong.append(f"verify {name}: exit {checked.exit_code}, not {status}: {checked.stderr}")
        elif status == 2 and (checked.stdout or len(checked.stderr.splitlines()) != 1):
            wrong.append(f"verify {name}: exit 2 wants one stderr line and no stdout")
        elif status == 1 and not json.loads(checked.stdout)["failures"]:
            wrong.append(f"verify {name}: no failure named")
        target = _fresh_target(ledger, "bad")
        imported = _cli(ledger.runner, "--db", target, "import", str(path))
        lines = [ln for ln in imported.stderr.splitlines() if not ln.startswith("custody: warning")]
        if imported.exit_code != status or imported.stdout or len(lines) != 1:
            wrong.append(f"import {name}: exit {imported.exit_code}, stdout {imported.stdout!r}, "
                         f"stderr {imported.stderr!r}")
        _no_store_at(target)
    assert wrong == []


def test_import_of_a_missing_bundle_is_exit_2(tmp_path: Path, runner: CliRunner) -> None:
    result = _cli(runner, "--db", str(tmp_path / "x.db"), "import", str(tmp_path / "absent.bundle"))
    assert result.exit_code == 2 and "no bundle" in result.stderr
    assert not (tmp_path / "x.db").exists()


# --- every single-byte change is caught -----------------------------------------------------------------


def _status(path: Path) -> tuple[int, tuple[str, ...]]:
    """`custody verify`'s exit status and failing checks, computed through the library (fast)."""
    options = verification.Options(now=now_us(), as_of=now_us())
    try:
        report = verification.verify_bundle(path, options)
    except LedgerError as e:
        return exit_status(e), ()
    return (0 if report.compliant else 3) if report.intact else 1, tuple(f.check for f in report.failures)


def _flip_positions(good: bytes, sample: int, seed: int) -> list[int]:
    """Every header byte, the first bytes of every object (the msgpack framing) and a random sample."""
    header = len(bundle_format.encode_header(ORIGIN))
    starts = [header]
    unpacker = msgpack.Unpacker()
    unpacker.feed(good[header:])
    for _ in unpacker:
        starts.append(header + unpacker.tell())
    framing = {p for start in starts[:-1] for p in range(start, start + 4)}
    rng = random.Random(seed)
    return sorted(set(range(header)) | framing | set(rng.sample(range(len(good)), min(sample, len(good)))))


def test_every_byte_flip_is_detected(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """Flip bytes of a bundle (header, framing, a sample): verify never passes; exit 2 only in the header."""
    sqlite_ledger.full_flow(["Z1"])
    _sign_checkpoint(sqlite_ledger, 16)
    good = _export(sqlite_ledger).read_bytes()
    header = len(bundle_format.encode_header(ORIGIN))
    positions = _flip_positions(good, 300, seed=6)
    assert len(positions) >= 300
    path = tmp_path / "flipped.bundle"
    rng = random.Random(6)
    outcomes: dict[int, int] = {}
    wrong: list[str] = []
    for position in positions:
        data = bytearray(good)
        data[position] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(data))
        status, checks = _status(path)
        outcomes[status] = outcomes.get(status, 0) + 1
        if status == 0 or status == 3 or (status == 2 and position >= header) or (status == 1 and not checks):
            wrong.append(f"byte {position}: exit {status} {checks}")
    detected = len(positions) - outcomes.get(0, 0) - outcomes.get(3, 0)
    print(f"\nbyte flips detected: {detected}/{len(positions)} of a {len(good)}-byte bundle "
          f"({100 * detected / len(positions):.1f} %), by exit status: {outcomes}")
    assert wrong == []


def test_byte_flips_through_the_cli(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """Flipped bundles through `custody verify --json`: exit 1 naming a check, or 2 (header) with one line."""
    good = _export(sqlite_ledger).read_bytes()
    header = len(bundle_format.encode_header(ORIGIN))
    rng = random.Random(60)
    positions = rng.sample(_flip_positions(good, 100, seed=60), 80)
    path = tmp_path / "flipped.bundle"
    wrong = []
    for position in positions:
        data = bytearray(good)
        data[position] ^= rng.randrange(1, 256)
        path.write_bytes(bytes(data))
        result = _cli(sqlite_ledger.runner, "verify", str(path), "--json")
        if result.exit_code == 1:
            if not json.loads(result.stdout)["failures"] or "verification failed" not in result.stderr:
                wrong.append(f"byte {position}: exit 1 without a failure")
        elif (result.exit_code != 2 or position >= header or result.stdout
              or len(result.stderr.splitlines()) != 1):
            wrong.append(f"byte {position}: exit {result.exit_code}")
    assert wrong == []


def test_a_bundle_is_read_back_as_written(sqlite_ledger: Ledger) -> None:
    sqlite_ledger.full_flow(["R1"])
    note = _sign_checkpoint(sqlite_ledger, 16)
    origin, wires, notes = _bundle_objects(_export(sqlite_ledger))
    with Store(sqlite_ledger.db, readonly=True) as store:
        assert wires == [e.wire for e in store.log(0)]
    assert origin == ORIGIN and notes == [note]
    assert os.path.getsize(sqlite_ledger.dir / "out.bundle") == (
        len(bundle_format.encode_header(ORIGIN)) + sum(map(len, wires)) + len(msgpack.packb(note)))
