"""The shared golden vectors (../shared/vectors/custody) through the CLI, and pinned known answers.

The vectors were made from DESIGN.md by an independent implementation: the golden ledger must verify,
every probe must fail with its exit status and name its check, and statements built from the vectors'
seeds and fields must come out byte-identical. A few known answers are pinned here as literals so they
stay pinned where ../shared is absent.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import keys, merkle, statement
from ledger.statement import assemble, encode_body, key_id, signed_message

# Known answers from vectors/custody/statements.json and checkpoint.txt (fixed seeds, fixed bytes).
ORIGIN = "vectors.custody.example/h200-cn"
AUTHORITY_SEED = bytes.fromhex("a1862d62b6b752a141b8132c28a5c279bd25bd3f587fd742f1540acf1c7325cb")
AUTHORITY_KEY_ID = "2e6d334b2890b942ee5bac6ef514eace935c049a88764f64fca255c76b603bfe"
OPERATOR_SEED = bytes.fromhex("7f4491a8a9553cb567649eb51ca090defb17125fdcc445801ae4385f2aa8b076")
OPERATOR_PUBLIC = bytes.fromhex("d750111b2d0a737025a1968d2356f231900ff67a52aa7d92a3a7a3515e13158a")
GENESIS_AT = 1767225600000000  # 2026-01-01T00:00:00Z
GENESIS_POLICY = (  # DESIGN.md's default policy, as the vectors recorded it
    'name = "h200-china-2026-01"\nduty_rate_bp = 2500\n'
    'allowed_models = ["H200-SXM5-141GB", "H200-NVL-141GB"]\napproved_foundries = ["tsmc"]\n'
    'min_unit_value_cents = 2000000\ninspection_country = "US"\n[overdue_days]\nfabricated = 30\n'
    "shipped_to_us = 30\ninspected = 30\nduty_paid = 30\nre_exported = 30\n")
GENESIS_HASH = "1fbc9ea07f6bc0137de2b0b739bf865dcc3d433d5c2124853dd88bec4d91da2a"
GENESIS_SIGNATURE = ("a6d5b1f6db793b9e9a483b851f765dbe63101fe285fa9b664856a0e1230cda60"
                     "098c26177cd61d652d072f10bf26e54b29b83ca8150e387babc5fbfeadb88503")
GENESIS_LEAF = "c8f8596b8d2a9bd8b3691b37412ca5622fe1f198ad8c1dda5528a9b47a823e29"  # = the root at size 1
GOLDEN_ROOT_15 = "8805e606830e983b1bfc3b453bb52f266685fb9d9746a9b9a8f994e70793fd57"  # checkpoint.txt


# --- pinned known answers: no ../shared needed ---------------------------------------------------------


def test_seeds_give_the_pinned_key_ids() -> None:
    authority = keys.from_seed(AUTHORITY_SEED)
    assert authority.key_id == AUTHORITY_KEY_ID == key_id(authority.public)
    assert keys.from_seed(OPERATOR_SEED).public == OPERATOR_PUBLIC


def test_genesis_from_seed_and_fields_is_byte_identical() -> None:
    authority = keys.from_seed(AUTHORITY_SEED)
    body = encode_body(origin=ORIGIN, kind="ledger_opened", at=GENESIS_AT, signer=authority.key_id, units=(),
                       data={"authorities": [authority.public], "operator": OPERATOR_PUBLIC,
                             "policy": GENESIS_POLICY})
    genesis = assemble(body, authority.sign(signed_message(body)))
    assert genesis.hash.hex() == GENESIS_HASH
    assert genesis.signature.hex() == GENESIS_SIGNATURE  # Ed25519 signatures are deterministic
    assert merkle.leaf_hash(genesis.wire).hex() == GENESIS_LEAF
    assert merkle.root_of([merkle.leaf_hash(genesis.wire)]).hex() == GENESIS_LEAF
    statement.verify_signature(genesis, authority.public)


# --- the shared vectors --------------------------------------------------------------------------------


def _vectors(shared: Path) -> Path:
    folder = shared / "vectors" / "custody"
    if not (folder / "golden.bundle").is_file():
        pytest.skip(f"no golden vectors in {folder}")
    return folder


def _unhex(value: Any) -> Any:
    """statements.json writes bytes as {"hex": …}; everything else as JSON."""
    if isinstance(value, dict):
        if set(value) == {"hex"}:
            return bytes.fromhex(value["hex"])
        return {k: _unhex(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unhex(v) for v in value]
    return value


def _verify(runner: CliRunner, folder: Path, bundle: str, *args: str) -> Any:
    return runner.invoke(app, ["verify", str(folder / bundle), "--trust", str(folder / "authority.pub"),
                               *[str(folder / a) if a.endswith((".txt", ".pub")) else a for a in args]])


def test_golden_bundle_verifies_with_no_findings(shared: Path, runner: CliRunner) -> None:
    folder = _vectors(shared)
    result = _verify(runner, folder, "golden.bundle", "--json")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["intact"] is True and report["compliant"] is True
    assert report["log_size"] == 15
    assert report["failures"] == [] and report["findings"] == [] and report["violations"] == 0
    assert {"genesis_trust", "checkpoint_signature", "checkpoint_root"} <= set(report["checks"])
    assert "log_index" not in report["checks"]  # database only
    plain = _verify(runner, folder, "golden.bundle")
    assert plain.exit_code == 0 and "intact: yes" in plain.stdout and "compliant: yes" in plain.stdout


def test_golden_bundle_against_its_own_checkpoint(shared: Path, runner: CliRunner) -> None:
    folder = _vectors(shared)
    result = _verify(runner, folder, "golden.bundle", "--json", "--checkpoint", "checkpoint.txt")
    assert result.exit_code == 0, result.stderr
    assert "checkpoint_consistency" in json.loads(result.stdout)["checks"]


def _probes(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "probes.json").read_text(encoding="utf-8"))["probes"])


def test_every_probe_fails_as_the_vectors_say(shared: Path, runner: CliRunner) -> None:
    """Each probe gives its exit status and names its check; list every probe that did not."""
    folder = _vectors(shared)
    probes = _probes(folder)
    assert len(probes) >= 20
    wrong: list[str] = []
    for probe in probes:
        result = _verify(runner, folder, probe["file"], "--json", *probe["args"])
        name = probe["file"]
        if result.exit_code != probe["exit"]:
            wrong.append(f"{name}: exit {result.exit_code}, not {probe['exit']} ({result.stderr.strip()})")
            continue
        if probe["exit"] == 2:
            if result.stdout != "" or len(result.stderr.strip().splitlines()) != 1:
                wrong.append(f"{name}: exit 2 wants one line on stderr and nothing on stdout")
            continue
        report = json.loads(result.stdout)
        checks = [f["check"] for f in report["failures"]]
        if report["intact"] or not checks:
            wrong.append(f"{name}: reported intact")
        elif probe["check"] is not None and probe["check"] not in checks:
            wrong.append(f"{name}: failures {checks}, not {probe['check']}")
        elif f"verification failed: {report['failures'][0]['check']}" not in result.stderr:
            wrong.append(f"{name}: stderr does not name the failure")
    assert wrong == []


def test_probes_fail_without_json_too(shared: Path, runner: CliRunner) -> None:
    folder = _vectors(shared)
    for probe in _probes(folder):
        result = _verify(runner, folder, probe["file"], *probe["args"])
        assert result.exit_code == probe["exit"], probe["file"]
        if probe["exit"] == 1:
            assert "intact: NO" in result.stdout
            assert probe["check"] is None or f"FAIL {probe['check']}" in result.stdout


def test_statements_from_seeds_and_fields_are_byte_identical(shared: Path) -> None:
    folder = _vectors(shared)
    vectors = json.loads((folder / "statements.json").read_text(encoding="utf-8"))
    seeded = [keys.from_seed(bytes.fromhex(k["seed_hex"])) for k in vectors["keys"].values()]
    signers = {key.key_id: key for key in seeded}
    for name, k in vectors["keys"].items():
        key = keys.from_seed(bytes.fromhex(k["seed_hex"]))
        assert key.public.hex() == k["public_hex"] and key.key_id == k["key_id"], name
    leaves: list[bytes] = []
    for entry in vectors["statements"]:
        fields = _unhex(entry["fields"])
        assert fields["v"] == 1
        body = encode_body(origin=fields["origin"], kind=fields["kind"], at=fields["at"],
                           signer=fields["signer"], units=[(s, p) for s, p in fields["units"]],
                           data=fields["data"])
        assert body.hex() == entry["body_hex"], entry["index"]
        signature = signers[fields["signer"]].sign(signed_message(body))
        assert signature.hex() == entry["signature_hex"], entry["index"]
        built = assemble(body, signature)
        assert built.wire.hex() == entry["wire_hex"], entry["index"]
        assert built.hash.hex() == entry["hash_hex"], entry["index"]
        assert statement.decode(bytes.fromhex(entry["wire_hex"])) == built
        leaves.append(merkle.leaf_hash(built.wire))
        assert leaves[-1].hex() == entry["leaf_hash_hex"], entry["index"]
    for size, root in vectors["roots"].items():
        assert merkle.root_of(leaves[:int(size)]).hex() == root, size
    assert merkle.root_of(leaves).hex() == GOLDEN_ROOT_15
    assert vectors["statements"][0]["hash_hex"] == GENESIS_HASH


def test_golden_checkpoint_pins_the_root(shared: Path) -> None:
    folder = _vectors(shared)
    lines = (folder / "checkpoint.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == [ORIGIN, "15"]
    assert base64.b64decode(lines[2]).hex() == GOLDEN_ROOT_15
