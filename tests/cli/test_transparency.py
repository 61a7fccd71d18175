"""Transparency end to end: checkpoints, witnesses, per-unit proofs, and the tampering they catch.

Tampering is done the way an insider with database access would: rows deleted from `stored_events`
(the newest statements dropped) and a ledger whose old statement and the rest of its unit's chain were
rewritten and re-signed with the same keys, so that every statement still verifies on its own. Only a
checkpoint signed before the rewrite tells the difference.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commands.main import app
from ledger import checkpoint as notes
from ledger import files, keys, tree_head
from ledger import proof as proofs
from ledger.append import Batch, sign_statement
from ledger.errors import BadInput, IntegrityError, LedgerError, NotALedger
from ledger.statement import decode, key_id
from ledger.store import Store
from ledger.store.codec import stored_checkpoint
from tests.conftest import PG_ENV, ROOT, Ledger, new_postgres_schema

MODEL = ("--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1")


# --- helpers ------------------------------------------------------------------------------------------


def private(ledger: Ledger, name: str) -> keys.PrivateKey:
    return keys.load_private(Path(ledger.key(name)), lambda: None)


def public(ledger: Ledger, name: str) -> bytes:
    return keys.load_public(Path(ledger.pub(name)))


def new_key(ledger: Ledger, name: str) -> tuple[str, str]:
    keys.write_keypair(ledger.dir / "keys", name, keys.generate(), None, comment=name)
    return ledger.key(name), ledger.pub(name)


def checkpoint(ledger: Ledger, out: Path) -> str:
    ledger.cli("checkpoint", "--key", ledger.key("operator"), "--out", str(out), ok=True)
    return out.read_text()


def verify_json(ledger: Ledger, *args: str, db: str | None = None) -> tuple[int, dict[str, Any]]:
    result = ledger.runner.invoke(app,
                                  ["--db", db or ledger.db, "verify", "--json", *args])
    return result.exit_code, json.loads(result.stdout) if result.stdout else {}


def failed_checks(report: dict[str, Any]) -> set[str]:
    return {f["check"] for f in report["failures"]}


def fresh_url(ledger: Ledger, name: str) -> str:
    """Another store of the same kind as the ledger's."""
    if ledger.db.startswith("postgresql://"):
        return new_postgres_schema()
    return str(ledger.dir / f"{name}.db")


def execute_sql(url: str, statement: str) -> None:
    """Tamper with the database directly, as an insider could."""
    if url.startswith("postgresql://"):
        import psycopg

        base, _, schema = url.partition("?schema=")
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(statement)
    else:
        with sqlite3.connect(url) as conn:
            conn.execute(statement)


def drop_newest(ledger: Ledger, keep: int) -> None:
    """Delete every stored log event beyond the first `keep` statements."""
    execute_sql(ledger.db, "DELETE FROM stored_events WHERE topic LIKE 'ledger.aggregates:Log.%' "
                           f"AND originator_version > {keep}")


def rewrite(ledger: Ledger, target: str, index: int, change: dict[str, Any], *,
            copy_checkpoints: bool) -> None:
    """Write into `target` the ledger with statement `index`'s data changed, its unit's later
    statements re-linked, everything re-signed by the same keys, and (if asked) the old checkpoints."""
    signers = {k.key_id: k for k in (private(ledger, p.stem) for p in (ledger.dir / "keys").iterdir()
                                     if p.suffix != ".pub")}
    with Store(ledger.db, readonly=True) as old:
        wires = [e.wire for e in old.log(0)]
        stored = old.checkpoints()
        origin = old.origin
    assert origin is not None
    renamed: dict[bytes, bytes] = {}
    with Store(target, create=True) as new:
        batch = Batch(new)
        for i, wire in enumerate(wires):
            statement = decode(wire)
            if i == index or any(prev in renamed for _, prev in statement.units):
                data = {**statement.data, **(change if i == index else {})}
                units = [(serial, renamed.get(prev, prev)) for serial, prev in statement.units]
                forged = sign_statement(signers[statement.signer], origin=origin, kind=statement.kind,
                                        at=statement.at, units=units, data=data)
                renamed[statement.hash] = forged.hash
                statement = forged
            batch.add(statement)
        batch.commit()
        if copy_checkpoints:
            now = datetime.now(UTC)
            new.write([stored_checkpoint(origin, v, size, note, now) for v, size, note in stored])


def index_of(ledger: Ledger, serial: str, kind: str) -> int:
    steps = json.loads(ledger.cli("history", serial, "--json", ok=True).stdout)["steps"]
    return int(next(s["index"] for s in steps if s["kind"] == kind))


def stored_count(ledger: Ledger, db: str | None = None) -> int:
    with Store(db or ledger.db, readonly=True) as store:
        return len(store.checkpoints())


# --- checkpoint ---------------------------------------------------------------------------------------


def test_checkpoint_is_signed_stored_and_idempotent(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["C1"])
    first = checkpoint(ledger, tmp_path / "cp1.txt")
    parsed = notes.verify_operator(first, "custody.test/h200-cn", public(ledger, "operator"))
    assert parsed.size == 16 and stored_count(ledger) == 1
    again = ledger.cli("checkpoint", "--key", ledger.key("operator"), ok=True)
    assert again.stdout == first and "already stored" in again.stderr
    assert stored_count(ledger) == 1
    ledger.full_flow(["C2"])
    second = checkpoint(ledger, tmp_path / "cp2.txt")
    assert notes.parse_note(second).checkpoint.size == 22 and stored_count(ledger) == 2
    status, report = verify_json(ledger, "--checkpoint", str(tmp_path / "cp1.txt"),
                                 "--checkpoint", str(tmp_path / "cp2.txt"))
    assert status == 0, report
    assert {"checkpoint_signature", "checkpoint_root", "checkpoint_consistency"} <= set(report["checks"])


def test_checkpoint_refuses_keys_other_than_the_operator(ledger: Ledger) -> None:
    for name in ("authority", "tsmc", "rogue"):
        result = ledger.cli("checkpoint", "--key", ledger.key(name))
        assert result.exit_code == 2 and result.stdout == ""
        assert "not this ledger's operator key" in result.stderr and len(result.stderr.splitlines()) == 1
    assert ledger.cli("checkpoint", "--key", ledger.pub("operator")).exit_code == 2
    assert ledger.cli("checkpoint", "--key", str(ledger.dir / "nope")).exit_code == 2
    nowhere = ledger.cli("checkpoint", "--key", ledger.key("operator"), "--out", str(ledger.dir / "x" / "c"))
    assert nowhere.exit_code == 2 and "no such directory" in nowhere.stderr
    assert stored_count(ledger) == 0


def test_checkpoint_needs_a_ledger(tmp_path: Path, runner: Any) -> None:
    result = runner.invoke(app, ["--db", str(tmp_path / "none.db"), "checkpoint", "--key", "k"])
    assert result.exit_code == 2 and not (tmp_path / "none.db").exists()


def test_dropped_statements_are_caught(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["D1", "D2"])
    old = tmp_path / "old.txt"
    checkpoint(ledger, old)
    witness, _ = new_key(ledger, "w1")
    ledger.cli("cosign", str(old), "--name", "w1", "--key", witness, ok=True)
    drop_newest(ledger, 13)  # the log had 16 statements; the checkpoint covers all of them
    status, report = verify_json(ledger, "--checkpoint", str(old))
    assert status == 1 and "checkpoint_consistency" in failed_checks(report)
    assert any("shorter" in f["detail"] for f in report["failures"] if f["check"] == "checkpoint_consistency")
    refused = ledger.cli("checkpoint", "--key", ledger.key("operator"))
    assert refused.exit_code == 1 and refused.stdout == ""
    assert "checkpoint_consistency" in refused.stderr and "dropped" in refused.stderr
    assert stored_count(ledger) == 1
    before = old.read_bytes()
    again = ledger.cli("cosign", str(old), "--name", "w1", "--key", witness)
    assert again.exit_code == 1 and old.read_bytes() == before


def test_rewritten_statement_and_chain_are_caught(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["R1"])
    ledger.full_flow(["R2"])
    old = tmp_path / "old.txt"
    checkpoint(ledger, old)
    inspected = index_of(ledger, "R1", "inspected")
    # Without the checkpoints, the rewritten ledger is a perfectly valid ledger of its own.
    clean = fresh_url(ledger, "rewritten-clean")
    rewrite(ledger, clean, inspected, {"report": "R1-forged"}, copy_checkpoints=False)
    status, report = verify_json(ledger, db=clean)
    assert status == 0, report["failures"]
    forged_history = json.loads(ledger.cli("--db", clean, "history", "R1", "--json", ok=True).stdout)
    assert forged_history["steps"][2]["data"]["report"] == "R1-forged"
    # With them, every checkpoint-based check catches it.
    forged = fresh_url(ledger, "rewritten")
    rewrite(ledger, forged, inspected, {"report": "R1-forged"}, copy_checkpoints=True)
    status, report = verify_json(ledger, "--checkpoint", str(old), db=forged)
    assert status == 1
    assert {"checkpoint_consistency", "checkpoint_root"} <= failed_checks(report)
    refused = ledger.runner.invoke(app,
                                   ["--db", forged, "checkpoint", "--key", ledger.key("operator")])
    assert refused.exit_code == 1 and "checkpoint_consistency" in refused.stderr
    assert "rewritten" in refused.stderr and stored_count(ledger, forged) == 1
    proof = ledger.runner.invoke(app,
                                 ["--db", forged, "prove", "R1", "--out", str(tmp_path / "p.json")])
    assert proof.exit_code == 1 and not (tmp_path / "p.json").exists()


# --- cosign -------------------------------------------------------------------------------------------


def test_cosign_round_trip_and_verify_witness(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["W1"])
    cp = tmp_path / "cp.txt"
    plain = checkpoint(ledger, cp)
    (tmp_path / "plain.txt").write_text(plain)
    witness, witness_pub = new_key(ledger, "w1")
    result = ledger.cli("cosign", str(cp), "--name", "witness.example/w1", "--key", witness, ok=True)
    assert "first for this witness" in result.stdout
    cosigned = cp.read_text()
    assert cosigned.startswith(plain) and "\n— witness.example/w1 " in cosigned
    assert notes.verify_cosignature(cosigned, "witness.example/w1", public(ledger, "w1")) > 0
    state = tmp_path / "witness-witness.example_w1.state"
    assert state.read_text() == cosigned
    given = f"witness.example/w1={witness_pub}"
    status, report = verify_json(ledger, "--checkpoint", str(cp), "--witness", given)
    assert status == 0 and "cosignature" in report["checks"], report
    status, report = verify_json(ledger, "--witness", given)
    assert status == 1 and failed_checks(report) == {"cosignature"}
    status, report = verify_json(ledger, "--checkpoint", str(tmp_path / "plain.txt"), "--witness", given)
    assert status == 1 and failed_checks(report) == {"cosignature"}
    # A newer checkpoint extends the state; the older one is then a rollback.
    ledger.full_flow(["W2"])
    cp2 = tmp_path / "cp2.txt"
    checkpoint(ledger, cp2)
    extended = ledger.cli("cosign", str(cp2), "--name", "witness.example/w1", "--key", witness,
                          "--state", str(state), ok=True)
    assert "extends size 16" in extended.stdout
    status, report = verify_json(ledger, "--checkpoint", str(cp2), "--witness", given)
    assert status == 0, report
    (tmp_path / "again.txt").write_text(plain)
    before = state.read_bytes()
    rollback = ledger.cli("cosign", str(tmp_path / "again.txt"), "--name", "witness.example/w1",
                          "--key", witness, "--state", str(state))
    assert rollback.exit_code == 1 and "rollback" in rollback.stderr and rollback.stdout == ""
    assert state.read_bytes() == before and (tmp_path / "again.txt").read_text() == plain
    # Cosigning the same checkpoint again refreshes the line, it does not add a second one.
    ledger.cli("cosign", str(cp2), "--name", "witness.example/w1", "--key", witness, "--state", str(state),
               ok=True)
    assert cp2.read_text().count("— witness.example/w1 ") == 1


def test_cosign_refuses_a_fork(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["F1"])
    cp = tmp_path / "cp.txt"
    checkpoint(ledger, cp)
    witness, _ = new_key(ledger, "w1")
    ledger.cli("cosign", str(cp), "--name", "w1", "--key", witness, ok=True)
    operator = private(ledger, "operator")
    real = notes.parse_note(cp.read_text()).checkpoint
    # The operator's key signs another root at the same size (a split view): refused by the state.
    other = notes.Checkpoint(real.origin, real.size, bytes(32))
    fork = tmp_path / "fork.txt"
    fork.write_text(notes.sign_checkpoint(other, real.origin, operator.public, operator.sign))
    result = ledger.cli("cosign", str(fork), "--name", "w1", "--key", witness)
    assert result.exit_code == 1 and "fork" in result.stderr
    # Bigger than the ledger, or not the ledger's root at a size it has: refused by the ledger.
    ledger.full_flow(["F2"])
    for size in (real.size + 3, real.size + 100):
        bogus = notes.Checkpoint(real.origin, size, bytes(range(32)))
        fork.write_text(notes.sign_checkpoint(bogus, real.origin, operator.public, operator.sign))
        result = ledger.cli("cosign", str(fork), "--name", "w1", "--key", witness)
        assert result.exit_code == 1 and "checkpoint_consistency" in result.stderr, result.stderr
    # A fresh witness (no state) is still protected by the ledger's own root.
    fresh, _ = new_key(ledger, "w2")
    bogus = notes.Checkpoint(real.origin, real.size, bytes(32))
    fork.write_text(notes.sign_checkpoint(bogus, real.origin, operator.public, operator.sign))
    result = ledger.cli("cosign", str(fork), "--name", "w2", "--key", fresh)
    assert result.exit_code == 1 and "fork" in result.stderr
    assert not (tmp_path / "witness-w2.state").exists()


def test_cosign_refuses_a_rewritten_ledger(ledger: Ledger, tmp_path: Path) -> None:
    """The witness's state remembers the old tree: the operator's new checkpoint of a rewritten log fails."""
    ledger.full_flow(["X1"])
    cp = tmp_path / "cp.txt"
    checkpoint(ledger, cp)
    witness, _ = new_key(ledger, "w1")
    ledger.cli("cosign", str(cp), "--name", "w1", "--key", witness, ok=True)
    forged = fresh_url(ledger, "forged")
    rewrite(ledger, forged, index_of(ledger, "X1", "duty_paid"), {"duty": 1}, copy_checkpoints=False)
    ledger.runner.invoke(app, ["--db", forged, "record", "fabricated", "--key", ledger.key("tsmc"),
                               "--serial", "X2", *MODEL])
    new = tmp_path / "new.txt"
    signed = ledger.runner.invoke(app, ["--db", forged, "checkpoint", "--key", ledger.key("operator"),
                                        "--out", str(new)])
    assert signed.exit_code == 0, signed.stderr  # that store never held the old checkpoint
    result = ledger.runner.invoke(app, ["--db", forged, "cosign", str(new), "--name", "w1", "--key", witness,
                                        "--state", str(tmp_path / "witness-w1.state")])
    assert result.exit_code == 1 and "does not extend" in result.stderr and "rewritten" in result.stderr


CHECKPOINT_PROBES: dict[str, tuple[Callable[[str], bytes], int]] = {
    "empty": (lambda t: b"", 2),
    "not UTF-8": (lambda t: t.encode().replace(b"\n\n", b"\n\xff\n"), 2),
    "truncated (no final newline)": (lambda t: t.encode()[:-1], 2),
    "truncated (signature cut)": (lambda t: t.encode()[:-20] + b"\n", 1),
    "truncated (body only)": (lambda t: t.split("\n\n")[0].encode() + b"\n", 2),
    "binary garbage": (lambda t: bytes(range(256)), 2),
    "no blank line": (lambda t: t.replace("\n\n", "\n").encode(), 2),
    "wrong origin": (lambda t: t.replace("custody.test/h200-cn\n", "custody.test/other\n", 1).encode(), 1),
    "extra body line": (lambda t: t.replace("\n\n", "\nextension\n\n").encode(), 1),
    "missing size line": (lambda t: "\n".join(t.split("\n")[:1] + t.split("\n")[2:]).encode(), 1),
    "bad base64 root": (lambda t: t.replace("=\n\n", "!\n\n", 1).encode(), 1),
    "bad base64 signature": (lambda t: t[:-3].encode() + b"*=\n", 1),
    "size changed": (lambda t: t.replace("\n16\n", "\n15\n", 1).encode(), 1),
    "signature flipped": (lambda t: _flip_signature(t).encode(), 1),
    "no operator line": (lambda t: (t.split("\n\n")[0] + "\n\n— someone AAAAAAAAAA==\n").encode(), 1),
    "line not starting with an em dash": (lambda t: t.replace("— ", "- ", 1).encode(), 2),
    "a space in the key name": (lambda t: t.replace("— custody.test/h200-cn ", "— custody test ").encode(),
                                1),
    "an unknown key's line (ignored)": (lambda t: (t + "— stranger QUJDREVGR0hJSktMTU5PUA==\n").encode(), 0),
}


def _flip_signature(text: str) -> str:
    body, line = text.split("\n\n")
    prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 1
    return f"{body}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


def test_cosign_bad_input_probes(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    ledger = sqlite_ledger
    ledger.full_flow(["B1"])
    good = checkpoint(ledger, tmp_path / "good.txt")
    witness, _ = new_key(ledger, "w1")
    wrong: list[str] = []
    for name, (probe, expected) in CHECKPOINT_PROBES.items():
        path = tmp_path / "probe.txt"
        data = probe(good)
        path.write_bytes(data)
        state = tmp_path / "probe.state"
        state.unlink(missing_ok=True)
        result = ledger.cli("cosign", str(path), "--name", "w1", "--key", witness, "--state", str(state))
        lines = result.stderr.strip().splitlines()
        changed = path.read_bytes() != data
        if (result.exit_code != expected or "Traceback" in result.output
                or (expected and (len(lines) != 1 or changed or state.exists()))):
            wrong.append(f"{name}: exit {result.exit_code} (want {expected}) {result.stderr!r}")
    assert not wrong, "\n".join(wrong)
    # the same probes given to `verify --checkpoint`: the status cosign gives (2 for what is no checkpoint
    # at all, before any work), never a pass of a bad one, never a traceback
    for name, (probe, expected) in CHECKPOINT_PROBES.items():
        (tmp_path / "probe.txt").write_bytes(probe(good))
        status, report = verify_json(ledger, "--checkpoint", str(tmp_path / "probe.txt"))
        if status != expected:
            wrong.append(f"verify --checkpoint {name}: exit {status} (want {expected})")
        elif status == 1:
            assert "checkpoint_consistency" in failed_checks(report), name
    assert not wrong, "\n".join(wrong)


def test_cosign_state_file_problems(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    ledger = sqlite_ledger
    ledger.full_flow(["S1"])
    cp = tmp_path / "cp.txt"
    plain = checkpoint(ledger, cp)
    witness, _ = new_key(ledger, "w1")
    other, _ = new_key(ledger, "w2")
    state = tmp_path / "state"
    for content in (b"garbage\n", plain.encode(), b""):
        state.write_bytes(content)  # damaged, or a note without this witness's own cosignature
        result = ledger.cli("cosign", str(cp), "--name", "w1", "--key", witness, "--state", str(state))
        assert result.exit_code == 2 and "witness state" in result.stderr, result.stderr
        assert cp.read_text() == plain
    state.unlink()
    ledger.cli("cosign", str(cp), "--name", "w1", "--key", witness, "--state", str(state), ok=True)
    result = ledger.cli("cosign", str(cp), "--name", "w2", "--key", other, "--state", str(state))
    assert result.exit_code == 2 and "w2" in result.stderr
    for name in ("", "two words", "a+b"):
        result = ledger.cli("cosign", str(cp), "--name", name, "--key", witness)
        assert result.exit_code == 2 and "witness name" in result.stderr
    result = ledger.cli("cosign", str(tmp_path / "missing.txt"), "--name", "w1", "--key", witness)
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    files.write_atomic(target, b"one\n")
    os.chmod(target, 0o640)
    files.write_atomic(target, b"two\n")
    assert target.read_bytes() == b"two\n" and target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    with pytest.raises(BadInput):
        files.write_atomic(tmp_path / "missing-dir" / "f.txt", b"x")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# --- prove and verify-proof ---------------------------------------------------------------------------


def proof_kinds(path: Path) -> list[tuple[int, str]]:
    proof = proofs.parse_proof(path.read_bytes())
    return [(e.index, decode(e.wire).kind) for e in proof.entries]


def test_prove_and_verify_proof_round_trip(ledger: Ledger, tmp_path: Path) -> None:
    ledger.full_flow(["P1", "P2"])
    out = tmp_path / "P1.proof.json"
    early = ledger.cli("prove", "P1", "--out", str(out))
    assert early.exit_code == 1 and "custody checkpoint" in early.stderr and not out.exists()
    checkpoint(ledger, tmp_path / "cp.txt")
    result = ledger.cli("prove", "P1", "--out", str(out), ok=True)
    assert "6 step(s)" in result.stdout
    assert out.read_bytes().startswith(b'{"format":"custody-proof/1",')
    verified = ledger.cli("verify-proof", str(out), "--trust", ledger.pub("authority"), "--json", ok=True)
    document = json.loads(verified.stdout)
    assert document["verified"] is True and document["serial"] == "P1"
    assert [s["kind"] for s in document["steps"]] == ["fabricated", "shipped_to_us", "inspected", "duty_paid",
                                                      "re_exported", "received"]
    assert document["steps"][4]["participant"] == "nvidia" and document["findings"] == []
    assert document["checkpoint"]["size"] == 16
    assert document["operator"] == key_id(public(ledger, "operator"))
    history = json.loads(ledger.cli("history", "P1", "--json", ok=True).stdout)
    assert [s["hash"] for s in document["steps"]] == [s["hash"] for s in history["steps"]]
    text = ledger.cli("verify-proof", str(out), "--trust", ledger.pub("authority"), "--operator",
                      ledger.pub("operator"), ok=True)
    assert "proof verified" in text.stdout and "findings: none" in text.stdout
    bad_operator = ledger.cli("verify-proof", str(out), "--trust", ledger.pub("authority"), "--operator",
                              ledger.pub("rogue"))
    assert bad_operator.exit_code == 1 and "genesis_trust" in bad_operator.stderr
    untrusted = ledger.cli("verify-proof", str(out), "--trust", ledger.pub("rogue"))
    assert untrusted.exit_code == 1 and "not a trusted key" in untrusted.stderr and untrusted.stdout == ""
    # authorising statements: the genesis, the six signers' registrations and alibaba's approval only
    kinds = proof_kinds(out)
    assert [k for _, k in kinds].count("participant_registered") == 6
    assert [k for _, k in kinds].count("customer_approved") == 1 and kinds[0] == (0, "ledger_opened")
    # a unit with statements beyond the checkpoint, unknown serials, bad serials
    ledger.record("fabricated", "tsmc", ["P3"], *MODEL, ok=True)
    late = ledger.cli("prove", "P3", "--out", str(tmp_path / "P3.json"))
    assert late.exit_code == 1 and "custody checkpoint" in late.stderr
    assert ledger.cli("prove", "NOPE", "--out", str(tmp_path / "n.json")).exit_code == 2
    assert ledger.cli("prove", "bad serial!", "--out", str(tmp_path / "n.json")).exit_code == 2
    assert not (tmp_path / "n.json").exists()


def test_proof_shows_the_units_findings(ledger: Ledger, tmp_path: Path) -> None:
    ledger.record("fabricated", "tsmc", ["K1"], *MODEL, ok=True)
    ledger.record("shipped-to-us", "kerry", ["K1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    ledger.record("re-exported", "nvidia", ["K1"], "--consignee", "bytedance", "--license", "L",
                  "--destination", "CN", "--allow-violation", ok=True)
    checkpoint(ledger, tmp_path / "cp.txt")
    ledger.cli("prove", "K1", "--out", str(tmp_path / "K1.json"), ok=True)
    result = ledger.cli("verify-proof", str(tmp_path / "K1.json"), "--trust", ledger.pub("authority"))
    assert result.exit_code == 0, result.stderr
    assert "SKIPPED_INSPECTION" in result.stdout and "SKIPPED_DUTY" in result.stdout
    kinds = proof_kinds(tmp_path / "K1.json")
    approvals = [i for i, k in kinds if k == "customer_approved"]
    assert len(approvals) == 1  # bytedance's, not alibaba's


def test_proof_findings_match_the_ledger(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """Revocations, policies and multi-unit statements: the proof's fold agrees with the ledger's."""
    ledger = sqlite_ledger
    policy = tmp_path / "policy.toml"
    policy.write_text('name = "strict"\nduty_rate_bp = 3000\nallowed_models = ["H200-SXM5-141GB"]\n'
                      'approved_foundries = ["tsmc"]\nmin_unit_value_cents = 3000000\n'
                      'inspection_country = "US"\n[overdue_days]\nfabricated = 30\nshipped_to_us = 30\n'
                      'inspected = 30\nduty_paid = 30\nre_exported = 30\n')
    ledger.record("fabricated", "tsmc", ["M1", "M2", "M3"], *MODEL, "--at", "2026-02-01", ok=True)
    ledger.cli("policy", "issue", str(policy), "--key", ledger.key("authority"), ok=True)
    ledger.record("shipped-to-us", "kerry", ["M1", "M2", "M3"], "--port-of-entry", "DFW", "--waybill", "W",
                  "--at", "2026-02-02", ok=True)
    ledger.record("inspected", "uslab", ["M2", "M1"], "--result", "pass", "--site", "Lab", "--country", "MX",
                  "--report", "R", "--at", "2026-02-03", "--allow-violation", ok=True)
    ledger.record("duty-paid", "cbp", ["M1", "M2"], "--entry", "E1", "--entered-value", "40000.00",
                  "--duty", "10000.00", "--at", "2026-02-04", "--allow-violation", ok=True)
    ledger.cli("participant", "revoke-key", ledger.pub("kerry"), "--at", "2026-02-01T12:00:00Z",
               "--reason", "stolen", "--key", ledger.key("authority"), ok=True)
    ledger.record("re-exported", "nvidia", ["M1"], "--consignee", "alibaba", "--license", "L",
                  "--destination", "CN", "--at", "2026-02-05", ok=True)
    checkpoint(ledger, tmp_path / "cp.txt")
    ledger.cli("prove", "M1", "--out", str(tmp_path / "M1.json"), ok=True)
    result = ledger.cli("verify-proof", str(tmp_path / "M1.json"), "--trust", ledger.pub("authority"),
                        "--json", ok=True)
    proven = {(f["code"], f["index"]) for f in json.loads(result.stdout)["findings"]}
    history = json.loads(ledger.cli("history", "M1", "--json", ok=True).stdout)
    expected = {(f["code"], f["index"]) for f in history["findings"] if f["code"] != "OVERDUE"}
    assert proven == expected
    assert {"SIGNED_AFTER_REVOCATION", "UNDERPAID_DUTY", "UNDERVALUED_ENTRY",
            "INSPECTION_OUTSIDE_US"} <= {code for code, _ in proven}
    kinds = [k for _, k in proof_kinds(tmp_path / "M1.json")]
    assert kinds.count("policy_issued") == 1 and kinds.count("key_revoked") == 1


def small_proof(ledger: Ledger, tmp_path: Path) -> bytes:
    """A proof of a two-step unit: genesis, two registrations, two steps."""
    ledger.record("fabricated", "tsmc", ["Z1"], *MODEL, ok=True)
    ledger.record("shipped-to-us", "kerry", ["Z1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    checkpoint(ledger, tmp_path / "cp.txt")
    ledger.cli("prove", "Z1", "--out", str(tmp_path / "Z1.json"), ok=True)
    return (tmp_path / "Z1.json").read_bytes()


def outcome(data: bytes, trusted: list[bytes]) -> int:
    """The exit status `verify-proof` gives, from the library (0, 1 or 2); anything else escapes."""
    try:
        proofs.verify_proof_file(data, trusted=trusted, operator=None,
                                       now_us=int(datetime.now(UTC).timestamp() * 1e6))
    except NotALedger:
        return 2
    except IntegrityError:
        return 1
    return 0


def test_every_bit_flip_in_a_proof_is_caught(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    data = small_proof(sqlite_ledger, tmp_path)
    trusted = [public(sqlite_ledger, "authority")]
    assert outcome(data, trusted) == 0
    statuses = {0: 0, 1: 0, 2: 0}
    passed = []
    for position in range(len(data)):
        mutated = bytearray(data)
        mutated[position] ^= 1 << (position % 8)
        status = outcome(bytes(mutated), trusted)
        statuses[status] += 1
        if status == 0:
            passed.append(position)
    caught = len(data) - len(passed)
    print(f"\nbit flips caught: {caught}/{len(data)} ({100 * caught / len(data):.1f} %): "
          f"{statuses[1]} bad proof (exit 1), {statuses[2]} not a proof (exit 2)")
    assert not passed, f"flips at {passed[:20]} still verify"


def test_any_byte_change_in_a_proof_is_caught(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    proof = small_proof(sqlite_ledger, tmp_path)
    trusted = [public(sqlite_ledger, "authority")]

    @settings(max_examples=150, deadline=None, database=None)
    @given(position=st.integers(0, len(proof) - 1), value=st.integers(0, 255))
    def replaced(position: int, value: int) -> None:
        mutated = bytearray(proof)
        mutated[position] = value
        if value != proof[position]:
            assert outcome(bytes(mutated), trusted) in (1, 2)

    replaced()


def _edit(data: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    document = json.loads(data)
    change(document)
    return proofs.canonical_json(document)


def _entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = document["statements"]
    return entries


PROOF_PROBES: dict[str, tuple[Callable[[bytes], bytes], int]] = {
    "empty": (lambda d: b"", 2),
    "binary garbage": (lambda d: bytes(range(256)), 2),
    "not UTF-8 (no header)": (lambda d: b"\xff" + d, 2),
    "not UTF-8 (after the header)": (lambda d: d[:40] + b"\xff" + d[41:], 1),
    "a JSON array": (lambda d: b"[1, 2]\n", 2),
    "another format": (lambda d: d.replace(b"custody-proof/1", b"custody-proof/9"), 2),
    "a checkpoint note": (lambda d: json.loads(d)["signed_checkpoint"].encode(), 2),
    "truncated in the middle": (lambda d: d[:len(d) // 2], 1),
    "truncated by one byte": (lambda d: d[:-2], 1),
    "final newline missing": (lambda d: d[:-1], 1),
    "trailing garbage": (lambda d: d + b"x", 1),
    "pretty-printed": (lambda d: json.dumps(json.loads(d), indent=1, sort_keys=True).encode(), 1),
    "keys reordered": (lambda d: json.dumps(dict(reversed(list(json.loads(d).items())))).encode(), 1),
    "wrong origin": (lambda d: _edit(d, lambda x: x.update(origin="custody.test/other")), 1),
    "another serial": (lambda d: _edit(d, lambda x: x.update(serial="Z2")), 1),
    "an extra field": (lambda d: _edit(d, lambda x: x.update(extra=1)), 1),
    "a missing field": (lambda d: _edit(d, lambda x: x.pop("origin")), 1),
    "an extra entry field": (lambda d: _edit(d, lambda x: _entries(x)[1].update(note="x")), 1),
    "a repeated key": (lambda d: d.replace(b'{"format":"custody-proof/1",',
                                           b'{"format":"custody-proof/1","format":"custody-proof/1",'), 1),
    "bad base64 wire": (lambda d: _edit(d, lambda x: _entries(x)[1].update(wire="!!")), 1),
    "non-canonical base64 hash": (lambda d: _edit(d, lambda x: _entries(x)[1]["inclusion"].__setitem__(
        0, _entries(x)[1]["inclusion"][0][:-2] + "B=")), 1),
    "a short inclusion hash": (lambda d: _edit(d, lambda x: _entries(x)[1]["inclusion"].__setitem__(
        0, "AAAA")), 1),
    "an inclusion hash missing": (lambda d: _edit(d, lambda x: _entries(x)[1]["inclusion"].pop()), 1),
    "an inclusion hash added": (lambda d: _edit(d, lambda x: _entries(x)[1]["inclusion"].append(
        base64.b64encode(bytes(32)).decode())), 1),
    "an index changed": (lambda d: _edit(d, lambda x: _entries(x)[1].update(
        index=_entries(x)[1]["index"] + 1)), 1),
    "a float index": (lambda d: d.replace(b'"index":0', b'"index":0.0'), 1),
    "the genesis dropped": (lambda d: _edit(d, lambda x: _entries(x).pop(0)), 1),
    "a registration dropped": (lambda d: _edit(d, lambda x: _entries(x).pop(1)), 1),
    "the first step dropped": (lambda d: _edit(d, lambda x: _entries(x).pop(-2)), 1),
    "an entry repeated": (lambda d: _edit(d, lambda x: _entries(x).append(_entries(x)[-1])), 1),
    "entries reordered": (lambda d: _edit(d, lambda x: _entries(x).reverse()), 1),
    "no entries": (lambda d: _edit(d, lambda x: _entries(x).clear()), 1),
    "checkpoint signature flipped": (lambda d: _edit(d, lambda x: x.update(
        signed_checkpoint=_flip_signature(x["signed_checkpoint"]))), 1),
    "checkpoint not a note": (lambda d: _edit(d, lambda x: x.update(signed_checkpoint="hello")), 1),
    "checkpoint of another origin": (lambda d: _edit(d, lambda x: x.update(
        signed_checkpoint=x["signed_checkpoint"].replace("custody.test/h200-cn", "custody.test/other"))), 1),
    "checkpoint with an extra body line": (lambda d: _edit(d, lambda x: x.update(
        signed_checkpoint=x["signed_checkpoint"].replace("\n\n", "\nextra\n\n"))), 1),
    "checkpoint size changed": (lambda d: _edit(d, lambda x: x.update(
        signed_checkpoint=x["signed_checkpoint"].replace("\n12\n", "\n13\n"))), 1),
    "an unknown key's line (ignored)": (lambda d: _edit(d, lambda x: x.update(
        signed_checkpoint=x["signed_checkpoint"] + "— stranger QUJDREVGR0hJSktMTU5PUA==\n")), 0),
}


def test_verify_proof_bad_input_probes(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    ledger = sqlite_ledger
    data = small_proof(ledger, tmp_path)
    assert b'"index":0' in data and b"\\n12\\n" in data  # the probes edit these
    wrong: list[str] = []
    for name, (probe, expected) in PROOF_PROBES.items():
        path = tmp_path / "probe.json"
        path.write_bytes(probe(data))
        result = ledger.cli("verify-proof", str(path), "--trust", ledger.pub("authority"))
        lines = result.stderr.strip().splitlines()
        if (result.exit_code != expected or "Traceback" in result.output
                or (expected and (len(lines) != 1 or result.stdout))):
            wrong.append(f"{name}: exit {result.exit_code} (want {expected}) {result.stderr.strip()!r}")
    assert not wrong, "\n".join(wrong)
    missing = ledger.cli("verify-proof", str(tmp_path / "nope.json"), "--trust", ledger.pub("authority"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    no_trust = ledger.cli("verify-proof", str(tmp_path / "Z1.json"))
    assert no_trust.exit_code == 2
    bad_key = ledger.cli("verify-proof", str(tmp_path / "Z1.json"), "--trust", str(tmp_path / "Z1.json"))
    assert bad_key.exit_code == 2


def test_proof_steps_from_a_foreign_unit_are_refused(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """Statements that are in the log, with valid inclusion proofs, but not the unit's: refused."""
    ledger = sqlite_ledger
    ledger.record("fabricated", "tsmc", ["Y1"], *MODEL, ok=True)
    ledger.record("fabricated", "tsmc", ["Y2"], *MODEL, ok=True)
    ledger.record("shipped-to-us", "kerry", ["Y2"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    ledger.record("shipped-to-us", "kerry", ["Y1"], "--port-of-entry", "DFW", "--waybill", "W", ok=True)
    checkpoint(ledger, tmp_path / "cp.txt")
    ledger.cli("prove", "Y1", "--out", str(tmp_path / "y1.json"), ok=True)
    ledger.cli("prove", "Y2", "--out", str(tmp_path / "y2.json"), ok=True)
    y1 = proofs.parse_proof((tmp_path / "y1.json").read_bytes())
    y2 = proofs.parse_proof((tmp_path / "y2.json").read_bytes())
    trusted = [public(ledger, "authority")]
    now = int(datetime.now(UTC).timestamp() * 1e6)
    # Y2's steps under Y1's name; Y1's shipment swapped for Y2's (valid inclusion, wrong chain)

    def by_index(entries: set[proofs.ProofEntry]) -> tuple[proofs.ProofEntry, ...]:
        return tuple(sorted(entries, key=lambda e: e.index))

    swapped = proofs.UnitProof(y1.origin, "Y1", y1.signed_checkpoint,
                                     by_index({*y1.entries[:-2], *y2.entries[-2:]}))
    mixed = proofs.UnitProof(y1.origin, "Y1", y1.signed_checkpoint,
                                   by_index({*y1.entries[:-1], y2.entries[-1]}))
    for forged in (swapped, mixed):
        with pytest.raises(IntegrityError) as caught:
            proofs.verify_proof(forged, trusted=trusted, operator=None, now_us=now)
        assert caught.value.check in ("proof", "chain")
    # withholding the unit's newest step is not detectable: the proof shows a shorter history
    shorter = proofs.UnitProof(y1.origin, "Y1", y1.signed_checkpoint, y1.entries[:-1])
    assert len(proofs.verify_proof(shorter, trusted=trusted, operator=None, now_us=now).steps) == 1


def test_verify_proof_as_a_program(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """A few real runs of the installed entry point: exit statuses and one-line errors."""
    data = small_proof(sqlite_ledger, tmp_path)
    program = [sys.executable, "-c", "from commands.main import run; run()"]
    path = tmp_path / "p.json"
    authority = sqlite_ledger.pub("authority")
    for content, expected in [(data, 0), (data[:-1], 1), (b"{}", 2)]:
        path.write_bytes(content)
        run = subprocess.run([*program, "verify-proof", str(path), "--trust", authority], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert run.returncode == expected, run.stderr
        if run.returncode:
            assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_proofs_carry_the_operator_line_only(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    """A witness line in the note would be ignored by verifiers, so a byte of it could change unseen."""
    ledger = sqlite_ledger
    ledger.full_flow(["O1"])
    note = checkpoint(ledger, tmp_path / "cp.txt")
    witness = private(ledger, "rogue")
    cosigned = notes.add_cosignature(note, "w1", witness.public, witness.sign, 1_700_000_000)
    with Store(ledger.db, readonly=True) as store:
        identity = tree_head.ledger_identity(store)
    assert proofs.operator_only(notes.parse_note(cosigned), identity) == note


def test_library_refuses_without_trust(sqlite_ledger: Ledger, tmp_path: Path) -> None:
    data = small_proof(sqlite_ledger, tmp_path)
    with pytest.raises(BadInput):
        proofs.verify_proof_file(data, trusted=[], operator=None, now_us=0)
    with pytest.raises(LedgerError):
        proofs.parse_proof("text")  # type: ignore[arg-type]


@pytest.mark.skipif(not os.environ.get(PG_ENV), reason=f"needs {PG_ENV}")
def test_postgres_tampering_helper_reaches_the_schema(ledger: Ledger) -> None:
    """The SQL helper deletes from the ledger's own schema (guards the tamper tests on PostgreSQL)."""
    if not ledger.db.startswith("postgresql://"):
        pytest.skip("PostgreSQL only")
    drop_newest(ledger, 5)
    with Store(ledger.db, readonly=True) as store:
        assert store.size() == 5
