"""Ed25519 key files: OpenSSH private keys (bcrypt-pbkdf), PKCS#8 PEM, OpenSSH public lines, PEM SPKI.

DESIGN.md "Command line": private keys are OpenSSH-format Ed25519 keys encrypted with bcrypt-pbkdf
(OpenSSH PROTOCOL.key), so `ssh-keygen -t ed25519` keys work too, and PKCS#8 PEM (RFC 5958) is also read;
public keys are one `ssh-ed25519 AAAA… comment` line (RFC 8709) or PEM SubjectPublicKeyInfo (RFC 8410).
A private key file that group or others may access is refused, and passphrases are asked for only when
a key is encrypted.
Every problem with a key file is a `KeyFileError` naming the file; no passphrase appears in any message.
"""

from __future__ import annotations

import binascii
import functools
import os
import re
import stat
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519

from ledger.errors import KeyFileError
from ledger.statement import key_id

KDF_ROUNDS = 16  # bcrypt-pbkdf rounds for new keys: ssh-keygen's default (-a 16), about 0.1 s to unlock
MAX_KDF_ROUNDS = 4096  # refuse more, so that a damaged rounds field fails at once instead of hanging
# PKCS#8 keys (RFC 8018): `cryptography` and OpenSSL write 2,048 PBKDF2 iterations, OWASP asks 600,000 for
# passwords; more than this (seconds of work) is refused before the passphrase is tried, as bcrypt's rounds
# are. scrypt needs no cap here: OpenSSL refuses parameters beyond its 32 MiB default memory.
MAX_PBKDF2_ITERATIONS = 10_000_000
MAX_KEY_FILE_BYTES = 64 * 1024  # real key files are a few hundred bytes
PASSPHRASE_ENV = "CUSTODY_PASSPHRASE"  # DESIGN.md "Command line"
SSH_ED25519 = "ssh-ed25519"  # RFC 8709 §4 key type name

_OPENSSH_MAGIC = b"openssh-key-v1\x00"  # OpenSSH PROTOCOL.key
_OPENSSH_LABEL = "OPENSSH PRIVATE KEY"
# Ciphers `cryptography` can unwrap: name -> (block length, AEAD tag length); PROTOCOL.key, bug 3553.
_OPENSSH_CIPHERS = {
    b"aes256-ctr": (16, 0),
    b"aes256-cbc": (16, 0),
    b"aes256-gcm@openssh.com": (16, 16),
}
_OPENSSH_PLAIN_BLOCK = 8  # PROTOCOL.key: the unencrypted private list is padded to 8 bytes
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----")
_TRADITIONAL = {"RSA PRIVATE KEY": "an RSA", "DSA PRIVATE KEY": "a DSA", "EC PRIVATE KEY": "an ECDSA"}
_NEEDS_PASSPHRASE = "give a passphrase via " + PASSPHRASE_ENV + ", --passphrase-file or a terminal"

# Edwards25519 (RFC 8032 §5.1): field prime, curve constant d, and sqrt(-1) for decoding.


# --- private keys -------------------------------------------------------------------------------------


class PrivateKey:
    """An Ed25519 signing key; its repr shows the key id only, never private bytes."""

    __slots__ = ("_key", "_key_id", "_public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key().public_bytes_raw()
        self._key_id = key_id(self._public)

    @property
    def public(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    @property
    def key_id(self) -> str:
        """DESIGN.md "Statements": lowercase hex SHA-256 of the raw public key."""
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        """The raw 64-byte Ed25519 (RFC 8032) signature of `message`."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"PrivateKey(key_id={self._key_id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrivateKey) and other._public == self._public

    def __hash__(self) -> int:
        return hash(self._public)


def generate() -> PrivateKey:
    """A new random key."""
    return PrivateKey(ed25519.Ed25519PrivateKey.generate())


def from_seed(seed: bytes) -> PrivateKey:
    """The key with this 32-byte RFC 8032 seed (the private key proper); for tests and vectors."""
    if len(seed) != 32:
        raise ValueError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
    return PrivateKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed))


# --- writing ------------------------------------------------------------------------------------------


def _check_name(name: str) -> None:
    if (not name or name in (".", "..") or "/" in name or "\x00" in name
            or (os.altsep is not None and os.altsep in name)):
        raise KeyFileError(f"key name {name!r:.80} is not a plain file name")


def _check_comment(comment: str) -> None:
    if any(c in comment for c in "\r\n\x00"):
        raise KeyFileError(f"key comment {comment!r:.80} must be one line")


def _create(path: Path, data: bytes, mode: int) -> None:
    """Write a new file that never existed before, with `mode` from its first moment."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as e:
        raise KeyFileError(f"{path} already exists; not overwriting it") from e
    except OSError as e:
        raise KeyFileError(f"cannot create {path}: {e.strerror or e}") from e
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits we want (never added any)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        path.unlink(missing_ok=True)
        raise KeyFileError(f"cannot write {path}: {e.strerror or e}") from e


def write_keypair(directory: Path, name: str, key: PrivateKey, passphrase: bytes | None,
                  comment: str | None = None, *, rounds: int = KDF_ROUNDS) -> tuple[Path, Path]:
    """Write `DIRECTORY/NAME` (OpenSSH private key, mode 0600) and `DIRECTORY/NAME.pub`; never overwrite.

    With a passphrase the private key is encrypted (aes256-ctr, bcrypt-pbkdf with `rounds` rounds), as
    ssh-keygen does; `None` writes it unencrypted. The directory is created (mode 0700) if missing.
    Returns the paths of the private and the public file.
    """
    _check_name(name)
    comment = name if comment is None else comment
    _check_comment(comment)
    if passphrase is not None and not passphrase:
        raise KeyFileError(f"empty passphrase for {directory / name}: write it unencrypted instead")
    if passphrase is not None and not 1 <= rounds <= MAX_KDF_ROUNDS:
        raise ValueError(f"bcrypt rounds must be 1…{MAX_KDF_ROUNDS}, not {rounds}")
    private_path, public_path = directory / name, directory / (name + ".pub")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise KeyFileError(f"cannot create directory {directory}: {e.strerror or e}") from e
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists; not overwriting it")
    encryption: serialization.KeySerializationEncryption
    if passphrase is None:
        encryption = serialization.NoEncryption()
    else:
        encryption = (serialization.PrivateFormat.OpenSSH.encryption_builder()
                      .kdf_rounds(rounds).build(passphrase))
    pem = key._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 encryption)
    _create(private_path, pem, 0o600)
    try:
        _create(public_path, (public_line(key.public, comment) + "\n").encode(), 0o644)
    except KeyFileError:
        private_path.unlink(missing_ok=True)  # no half-written pair
        raise
    return private_path, public_path


# --- reading files ------------------------------------------------------------------------------------


def _read(path: Path) -> tuple[bytes, int]:
    """The bytes of a regular key file and its permission bits; any OS problem is a KeyFileError."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise KeyFileError(f"{path}: no such key file") from e
    except IsADirectoryError as e:
        raise KeyFileError(f"{path} is a directory, not a key file") from e
    except OSError as e:
        raise KeyFileError(f"cannot open key file {path}: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise KeyFileError(f"{path} is a directory, not a key file")
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{path} is not a regular file")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileError(f"{path} is too large ({st.st_size} bytes) to be a key file")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_KEY_FILE_BYTES:
                raise KeyFileError(f"{path} is too large to be a key file")
        return b"".join(chunks), stat.S_IMODE(st.st_mode)
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)


def _text(data: bytes, path: Path) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise KeyFileError(f"{path} is binary data, not a PEM or OpenSSH key file") from e
    if not text.strip():
        raise KeyFileError(f"{path} is empty")
    return text


def _b64(text: str) -> bytes:
    """Strict base64: raises ValueError for anything but the one canonical, padded encoding."""
    encoded = text.encode("ascii")
    decoded = binascii.a2b_base64(encoded, strict_mode=True)
    if binascii.b2a_base64(decoded, newline=False) != encoded:  # stray "=" or non-zero spare bits
        raise ValueError("not canonical base64")
    return decoded


def _pem(text: str, path: Path) -> tuple[str, bytes] | None:
    """(label, decoded body) of a file holding one PEM block (RFC 7468), or None if it is not PEM."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    begin = _PEM_BEGIN.fullmatch(lines[0])
    if begin is None:
        return None
    label = begin.group(1)
    end = f"-----END {label}-----"
    if end not in lines:
        raise KeyFileError(f"{path} is truncated: it has no '{end}' line")
    if lines.index(end) != len(lines) - 1:
        raise KeyFileError(f"{path} has text after its '{end}' line")
    if label in _TRADITIONAL:
        return label, b""  # refused by type; the body is never needed
    try:
        return label, _b64("".join(lines[1:-1]))
    except ValueError as e:
        raise KeyFileError(f"{path} is damaged: its base64 is invalid") from e


def _der_length_ok(der: bytes) -> bool:
    """True if `der` is exactly one DER SEQUENCE (catches truncation before any passphrase is tried)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return 2 + first == len(der)
    count = first & 0x7F
    if count == 0 or count > 4 or len(der) < 2 + count:
        return False
    return 2 + count + int.from_bytes(der[2:2 + count], "big") == len(der)


_OID_PBES2 = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13 (RFC 8018 A.4)
_OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12 (RFC 8018 A.2)
_OID_SCRYPT = bytes.fromhex("2b06010401da47040b")  # 1.3.6.1.4.1.11591.4.11 (RFC 7914 §7)


def _der_items(der: bytes) -> list[tuple[int, bytes]]:
    """The (tag, contents) of each DER item in `der`, one level deep; ValueError if they do not tile it."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(der):
        if pos + 2 > len(der):
            raise ValueError("truncated")
        tag, first = der[pos], der[pos + 1]
        pos += 2
        if first >= 0x80:
            count = first & 0x7F
            if not 1 <= count <= 4 or pos + count > len(der):
                raise ValueError("bad length")
            first = int.from_bytes(der[pos:pos + count], "big")
            pos += count
        if pos + first > len(der):
            raise ValueError("truncated")
        items.append((tag, der[pos:pos + first]))
        pos += first
    return items


def _kdf_iterations(der: bytes) -> int | None:
    """The iteration count an EncryptedPrivateKeyInfo (RFC 5958 §3) asks of its KDF: PBES2's PBKDF2, or a
    PBES1 or PKCS#12 scheme's `SEQUENCE {salt, iterations}`; None for scrypt. ValueError if malformed."""
    ((_, info),) = _der_items(der)
    (_, algorithm), _ = _der_items(info)
    oid_item, *params = _der_items(algorithm)
    if oid_item[0] != 0x06 or len(params) != 1 or params[0][0] != 0x30:
        raise ValueError("no algorithm parameters")
    fields = _der_items(params[0][1])
    if oid_item[1] == _OID_PBES2:
        (_, kdf), _ = fields
        (tag, oid), *kdf_params = _der_items(kdf)
        if oid == _OID_SCRYPT:
            return None
        if tag != 0x06 or oid != _OID_PBKDF2 or len(kdf_params) != 1:
            raise ValueError("unknown key derivation")
        fields = _der_items(kdf_params[0][1])
    if len(fields) < 2 or fields[1][0] != 0x02:
        raise ValueError("no iteration count")
    return int.from_bytes(fields[1][1], "big", signed=True)


def _algorithm(key: object) -> str:
    """An article and a name for a key type, for messages."""
    names: tuple[tuple[type, str], ...] = (
        (rsa.RSAPrivateKey, "an RSA"), (rsa.RSAPublicKey, "an RSA"),
        (ec.EllipticCurvePrivateKey, "an ECDSA"), (ec.EllipticCurvePublicKey, "an ECDSA"),
        (dsa.DSAPrivateKey, "a DSA"), (dsa.DSAPublicKey, "a DSA"),
        (ed448.Ed448PrivateKey, "an Ed448"), (ed448.Ed448PublicKey, "an Ed448"),
        (x25519.X25519PrivateKey, "an X25519"), (x25519.X25519PublicKey, "an X25519"),
        (x448.X448PrivateKey, "an X448"), (x448.X448PublicKey, "an X448"),
    )
    for cls, name in names:
        if isinstance(key, cls):
            return name
    return "a non-Ed25519"


def _shown(value: bytes | str, limit: int = 40) -> str:
    """At most `limit` characters of text read from a file, safe for a one-line message."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in text[:limit])


def _looks_public(text: str) -> bool:
    first = text.split(maxsplit=1)[0]
    return first.startswith(("ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"))


# --- OpenSSH private keys (PROTOCOL.key) --------------------------------------------------------------


class _Truncated(Exception):
    """A length or string runs past the end of an SSH wire-format buffer."""


class _Reader:
    """RFC 4251 §5 wire-format fields: uint32 and length-prefixed strings."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def u32(self) -> int:
        if self._pos + 4 > len(self._data):
            raise _Truncated
        (value,) = struct.unpack_from(">I", self._data, self._pos)
        self._pos += 4
        return int(value)

    def string(self) -> bytes:
        length = self.u32()
        if self._pos + length > len(self._data):
            raise _Truncated
        value = self._data[self._pos:self._pos + length]
        self._pos += length
        return value

    def rest(self) -> bytes:
        value = self._data[self._pos:]
        self._pos = len(self._data)
        return value


def _ssh_string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def _ed25519_from_blob(blob: bytes) -> bytes:
    """The raw key from an RFC 8709 `ssh-ed25519` public key blob; KeyFileError naming any other type."""
    reader = _Reader(blob)
    try:
        kind = reader.string()
        if kind != SSH_ED25519.encode():
            raise KeyFileError(f"key type {_shown(kind)} is not {SSH_ED25519}")
        raw = reader.string()
    except _Truncated as e:
        raise KeyFileError("a truncated public key blob") from e
    if len(raw) != 32 or reader.rest():
        raise KeyFileError("a malformed ssh-ed25519 public key blob")
    return raw


def _load_openssh(blob: bytes, path: Path, passphrase: Callable[[], bytes | None]) -> PrivateKey:
    if not blob.startswith(_OPENSSH_MAGIC):
        raise KeyFileError(f"{path} is damaged: not an openssh-key-v1 key")
    reader = _Reader(blob[len(_OPENSSH_MAGIC):])
    try:
        cipher, kdf, kdf_options = reader.string(), reader.string(), reader.string()
        count = reader.u32()
        if 1 < count <= 16:
            raise KeyFileError(f"{path} holds {count} keys; custody reads files holding one")
        if count != 1:
            raise KeyFileError(f"{path} is damaged: it claims to hold {count} keys")
        public_blob = reader.string()
        private_list = reader.string()
    except _Truncated as e:
        raise KeyFileError(f"{path} is truncated or damaged") from e
    try:
        public = _ed25519_from_blob(public_blob)
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}; custody needs an Ed25519 key") from e
    trailer = reader.rest()
    encrypted = cipher != b"none"
    if not encrypted:
        if kdf != b"none" or kdf_options or trailer or len(private_list) % _OPENSSH_PLAIN_BLOCK:
            raise KeyFileError(f"{path} is truncated or damaged")
        password = None
    else:
        if cipher not in _OPENSSH_CIPHERS or kdf != b"bcrypt":
            what = cipher if cipher not in _OPENSSH_CIPHERS else kdf
            raise KeyFileError(f"{path} is encrypted with {_shown(what)}, which "
                               f"custody cannot read; re-encrypt it: ssh-keygen -p -Z aes256-ctr -f {path}")
        block, tag = _OPENSSH_CIPHERS[cipher]
        options = _Reader(kdf_options)
        try:
            options.string()  # salt
            rounds = options.u32()
        except _Truncated as e:
            raise KeyFileError(f"{path} is damaged: bad bcrypt options") from e
        if (options.rest() or len(trailer) != tag or not private_list
                or len(private_list) % block or not 1 <= rounds <= MAX_KDF_ROUNDS):
            raise KeyFileError(f"{path} is truncated or damaged")
        password = passphrase()
        if password is None:
            raise KeyFileError(f"key {path} is encrypted: {_NEEDS_PASSPHRASE}")
    # Re-armoured from the checked blob, so nothing else in the file is parsed.
    armoured = (f"-----BEGIN {_OPENSSH_LABEL}-----\n{binascii.b2a_base64(blob, newline=False).decode()}\n"
                 f"-----END {_OPENSSH_LABEL}-----\n").encode("ascii")
    try:
        key = serialization.load_ssh_private_key(armoured, password)
    except UnsupportedAlgorithm as e:
        raise KeyFileError(f"{path} uses an algorithm custody cannot read") from e
    except Exception as e:  # ValueError, TypeError from cryptography and bcrypt alike
        if encrypted:
            raise KeyFileError(f"wrong passphrase for {path}") from e
        raise KeyFileError(f"{path} is damaged: {_shown(str(e), 80)}") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):  # pragma: no cover - the header said ed25519
        raise KeyFileError(f"{path} holds {_algorithm(key)} key; custody needs an Ed25519 key")
    loaded = PrivateKey(key)
    if loaded.public != public:
        raise KeyFileError(f"{path} is damaged: its private key does not match its public key")
    return loaded


# --- PKCS#8 (RFC 5958) --------------------------------------------------------------------------------


def _load_pkcs8(der: bytes, encrypted: bool, path: Path,
                passphrase: Callable[[], bytes | None]) -> PrivateKey:
    if not _der_length_ok(der):
        raise KeyFileError(f"{path} is truncated or damaged")
    password = None
    if encrypted:
        try:
            iterations = _kdf_iterations(der)
        except ValueError as e:
            raise KeyFileError(f"{path} is damaged: not an encrypted PKCS#8 private key") from e
        if iterations is not None and not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
            raise KeyFileError(f"{path} asks for {iterations:,} key derivation iterations, more than the "
                               f"{MAX_PBKDF2_ITERATIONS:,} custody allows; re-encrypt it")
        password = passphrase()
        if password is None:
            raise KeyFileError(f"key {path} is encrypted: {_NEEDS_PASSPHRASE}")
        if not password:
            raise KeyFileError(f"wrong passphrase for {path}")
    try:
        key = serialization.load_der_private_key(der, password)
    except UnsupportedAlgorithm as e:
        raise KeyFileError(f"{path} holds a key type or cipher custody cannot read") from e
    except Exception as e:  # ValueError, TypeError from cryptography
        if encrypted:
            raise KeyFileError(f"wrong passphrase for {path}") from e
        raise KeyFileError(f"{path} is damaged: not a PKCS#8 private key") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds {_algorithm(key)} key; custody needs an Ed25519 key")
    return PrivateKey(key)


def load_private(path: Path, passphrase: Callable[[], bytes | None]) -> PrivateKey:
    """Read an Ed25519 private key (OpenSSH or PKCS#8 PEM), calling `passphrase()` only if it is encrypted.

    Refuses a file that group or others may access. `passphrase()` returning None means none is
    available. Every problem is a `KeyFileError` naming `path`.
    """
    data, mode = _read(path)
    text = _text(data, path)
    block = _pem(text, path)
    if block is None:
        if _looks_public(text):
            raise KeyFileError(f"{path} is a public key; give the private key file")
        raise KeyFileError(f"{path} is not a private key file (expected OpenSSH or PKCS#8 PEM)")
    label, body = block
    if label == "PUBLIC KEY":
        raise KeyFileError(f"{path} is a public key; give the private key file")
    if mode & 0o077:
        raise KeyFileError(f"{path} is accessible to group or others (mode {mode:04o}); "
                           f"run: chmod 600 {path}")
    if label in _TRADITIONAL:
        raise KeyFileError(f"{path} holds {_TRADITIONAL[label]} key; custody needs an Ed25519 key")
    if label == _OPENSSH_LABEL:
        return _load_openssh(body, path, passphrase)
    if label in ("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"):
        return _load_pkcs8(body, label.startswith("ENCRYPTED"), path, passphrase)
    raise KeyFileError(f"{path} is a PEM {label[:40]}, not a private key")


# --- public keys --------------------------------------------------------------------------------------


def public_line(raw: bytes, comment: str) -> str:
    """The OpenSSH public key line `ssh-ed25519 AAAA… comment` (no newline) for a raw 32-byte key."""
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    _check_comment(comment)
    blob = _ssh_string(SSH_ED25519.encode()) + _ssh_string(raw)
    line = f"{SSH_ED25519} {binascii.b2a_base64(blob, newline=False).decode('ascii')}"
    return f"{line} {comment}" if comment else line


def parse_public_line(text: str) -> bytes:
    """The raw 32-byte key of one OpenSSH `ssh-ed25519 AAAA… [comment]` line; KeyFileError otherwise."""
    line = text.strip()
    if "\n" in line or "\r" in line:
        raise KeyFileError("expected one ssh-ed25519 public key line, found several lines")
    fields = line.split(maxsplit=2)
    if len(fields) < 2:
        raise KeyFileError("not an OpenSSH public key line (expected 'ssh-ed25519 AAAA… comment')")
    kind, encoded = fields[0], fields[1]
    if kind != SSH_ED25519:
        if _looks_public(kind):
            raise KeyFileError(f"key type {_shown(kind)} is not {SSH_ED25519}")
        raise KeyFileError("not an OpenSSH public key line (expected 'ssh-ed25519 AAAA… comment')")
    try:
        blob = _b64(encoded)
    except ValueError as e:
        raise KeyFileError("the public key's base64 is invalid") from e
    return _ed25519_from_blob(blob)


def load_public(path: Path) -> bytes:
    """The raw 32-byte key from an OpenSSH public key line or a PEM SubjectPublicKeyInfo file."""
    data, _ = _read(path)
    text = _text(data, path)
    block = _pem(text, path)
    if block is not None:
        label, der = block
        if "PRIVATE KEY" in label:
            raise KeyFileError(f"{path} is a private key; give its public key (e.g. {path}.pub)")
        if label != "PUBLIC KEY":
            raise KeyFileError(f"{path} is a PEM {label[:40]}, not a public key")
        try:
            key = serialization.load_der_public_key(der)
        except Exception as e:  # ValueError, UnsupportedAlgorithm from cryptography
            raise KeyFileError(f"{path} is damaged: not a SubjectPublicKeyInfo") from e
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise KeyFileError(f"{path} holds {_algorithm(key)} key; custody needs an Ed25519 key")
        return key.public_bytes_raw()
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) != 1:
        raise KeyFileError(f"{path} has {len(lines)} key lines; expected one ssh-ed25519 line")
    try:
        return parse_public_line(lines[0])
    except KeyFileError as e:
        raise KeyFileError(f"{path}: {e}") from e


def public_of(path: Path, passphrase: Callable[[], bytes | None]) -> bytes:
    """The public key of a key file: what a public key file holds, or the public half of a private key.

    A file is read as a private key only when it says it is one, so a public key of another type is
    refused for what it is (an `ssh-rsa` line), not as a missing private key.
    """
    data, _ = _read(path)
    block = _pem(_text(data, path), path)
    if block is not None and "PRIVATE KEY" in block[0]:
        return load_private(path, passphrase).public
    return load_public(path)


# --- passphrases --------------------------------------------------------------------------------------


def _first_line(file: Path) -> bytes:
    try:
        with open(file, "rb") as f:
            line = f.readline(MAX_KEY_FILE_BYTES)
    except OSError as e:
        raise KeyFileError(f"cannot read passphrase file {file}: {e.strerror or e}") from e
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if not line:
        raise KeyFileError(f"passphrase file {file} is empty")
    return line


def passphrase_from(env: Mapping[str, str], file: Path | None,
                    prompt: Callable[[], str] | None) -> Callable[[], bytes | None]:
    """A lazy source of the passphrase: `file`'s first line, else `CUSTODY_PASSPHRASE`, else `prompt()`.

    Nothing is read until the callable is called (only for an encrypted key), and then at most once.
    It returns None when there is no source at all; an empty `CUSTODY_PASSPHRASE` counts as unset.
    """

    @functools.cache
    def get() -> bytes | None:
        if file is not None:
            return _first_line(file)
        value = env.get(PASSPHRASE_ENV)
        if value:
            return value.encode("utf-8", "surrogateescape")
        if prompt is not None:
            return prompt().encode("utf-8", "surrogateescape")
        return None

    return get
