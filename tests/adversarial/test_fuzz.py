"""Bad input fuzzing: every parser, fed random and mutated input, fails only as designed.

For each parser (statement bodies and wire forms, bundles, checkpoint notes, proof files, policy TOML,
serials files, key files, and times and money on the command line) hypothesis supplies arbitrary bytes
and mutations of a valid input. The library may only raise its documented `LedgerError`s; the CLI may
only exit 0 (input that happens to be valid), 1 or 2, with one line on stderr and never a traceback.
A deadline on every example catches a hang. `max_examples` stays modest so the suite stays fast.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from commands.main import app
from ledger import append, bundle, checkpoint, keys, policy, statement, values
from ledger import verify as verification
from ledger.errors import (
    BadInput,
    CheckpointSignatureInvalid,
    EncodingInvalid,
    IntegrityError,
    KeyFileError,
    LedgerError,
    NotALedger,
    PolicyInvalid,
)
from ledger.store import Store
from tests.adversarial.test_tamper import Built, build_ledger, bundle_of

FAST = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLI = settings(
    max_examples=25,
    deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """A small SQLite ledger: 16 statements (one shipment through all six steps), checkpointed at 16."""
    root = tmp_path_factory.mktemp("fuzz")
    return build_ledger(str(root / "fuzz.db"), groups=1, checkpoint_sizes=[16])


def mutate(data: bytes, draw: st.DataObject) -> bytes:
    """One of: flip, insert, delete, truncate, duplicate a slice, splice random bytes."""
    how = draw.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate", "splice"]))
    if not data:
        return draw.draw(st.binary(max_size=20))
    at = draw.draw(st.integers(0, len(data) - 1))
    if how == "flip":
        return data[:at] + bytes([data[at] ^ draw.draw(st.integers(1, 255))]) + data[at + 1 :]
    if how == "insert":
        return data[:at] + draw.draw(st.binary(min_size=1, max_size=8)) + data[at:]
    if how == "delete":
        return data[:at] + data[at + draw.draw(st.integers(1, 8)) :]
    if how == "truncate":
        return data[:at]
    if how == "duplicate":
        end = draw.draw(st.integers(at, len(data)))
        return data[:end] + data[at:end] + data[end:]
    end = draw.draw(st.integers(at, len(data)))
    return data[:at] + draw.draw(st.binary(max_size=32)) + data[end:]


# --- statements --------------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_statement_decode_of_mutated_wire_forms(built: Built, data: st.DataObject) -> None:
    wire = data.draw(st.sampled_from(built.wires))
    with contextlib.suppress(EncodingInvalid):
        statement.decode(mutate(wire, data))


@FAST
@given(st.data())
def test_statement_decode_of_mutated_bodies(built: Built, data: st.DataObject) -> None:
    """Bodies changed and re-wrapped, so the framing is right and the body parser meets the damage."""
    s = statement.decode(data.draw(st.sampled_from(built.wires)))
    body = mutate(s.body, data)
    with contextlib.suppress(EncodingInvalid):
        statement.decode(msgpack.packb([body, s.signature], use_bin_type=True))


@FAST
@given(
    st.recursive(
        st.one_of(
            st.integers(-(2**63), 2**64 - 1),
            st.text(max_size=10),
            st.binary(max_size=40),
            st.none(),
            st.booleans(),
            st.floats(),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.sampled_from([*sorted(statement.BODY_KEYS), "x"]), inner, max_size=8),
        ),
        max_leaves=25,
    )
)
def test_statement_decode_of_arbitrary_msgpack_documents(document: Any) -> None:
    body = msgpack.packb(document, use_bin_type=True)
    with contextlib.suppress(EncodingInvalid):
        statement.decode(msgpack.packb([body, bytes(64)], use_bin_type=True))


# --- bundles ------------------------------------------------------------------------------------------


def _verify_bundle(data: bytes) -> verification.Report | None:
    now = append.now_us()
    try:
        return verification.verify_bundle(
            Path("fuzz.bundle"), verification.Options(now=now, as_of=now, workers=1), io.BytesIO(data)
        )
    except NotALedger:
        return None


@FAST
@given(st.data())
def test_mutated_bundles_fail_as_designed(built: Built, data: st.DataObject) -> None:
    original = bundle_of(built.wires, built.checkpoints)
    changed = mutate(original, data)
    report = _verify_bundle(changed)
    if report is not None and report.intact:
        assert _shortened(changed, built)


def _shortened(data: bytes, built: Built) -> bool:
    """Whether `data` is the bundle cut short at an object boundary, or with whole checkpoints left out:
    the only changes that verify (DESIGN.md: verify then warns that no checkpoint covers the newest
    statements; each bundled checkpoint is checked on its own, so dropping one leaves a valid bundle)."""
    reader = bundle.open_bundle(io.BytesIO(data))
    wires = [wire for _, wire in reader.statements()]
    notes = list(reader.checkpoints())
    remaining = iter(built.checkpoints)
    in_order = all(any(note == kept for kept in remaining) for note in notes)
    return wires == built.wires[: len(wires)] and in_order


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_bundle(data: bytes) -> None:
    report = _verify_bundle(data)
    assert report is None or not report.intact or report.log_size == 0


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_bundle_header(built: Built, data: bytes) -> None:
    report = _verify_bundle(bundle.encode_header("custody.test/tamper") + data)
    assert report is not None
    assert not report.intact or report.log_size == 0


# --- checkpoint notes ---------------------------------------------------------------------------------


@FAST
@given(st.data())
def test_mutated_checkpoint_notes(built: Built, data: st.DataObject) -> None:
    note = built.checkpoints[0].encode()
    changed = mutate(note, data)
    try:
        parsed = checkpoint.parse_note(changed)
    except (NotALedger, CheckpointSignatureInvalid):
        return
    try:
        checkpoint.verify_operator(parsed, "custody.test/tamper", built.keys["operator"].public)
    except CheckpointSignatureInvalid:
        return
    assert parsed.checkpoint.body().encode() in changed  # only a change among the signature lines survives


@FAST
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_text_as_a_checkpoint_note(text: str | bytes) -> None:
    with contextlib.suppress(NotALedger, CheckpointSignatureInvalid):
        checkpoint.parse_note(text)


# --- proof files --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proof(built: Built) -> bytes:
    proofs = pytest.importorskip("ledger.proof")
    with Store(built.url, readonly=True) as store:
        data: bytes = proofs.build_proof(store, "U0000-0", now_us=append.now_us()).encode()
    proofs.verify_proof_file(
        data, trusted=[built.keys["authority"].public], operator=None, now_us=append.now_us()
    )
    return data


@FAST
@given(st.data())
def test_mutated_proof_files(built: Built, proof: bytes, data: st.DataObject) -> None:
    from ledger import proof as proofs

    changed = mutate(proof, data)
    try:
        proofs.verify_proof_file(
            changed, trusted=[built.keys["authority"].public], operator=None, now_us=append.now_us()
        )
    except (NotALedger, IntegrityError):
        return
    assert changed == proof  # pragma: no cover - a changed proof never verifies


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_a_proof_file(built: Built, proof: bytes, data: bytes) -> None:
    from ledger import proof as proofs

    with contextlib.suppress(NotALedger, IntegrityError):
        proofs.parse_proof(data)


# --- policy TOML --------------------------------------------------------------------------------------


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_as_a_policy(text: str) -> None:
    with contextlib.suppress(PolicyInvalid):
        policy.parse_policy(text)


@FAST
@given(st.data())
def test_mutated_default_policy(data: st.DataObject) -> None:
    text = policy.DEFAULT_POLICY_TEXT.encode()
    changed = mutate(text, data).decode("utf-8", "replace")
    with contextlib.suppress(PolicyInvalid):
        policy.parse_policy(changed)


# --- serials files, times, money, ids (the library's parsers) ----------------------------------------------


@FAST
@given(st.text(max_size=200))
def test_serials_file_text(text: str) -> None:
    try:
        serials = values.parse_serials(text, "fuzz.txt")
    except BadInput:
        return
    assert serials and all(statement.valid_id(s) for s in serials) and len(set(serials)) == len(serials)


@FAST
@given(
    st.one_of(
        st.text(max_size=40),
        st.from_regex(r"[0-9+-]{4,7}-[0-9]{2}-[0-9]{2}([Tt ][0-9:.,Zz+-]{0,20})?", fullmatch=True),
    )
)
def test_times(text: str) -> None:
    try:
        micros = values.parse_time(text)
    except BadInput:
        return
    assert 0 <= micros < values.TIME_LIMIT
    assert values.parse_time(values.format_time(micros)) == micros


@FAST
@given(st.one_of(st.text(max_size=30), st.from_regex(r"-?[0-9]{0,25}(\.[0-9]{0,4})?", fullmatch=True)))
def test_money(text: str) -> None:
    try:
        cents = values.parse_money(text)
    except BadInput:
        return
    assert 0 <= cents < values.CENTS_LIMIT


# --- key files ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    directory = tmp_path_factory.mktemp("keys")
    key = keys.from_seed(bytes(range(32)))
    private, public = keys.write_keypair(directory, "plain", key, None, comment="k")
    encrypted, _ = keys.write_keypair(directory, "locked", key, b"pass", comment="k")
    return {
        "private": private.read_bytes(),
        "public": public.read_bytes(),
        "encrypted": encrypted.read_bytes(),
    }


def _load_mutated(
    tmp_path_factory: pytest.TempPathFactory, original: bytes, kind: str, data: st.DataObject
) -> None:
    path = tmp_path_factory.getbasetemp() / f"fuzz-{kind}"
    path.write_bytes(mutate(original, data))
    path.chmod(0o600)
    try:
        if kind == "public":
            keys.load_public(path)
        else:
            keys.load_private(path, lambda: b"pass")
    except KeyFileError:
        pass


@FAST
@given(st.data())
def test_mutated_key_files(
    tmp_path_factory: pytest.TempPathFactory, key_files: dict[str, bytes], data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(["private", "public"]))
    _load_mutated(tmp_path_factory, key_files[kind], kind, data)


@settings(FAST, max_examples=25)  # each one that parses runs bcrypt-pbkdf
@given(st.data())
def test_mutated_encrypted_key_files(
    tmp_path_factory: pytest.TempPathFactory, key_files: dict[str, bytes], data: st.DataObject
) -> None:
    _load_mutated(tmp_path_factory, key_files["encrypted"], "encrypted", data)


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_as_key_files(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-arbitrary"
    path.write_bytes(data)
    path.chmod(0o600)
    for load in (keys.load_public, lambda p: keys.load_private(p, lambda: b"pass")):
        with contextlib.suppress(KeyFileError):
            load(path)


# --- the command line: dates, money, serials files, bundles, notes and proofs as files ------------------


@pytest.fixture(scope="module")
def cli_ledger(built: Built, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A copy of the fuzz ledger for the CLI, with key files for its participants."""
    root = tmp_path_factory.mktemp("cli")
    db = root / "custody.db"
    with Store(built.url, readonly=True):
        pass
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(built.url + suffix):
            shutil.copy(built.url + suffix, str(db) + suffix)
    paths = {"db": str(db), "root": str(root)}
    for name in ("tsmc", "kerry", "cbp", "authority", "operator"):
        private, public = keys.write_keypair(root / "keys", name, built.keys[name], None, comment=name)
        paths[name], paths[f"{name}.pub"] = str(private), str(public)
    return paths


def clean(result: Any) -> None:
    """Exit 0, 1, 2 or 3 (verify's "not compliant"); a failure is one line; never a traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2, 3), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    if result.exit_code in (1, 2):
        lines = result.stderr.strip().splitlines()
        assert lines and (len(lines) == 1 or lines[-1].startswith("custody: verification failed")), lines
        assert "Usage:" not in result.stderr and "╭" not in result.stderr


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@CLI
@given(TEXT)
def test_cli_times(cli_ledger: dict[str, str], text: str) -> None:
    result = _run("--db", cli_ledger["db"], "verify", "--as-of", text)
    clean(result)
    assert result.exit_code != 1  # a time never makes the ledger fail


@CLI
@given(TEXT, st.sampled_from(["history", "record"]))
def test_cli_times_elsewhere(cli_ledger: dict[str, str], text: str, where: str) -> None:
    if where == "history":
        result = _run("--db", cli_ledger["db"], "history", "U0000-0", "--at", text)
    else:  # a unit with no chain: whatever the time, nothing is recorded
        result = _run(
            "--db",
            cli_ledger["db"],
            "record",
            "shipped-to-us",
            "--key",
            cli_ledger["kerry"],
            "--serial",
            "GHOST",
            "--port-of-entry",
            "DFW",
            "--waybill",
            "W",
            "--at",
            text,
        )
        assert result.exit_code != 0
    clean(result)


@CLI
@given(TEXT, TEXT)
def test_cli_money(cli_ledger: dict[str, str], value: str, duty: str) -> None:
    result = _run(
        "--db",
        cli_ledger["db"],
        "record",
        "duty-paid",
        "--key",
        cli_ledger["cbp"],
        "--serial",
        "GHOST",
        "--entry",
        "E",
        "--entered-value",
        value,
        "--duty",
        duty,
    )
    clean(result)
    assert result.exit_code in (1, 2)


@CLI
@given(st.binary(max_size=200))
def test_cli_serials_files(
    cli_ledger: dict[str, str], tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("serials") / "serials.txt"
    path.write_bytes(data)
    result = _run(
        "--db",
        cli_ledger["db"],
        "record",
        "shipped-to-us",
        "--key",
        cli_ledger["kerry"],
        "--serials-file",
        str(path),
        "--port-of-entry",
        "DFW",
        "--waybill",
        "W",
    )
    clean(result)
    assert result.exit_code in (1, 2)  # every serial there is GHOST-like: no chain, or bad input


@CLI
@given(st.data())
def test_cli_bundles(
    cli_ledger: dict[str, str], built: Built, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("bundles") / "fuzz.bundle"
    original = bundle_of(built.wires, built.checkpoints)
    changed = mutate(original, data)
    path.write_bytes(changed)
    result = _run("verify", str(path), "--json")
    clean(result)
    if result.exit_code in (0, 3):
        assert _shortened(changed, built)


@CLI
@given(st.data())
def test_cli_checkpoint_files(
    cli_ledger: dict[str, str], built: Built, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("notes") / "checkpoint.txt"
    path.write_bytes(mutate(built.checkpoints[0].encode(), data))
    clean(_run("--db", cli_ledger["db"], "verify", "--checkpoint", str(path)))


@CLI
@given(st.data())
def test_cli_proof_files(
    cli_ledger: dict[str, str], proof: bytes, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("proofs") / "unit.proof"
    changed = mutate(proof, data)
    path.write_bytes(changed)
    result = _run("verify-proof", str(path), "--trust", cli_ledger["authority.pub"])
    clean(result)
    if changed != proof:
        assert result.exit_code in (1, 2)


@CLI
@given(TEXT)
def test_cli_policy_files(
    cli_ledger: dict[str, str], tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("policies") / "policy.toml"
    path.write_text(text, encoding="utf-8")
    directory = tmp_path_factory.mktemp("newledger")
    result = _run(
        "--db",
        str(directory / "custody.db"),
        "init",
        "--origin",
        "custody.test/fuzz",
        "--authority",
        cli_ledger["authority"],
        "--operator",
        cli_ledger["operator.pub"],
        "--policy",
        str(path),
    )
    clean(result)
    if result.exit_code == 2:
        assert not (directory / "custody.db").exists() or _empty_ledger(directory / "custody.db")


def _empty_ledger(path: Path) -> bool:
    try:
        with Store(str(path), readonly=True) as store:
            return store.size() == 0
    except LedgerError:
        return True
