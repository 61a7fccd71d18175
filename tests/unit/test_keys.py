"""ledger/keys.py: key file round trips, ssh-keygen interoperability, refusals, small order, passphrases."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import VerifyKey

from ledger import keys, small_order
from ledger.errors import KeyFileError
from ledger.keys import (
    KDF_ROUNDS,
    PASSPHRASE_ENV,
    PrivateKey,
    from_seed,
    generate,
    load_private,
    load_public,
    parse_public_line,
    passphrase_from,
    public_line,
    write_keypair,
)
from ledger.small_order import is_small_order
from ledger.statement import key_id
from tests.conftest import SHARED

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")
VECTORS = SHARED / "vectors" / "custody"
SEED = bytes(range(32))
PASS = b"correct horse"
FAST = 1  # bcrypt rounds for tests: the format is the same, only the work factor differs

# The eight points of order 1, 2, 4 and 8 (canonical encodings), as in libsodium's blocklist.
_P = 2**255 - 19
TORSION = [
    bytes(32),                                                             # (√-1, 0), order 4
    bytes([1]) + bytes(31),                                                # identity, order 1
    (_P - 1).to_bytes(32, "little"),                                       # (0, -1), order 2
    bytes(31) + b"\x80",                                                   # (-√-1, 0), order 4
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),  # order 8
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),  # order 8
]
# Their other encodings: y ≥ p, or x = 0 with the sign bit set (libsodium ignores that bit).
NON_CANONICAL = [
    _P.to_bytes(32, "little"),                                             # y = p ≡ 0
    (_P | 1 << 255).to_bytes(32, "little"),
    (_P + 1).to_bytes(32, "little"),                                       # y = p + 1 ≡ 1
    (_P + 1 | 1 << 255).to_bytes(32, "little"),
    (1 | 1 << 255).to_bytes(32, "little"),                                 # identity, sign bit set
    (_P - 1 | 1 << 255).to_bytes(32, "little"),                            # (0, -1), sign bit set
]


def never() -> bytes | None:
    raise AssertionError("the passphrase was asked for an unencrypted key")


def give(passphrase: bytes | None) -> Callable[[], bytes | None]:
    return lambda: passphrase


def put(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(KeyFileError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def key() -> PrivateKey:
    return from_seed(SEED)


@pytest.fixture
def plain(tmp_path: Path, key: PrivateKey) -> Path:
    return write_keypair(tmp_path, "plain", key, None)[0]


@pytest.fixture
def locked(tmp_path: Path, key: PrivateKey) -> Path:
    return write_keypair(tmp_path, "locked", key, PASS, rounds=FAST)[0]


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


# --- PrivateKey ---------------------------------------------------------------------------------------


def test_signature_verifies_with_libsodium(key: PrivateKey) -> None:
    signature = key.sign(b"custody-ledger/v1\nbody")
    assert len(signature) == 64
    VerifyKey(key.public).verify(b"custody-ledger/v1\nbody", signature)
    fresh = generate()
    VerifyKey(fresh.public).verify(b"m", fresh.sign(b"m"))
    assert fresh != key


def test_key_id_and_repr_hide_private_bytes(key: PrivateKey) -> None:
    assert key.key_id == key_id(key.public) and len(key.public) == 32
    assert repr(key) == f"PrivateKey(key_id={key.key_id!r})"
    assert SEED.hex() not in repr(key) and SEED.hex() not in str(key)
    assert from_seed(SEED) == key and hash(from_seed(SEED)) == hash(key)
    with pytest.raises(ValueError):
        from_seed(SEED[:31])


@pytest.mark.skipif(not (VECTORS / "statements.json").exists(), reason="shared vectors are not present")
def test_vector_seeds_and_public_lines() -> None:
    vector_keys = json.loads((VECTORS / "statements.json").read_text())["keys"]
    for name, entry in vector_keys.items():
        made = from_seed(bytes.fromhex(entry["seed_hex"]))
        assert made.public.hex() == entry["public_hex"], name
        assert made.key_id == entry["key_id"], name
        pub = VECTORS / f"{name}.pub"
        if pub.exists():
            assert load_public(pub) == made.public, name
            assert public_line(made.public, f"{name}@vectors") == pub.read_text().strip()


# --- writing and reading back -------------------------------------------------------------------------


def test_round_trip_unencrypted(tmp_path: Path, key: PrivateKey) -> None:
    private, public = write_keypair(tmp_path / "keys", "fab", key, None)
    assert (private, public) == (tmp_path / "keys" / "fab", tmp_path / "keys" / "fab.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    assert public.read_text() == public_line(key.public, "fab") + "\n"
    assert public.read_text().startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
    assert load_private(private, never) == key
    assert load_public(public) == key.public


def test_round_trip_encrypted(tmp_path: Path, key: PrivateKey) -> None:
    private, public = write_keypair(tmp_path, "lab", key, PASS, comment="lab@example", rounds=FAST)
    assert public.read_text().endswith(" lab@example\n")
    assert PASS not in private.read_bytes()
    asked: list[int] = []

    def passphrase() -> bytes:
        asked.append(1)
        return PASS

    assert load_private(private, passphrase) == key
    assert asked == [1]


def test_default_rounds_are_written(tmp_path: Path, key: PrivateKey) -> None:
    private, _ = write_keypair(tmp_path, "k", key, PASS)
    lines = private.read_text().splitlines()
    blob = base64.b64decode("".join(lines[1:-1]))
    header = b"openssh-key-v1\x00\x00\x00\x00\x0aaes256-ctr\x00\x00\x00\x06bcrypt"
    assert blob.startswith(header)
    options = blob[len(header) + 4:]  # kdfoptions: string salt, uint32 rounds
    salt_length = struct.unpack(">I", options[:4])[0]
    assert struct.unpack(">I", options[4 + salt_length:8 + salt_length])[0] == KDF_ROUNDS


def test_refuses_to_overwrite(tmp_path: Path, key: PrivateKey) -> None:
    private, _ = write_keypair(tmp_path, "k", key, None)
    before = private.read_bytes()
    assert "already exists" in refusal(lambda: write_keypair(tmp_path, "k", generate(), None))
    assert private.read_bytes() == before
    (tmp_path / "only.pub").write_text("x\n")
    assert "only.pub already exists" in refusal(lambda: write_keypair(tmp_path, "only", key, None))
    assert not (tmp_path / "only").exists()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../k", "nul\x00"])
def test_refuses_names_that_are_not_plain(tmp_path: Path, key: PrivateKey, name: str) -> None:
    assert "plain file name" in refusal(lambda: write_keypair(tmp_path, name, key, None))


def test_refuses_bad_comment_and_empty_passphrase(tmp_path: Path, key: PrivateKey) -> None:
    refusal(lambda: write_keypair(tmp_path, "k", key, None, comment="two\nlines"))
    refusal(lambda: write_keypair(tmp_path, "k", key, b""))
    assert list(tmp_path.iterdir()) == []


def test_directory_that_is_a_file(tmp_path: Path, key: PrivateKey) -> None:
    (tmp_path / "file").write_text("")
    assert "cannot create directory" in refusal(lambda: write_keypair(tmp_path / "file", "k", key, None))


# --- ssh-keygen ---------------------------------------------------------------------------------------


@needs_ssh_keygen
@pytest.mark.parametrize("passphrase", ["pass", ""])
def test_ssh_keygen_keys_load(tmp_path: Path, passphrase: str) -> None:
    path = tmp_path / "id"
    assert SSH_KEYGEN is not None
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", passphrase, "-C", "c", "-f", str(path)],
                   check=True, capture_output=True)
    ask = give(passphrase.encode()) if passphrase else never
    loaded = load_private(path, ask)
    assert loaded.public == load_public(path.with_suffix(".pub"))
    if passphrase:
        assert refusal(lambda: load_private(path, give(b"nope"))) == f"wrong passphrase for {path}"


@needs_ssh_keygen
def test_ssh_keygen_reads_our_keys(tmp_path: Path, key: PrivateKey) -> None:
    assert SSH_KEYGEN is not None
    private, public = write_keypair(tmp_path, "k", key, PASS, rounds=FAST)
    out = subprocess.run([SSH_KEYGEN, "-y", "-P", PASS.decode(), "-f", str(private)],
                         check=True, capture_output=True, text=True).stdout
    assert parse_public_line(out) == key.public == load_public(public)


# --- PKCS#8 -------------------------------------------------------------------------------------------


def pkcs8(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey, passphrase: bytes | None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def test_pkcs8_pem(tmp_path: Path) -> None:
    raw = ed25519.Ed25519PrivateKey.from_private_bytes(SEED)
    plain = put(tmp_path / "plain.pem", pkcs8(raw, None))
    locked = put(tmp_path / "locked.pem", pkcs8(raw, PASS))
    assert load_private(plain, never) == from_seed(SEED)
    assert load_private(locked, give(PASS)) == from_seed(SEED)
    assert refusal(lambda: load_private(locked, give(b"nope"))) == f"wrong passphrase for {locked}"
    assert refusal(lambda: load_private(locked, give(b""))) == f"wrong passphrase for {locked}"
    assert "is encrypted: give a passphrase" in refusal(lambda: load_private(locked, give(None)))


def test_pem_public_key(tmp_path: Path, key: PrivateKey) -> None:
    spki = ed25519.Ed25519PublicKey.from_public_bytes(key.public).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = put(tmp_path / "k.pem", spki, 0o644)
    assert load_public(path) == key.public
    assert "is a public key" in refusal(lambda: load_private(path, never))
    rsa_public = rsa_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert "RSA" in refusal(lambda: load_public(put(tmp_path / "rsa.pem", rsa_public)))


# --- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o601])
def test_refuses_keys_open_to_group_or_others(plain: Path, mode: int) -> None:
    plain.chmod(mode)
    message = refusal(lambda: load_private(plain, never))
    assert str(plain) in message and f"{mode:04o}" in message and "chmod 600" in message


def test_owner_only_modes_are_accepted(plain: Path, key: PrivateKey) -> None:
    for mode in (0o400, 0o700):
        plain.chmod(mode)
        assert load_private(plain, never) == key


def test_wrong_passphrase(locked: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_private(locked, give(b"guess"))
    assert str(info.value) == f"wrong passphrase for {locked}"
    assert info.value.__cause__ is not None
    assert "guess" not in str(info.value) and PASS.decode() not in str(info.value)


def test_encrypted_key_without_passphrase(locked: Path) -> None:
    assert refusal(lambda: load_private(locked, passphrase_from({}, None, None))) == (
        f"key {locked} is encrypted: give a passphrase via CUSTODY_PASSPHRASE, --passphrase-file "
        f"or a terminal")


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.95])
def test_truncated(plain: Path, locked: Path, cut: float) -> None:
    for path in (plain, locked):
        data = path.read_bytes()
        put(path, data[:int(len(data) * cut)])
        assert "truncated" in refusal(functools.partial(load_private, path, give(PASS)))


def test_missing_body_line(plain: Path, locked: Path) -> None:
    for path in (plain, locked):
        lines = path.read_text().splitlines(keepends=True)
        put(path, "".join(lines[:2] + lines[3:]).encode())
        assert str(path) in refusal(functools.partial(load_private, path, give(PASS)))


def test_corrupted_base64(plain: Path) -> None:
    lines = plain.read_text().splitlines(keepends=True)
    lines[2] = "!" + lines[2][1:]
    put(plain, "".join(lines).encode())
    assert refusal(lambda: load_private(plain, never)) == f"{plain} is damaged: its base64 is invalid"


def test_mismatched_private_half(tmp_path: Path, key: PrivateKey) -> None:
    """cryptography checks the copies of the public key, not that the seed makes it: we do."""
    other = from_seed(bytes(32))
    lines = write_keypair(tmp_path, "k", key, None)[0].read_text().splitlines()
    blob = base64.b64decode("".join(lines[1:-1]))
    seed_at = blob.rindex(key.public) - 32  # private section: seed ‖ public
    forged = blob[:seed_at] + bytes(32) + blob[seed_at + 32:]
    assert other.public != key.public
    path = put(tmp_path / "forged", b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + base64.encodebytes(forged)
               + b"-----END OPENSSH PRIVATE KEY-----\n")
    assert "does not match" in refusal(lambda: load_private(path, never))


def test_public_key_given_as_private(tmp_path: Path, key: PrivateKey) -> None:
    _, public = write_keypair(tmp_path, "k", key, None)
    message = refusal(lambda: load_private(public, never))
    assert message == f"{public} is a public key; give the private key file"


def test_private_key_given_as_public(plain: Path) -> None:
    assert "is a private key" in refusal(lambda: load_public(plain))


def test_rsa_and_ecdsa_refused(tmp_path: Path) -> None:
    rsa_private = rsa_key()
    files = {
        "rsa.p8": pkcs8(rsa_private, None),
        "rsa.ssh": rsa_private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()),
        "rsa.pem": rsa_private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()),
        "ec.ssh": ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(PASS)),
    }
    for name, data in files.items():
        path = put(tmp_path / name, data)
        message = refusal(functools.partial(load_private, path, never))
        assert str(path) in message and "Ed25519" in message, message
        reason = message.removeprefix(str(path))
        assert ("RSA" in reason or "rsa" in reason) == name.startswith("rsa"), message


def test_directory_missing_binary_empty(tmp_path: Path) -> None:
    assert refusal(lambda: load_private(tmp_path, never)) == f"{tmp_path} is a directory, not a key file"
    assert refusal(lambda: load_public(tmp_path)) == f"{tmp_path} is a directory, not a key file"
    missing = tmp_path / "nope"
    assert refusal(lambda: load_private(missing, never)) == f"{missing}: no such key file"
    assert refusal(lambda: load_public(missing)) == f"{missing}: no such key file"
    binary = put(tmp_path / "bin", b"\xff\xfe\x00\x81" * 10)
    assert "binary data" in refusal(lambda: load_private(binary, never))
    assert "binary data" in refusal(lambda: load_public(binary))
    empty = put(tmp_path / "empty", b"\n")
    assert refusal(lambda: load_private(empty, never)) == f"{empty} is empty"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert "not a regular file" in refusal(lambda: load_private(fifo, never))


# --- public lines -------------------------------------------------------------------------------------


def test_public_line_round_trip(key: PrivateKey) -> None:
    line = public_line(key.public, "a b c")
    assert line.endswith(" a b c")
    assert parse_public_line(line) == key.public
    assert parse_public_line(public_line(key.public, "") + "\n") == key.public
    assert public_line(key.public, "") == line.removesuffix(" a b c")


def test_public_line_refusals(key: PrivateKey) -> None:
    good = public_line(key.public, "c")
    encoded = good.split()[1]
    blob = base64.b64decode(encoded)
    bad = {
        "ssh-rsa " + encoded: "ssh-rsa",
        "ssh-ed25519": "not an OpenSSH public key line",
        "hello world": "not an OpenSSH public key line",
        "ssh-ed25519 " + encoded[:-1]: "base64",
        "ssh-ed25519 " + encoded + "=": "base64",
        "ssh-ed25519 " + base64.b64encode(blob + b"x").decode(): "malformed",
        "ssh-ed25519 " + base64.b64encode(blob[:-1]).decode(): "truncated",
        "ssh-ed25519 " + base64.b64encode(blob.replace(b"25519", b"25518")).decode(): "ssh-ed25518",
        good + "\n" + good: "several lines",
    }
    for text, expected in bad.items():
        assert expected in refusal(functools.partial(parse_public_line, text)), text


def test_load_public_names_the_file(tmp_path: Path, key: PrivateKey) -> None:
    two = put(tmp_path / "two.pub", (public_line(key.public, "a") + "\n# note\n"
                                     + public_line(key.public, "b") + "\n").encode())
    assert refusal(lambda: load_public(two)) == f"{two} has 2 key lines; expected one ssh-ed25519 line"
    rsa_line = put(tmp_path / "rsa.pub", b"ssh-rsa AAAAB3NzaC1yc2E= x\n")
    assert refusal(lambda: load_public(rsa_line)).startswith(f"{rsa_line}: key type ssh-rsa")


# --- small order --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", TORSION + NON_CANONICAL, ids=lambda raw: raw.hex()[:8] + raw.hex()[-2:])
def test_small_order_points(raw: bytes) -> None:
    assert is_small_order(raw)


def test_normal_keys_are_not_small_order(key: PrivateKey) -> None:
    assert not is_small_order(key.public)
    assert not any(is_small_order(generate().public) for _ in range(50))
    # A prime-order point plus a torsion component (C2SP CCTV ed25519 vectors): not of small order.
    mixed = bytes.fromhex("10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f")
    assert not is_small_order(mixed)
    assert not is_small_order(bytes([2]) + bytes(31))  # y = 2 is not on the curve
    with pytest.raises(ValueError):
        is_small_order(bytes(31))


def test_torsion_points_are_distinct_and_closed_under_doubling() -> None:
    """An independent check of the table: eight distinct points whose doubles stay in the table."""
    points = {small_order._decode_point(raw) for raw in TORSION}
    assert None not in points and len(points) == 8
    assert all(small_order._double(p) in points for p in points if p is not None)
    assert {small_order._decode_point(raw) for raw in NON_CANONICAL} <= points


# --- passphrases --------------------------------------------------------------------------------------


def test_passphrase_precedence(tmp_path: Path) -> None:
    file = put(tmp_path / "pass", b"from file\r\nsecond line\n")
    env = {PASSPHRASE_ENV: "from env"}
    prompts: list[int] = []

    def prompt() -> str:
        prompts.append(1)
        return "from prompt"

    assert passphrase_from(env, file, prompt)() == b"from file"
    assert passphrase_from(env, None, prompt)() == b"from env"
    assert passphrase_from({PASSPHRASE_ENV: ""}, None, prompt)() == b"from prompt"
    assert prompts == [1]
    assert passphrase_from({}, None, None)() is None


def test_passphrase_is_lazy_and_asked_once(tmp_path: Path, plain: Path, locked: Path,
                                           key: PrivateKey) -> None:
    prompts: list[int] = []

    def prompt() -> str:
        prompts.append(1)
        return PASS.decode()

    source = passphrase_from({}, tmp_path / "missing", prompt)  # not read until needed
    assert load_private(plain, source) == key
    source = passphrase_from({}, None, prompt)
    assert prompts == []
    assert load_private(locked, source) == key and source() == PASS
    assert prompts == [1]


def test_passphrase_file_problems(tmp_path: Path, locked: Path) -> None:
    missing = tmp_path / "missing"
    assert f"cannot read passphrase file {missing}" in refusal(passphrase_from({}, missing, None))
    assert f"cannot read passphrase file {missing}" in refusal(
        lambda: load_private(locked, passphrase_from({}, missing, None)))
    assert "cannot read passphrase file" in refusal(passphrase_from({}, tmp_path, None))
    empty = put(tmp_path / "empty", b"\n")
    assert refusal(passphrase_from({}, empty, None)) == f"passphrase file {empty} is empty"


# --- properties ---------------------------------------------------------------------------------------


ANY_FILE = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_key_file_errors(path: Path, data: bytes) -> None:
    put(path, data)
    for call in (lambda: load_private(path, give(PASS)), lambda: load_public(path)):
        try:
            call()
        except KeyFileError as e:
            assert "\n" not in str(e) and PASS.decode() not in str(e)


@ANY_FILE
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_give_key_file_errors_only(tmp_path: Path, data: bytes) -> None:
    _only_key_file_errors(tmp_path / "any", data)


@ANY_FILE
@given(body=st.binary(max_size=400), magic=st.booleans(),
       label=st.sampled_from(["OPENSSH PRIVATE KEY", "PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PUBLIC KEY"]))
def test_arbitrary_pem_bodies_give_key_file_errors_only(tmp_path: Path, body: bytes, magic: bool,
                                                        label: str) -> None:
    if magic:
        body = b"openssh-key-v1\x00" + body
    pem = f"-----BEGIN {label}-----\n{base64.encodebytes(body).decode()}-----END {label}-----\n"
    _only_key_file_errors(tmp_path / "pem", pem.encode())


@ANY_FILE
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255),
       encrypted=st.booleans())
def test_any_byte_change_is_refused_or_harmless(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                key: PrivateKey, position: int, value: int,
                                                encrypted: bool) -> None:
    """A changed byte of the decoded key gives a KeyFileError, or (padding, comment) the same key."""
    monkeypatch.setattr(keys, "MAX_KDF_ROUNDS", 8)  # a changed rounds field must not make bcrypt slow
    name = "locked" if encrypted else "plain"
    path = tmp_path / name
    if not path.exists():
        write_keypair(tmp_path, name, key, PASS if encrypted else None, rounds=FAST)
    lines = path.read_text().splitlines()
    blob = bytearray(base64.b64decode("".join(lines[1:-1])))
    blob[position % len(blob)] = value
    mutant = put(tmp_path / "mutant", (f"{lines[0]}\n{base64.b64encode(bytes(blob)).decode()}\n"
                                       f"{lines[-1]}\n").encode())
    with contextlib.suppress(KeyFileError):
        assert load_private(mutant, give(PASS)) == key


def test_load_public_leaves_small_order_to_the_caller(tmp_path: Path) -> None:
    """Reading is not judging: `participant add` and `verify` refuse these keys through is_small_order."""
    for raw in TORSION[:2]:
        path = put(tmp_path / "weak.pub", (public_line(raw, "weak") + "\n").encode(), 0o644)
        assert load_public(path) == raw and is_small_order(raw)
