"""Checkpoints: C2SP signed notes (c2sp.org/signed-note) with a tlog-checkpoint body, operator signed.

DESIGN.md "The global log": the body is exactly three lines, origin, decimal tree size and base64 root
hash (c2sp.org/tlog-checkpoint, no extension lines); a blank line; then signature lines
`— <name> <base64(4-byte key hash ‖ signature)>`. The operator's line is a plain Ed25519 note signature
(signature type 0x01) named after the origin, over the body text including its final newline. Witnesses
add c2sp.org/tlog-cosignature Ed25519 cosignatures (type 0x04): the payload is key hash ‖ 8-byte
big-endian timestamp ‖ 64-byte signature over `cosignature/v1\\ntime <seconds>\\n` ‖ body.

Signing is a callable (raw Ed25519 over the message) plus the raw 32-byte public key, so this module
knows nothing of key files; verification uses libsodium through PyNaCl. Lines from keys a verifier was
not given are ignored, as signed-note requires; a line whose name and key hash match the given key must
verify, or the whole note is refused.

Which error means what:

- `NotALedger` (bad input, exit 2) from `parse_note`: not a signed note at all. Not UTF-8, ASCII control
  characters other than newline, no final newline, no blank line before the signatures, no signature
  lines, or a signature line not of the form `— <name> <base64>` with a valid key name.
- `CheckpointSignatureInvalid` (check `checkpoint_signature`): a signed note that is not a valid
  checkpoint. From `parse_note`/`parse_body`: a body that is not exactly origin, size and root lines;
  a size that is not canonical decimal; a root that is not canonical base64 of 32 bytes; a signature
  that is not canonical base64 of at least 5 bytes; more than `MAX_SIGNATURES` lines. From
  `verify_operator`: anything `parse_note` refuses (it says "not a checkpoint"), a wrong origin, no
  operator line, or an operator line that does not verify.
- `CosignatureMissing` (check `cosignature`) from `verify_cosignature`: anything `parse_note` refuses,
  no cosignature from the witness, or one that does not verify.
- `BadInput` from the constructors and signers: values that cannot make a checkpoint or a signature.

`verify_operator` and `verify_cosignature` accept a `ParsedNote` or the note's text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.signing import VerifyKey

from ledger.errors import (
    BadInput,
    CheckpointSignatureInvalid,
    CosignatureMissing,
    LedgerError,
    NotALedger,
)

SIGNATURE_LINE_PREFIX = "\u2014 "  # c2sp.org/signed-note "Format": em dash (U+2014), space
ED25519_SIGNATURE_TYPE = 0x01  # c2sp.org/signed-note "Signature types": Ed25519 note signatures
COSIGNATURE_V1_SIGNATURE_TYPE = 0x04  # c2sp.org/signed-note "Signature types": tlog-cosignature Ed25519
COSIGNATURE_V1_HEADER = "cosignature/v1\n"  # c2sp.org/tlog-cosignature "Ed25519 signed message"
KEY_HASH_SIZE = 4  # c2sp.org/signed-note: a 32-bit key ID before the signature
ED25519_SIGNATURE_SIZE = 64  # RFC 8032 §5.1.6
ED25519_PUBLIC_KEY_SIZE = 32  # RFC 8032 §5.1.5
TIMESTAMP_SIZE = 8  # c2sp.org/tlog-cosignature `timestamped_signature`: u64, big-endian
MAX_TIMESTAMP = 2**63 - 1  # c2sp.org/tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1
MAX_SIGNATURES = 100  # c2sp.org/signed-note: verifiers SHOULD limit and MUST accept at least 16
HASH_SIZE = 32  # the root is an RFC 9162 SHA-256 hash
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in RFC 9162 and in every checkpoint reader

_COSIGNATURE_SIZE = TIMESTAMP_SIZE + ED25519_SIGNATURE_SIZE
_TREE_SIZE = re.compile(r"0|[1-9][0-9]*")  # c2sp.org/tlog-checkpoint: ASCII decimal, no leading zeroes

Signer = Callable[[bytes], bytes]


# --- values -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its RFC 9162 root hash at that size."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        problem = (_origin_problem(self.origin) or _size_problem(self.size)
                   or _root_problem(self.root))
        if problem:
            raise BadInput(f"not a checkpoint: {problem}")

    def body(self) -> str:
        """The c2sp.org/tlog-checkpoint note text, final newline included: what the operator signs."""
        return f"{self.origin}\n{self.size}\n{_b64(self.root)}\n"

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        """See the module-level `parse_body`."""
        return parse_body(text)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash and the signature bytes that follow it."""

    name: str
    key_hash: bytes
    payload: bytes

    def line(self) -> str:
        """The signature line, final newline included."""
        return f"{SIGNATURE_LINE_PREFIX}{self.name} {_b64(self.key_hash + self.payload)}\n"


@dataclass(frozen=True, slots=True)
class ParsedNote:
    """A well-formed signed checkpoint whose signatures have not been verified yet."""

    checkpoint: Checkpoint
    text: str
    signatures: tuple[NoteSignature, ...]

    @property
    def body(self) -> str:
        """The signed note text: the checkpoint body, final newline included."""
        return self.checkpoint.body()


# --- key hashes and messages --------------------------------------------------------------------------


def key_hash(name: str, signature_type: int, public_key: bytes) -> bytes:
    """c2sp.org/signed-note key ID: SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]."""
    material = name.encode() + b"\n" + bytes([signature_type]) + public_key
    return hashlib.sha256(material).digest()[:KEY_HASH_SIZE]


def note_key_hash(name: str, public_key: bytes) -> bytes:
    """Key ID of a plain Ed25519 note signature, as the operator uses (type 0x01)."""
    return key_hash(name, ED25519_SIGNATURE_TYPE, public_key)


def cosignature_key_hash(name: str, public_key: bytes) -> bytes:
    """Key ID of a tlog-cosignature/v1 Ed25519 witness (type 0x04)."""
    return key_hash(name, COSIGNATURE_V1_SIGNATURE_TYPE, public_key)


def cosignature_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """c2sp.org/tlog-cosignature: `cosignature/v1`, `time <timestamp>`, then the checkpoint body."""
    return f"{COSIGNATURE_V1_HEADER}time {timestamp}\n{checkpoint.body()}".encode()


# --- parsing ------------------------------------------------------------------------------------------


def parse_body(text: str) -> Checkpoint:
    """Parse a tlog-checkpoint note text (three lines, each ending in a newline).

    Raises `CheckpointSignatureInvalid` naming the first bad line; `Checkpoint.body()` of the result
    gives `text` back exactly, since only canonical forms are accepted.
    """
    if not text.endswith("\n"):
        raise CheckpointSignatureInvalid("checkpoint body does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        more = ": extension lines are not allowed" if len(lines) > 3 else ""
        raise CheckpointSignatureInvalid(
            f"checkpoint body has {len(lines)} lines, not 3 (origin, size, root){more}")
    origin, size_text, root_text = lines
    problem = _origin_problem(origin)
    if problem:
        raise CheckpointSignatureInvalid(f"checkpoint origin line: {problem}")
    if not _TREE_SIZE.fullmatch(size_text):
        raise CheckpointSignatureInvalid(
            f"checkpoint size line {size_text[:40]!r} is not a decimal number without leading zeroes")
    size = int(size_text)
    problem = _size_problem(size)
    if problem:
        raise CheckpointSignatureInvalid(f"checkpoint size line: {problem}")
    root = _b64decode(root_text)
    if root is None or len(root) != HASH_SIZE:
        raise CheckpointSignatureInvalid(
            f"checkpoint root line {root_text[:60]!r} is not the base64 of a {HASH_SIZE}-byte hash")
    return Checkpoint(origin, size, root)


def parse_note(text: str | bytes) -> ParsedNote:
    """Parse a signed checkpoint note without verifying any signature.

    Raises `NotALedger` if the input is not a signed note at all, and `CheckpointSignatureInvalid` if it
    is one but not a valid checkpoint (see the module docstring for the exact split).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NotALedger(f"not a checkpoint: not UTF-8 text (byte {e.start})") from None
    elif isinstance(text, str):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise NotALedger(f"not a checkpoint: not UTF-8 text (offset {e.start})") from None
    else:
        raise NotALedger(f"not a checkpoint: expected text, not {type(text).__name__}")
    if not text:
        raise NotALedger("not a checkpoint: the text is empty")
    for i, ch in enumerate(text):
        if ch < " " and ch != "\n":
            raise NotALedger(f"not a checkpoint: control character {ch!r} at offset {i}")
    if not text.endswith("\n"):
        raise NotALedger("not a checkpoint: does not end with a newline (truncated?)")
    split = text.rfind("\n\n")
    if split < 0:
        raise NotALedger("not a checkpoint: no blank line between the body and the signatures")
    body, block = text[:split + 1], text[split + 2:]
    if not block:
        raise NotALedger("not a checkpoint: no signature lines after the blank line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointSignatureInvalid(
            f"checkpoint has {len(lines)} signature lines, more than the {MAX_SIGNATURES} accepted")
    signatures = tuple(_parse_signature_line(n, line) for n, line in enumerate(lines, start=1))
    return ParsedNote(parse_body(body), text, signatures)


def _parse_signature_line(number: int, line: str) -> NoteSignature:
    if not line.startswith(SIGNATURE_LINE_PREFIX):
        raise NotALedger(f"not a checkpoint: signature line {number} does not start with '— '")
    name, space, encoded = line[len(SIGNATURE_LINE_PREFIX):].partition(" ")
    if not space:
        raise NotALedger(f"not a checkpoint: signature line {number} has no space after the key name")
    problem = _name_problem(name)
    if problem:
        raise NotALedger(f"not a checkpoint: signature line {number}: {problem}")
    raw = _b64decode(encoded)
    if raw is None:
        raise CheckpointSignatureInvalid(f"signature line {number} ({name}) is not canonical base64")
    if len(raw) <= KEY_HASH_SIZE:
        raise CheckpointSignatureInvalid(f"signature line {number} ({name}) is too short")
    return NoteSignature(name, raw[:KEY_HASH_SIZE], raw[KEY_HASH_SIZE:])


# --- signing ------------------------------------------------------------------------------------------


def sign_checkpoint(checkpoint: Checkpoint, name: str, public_key: bytes, sign: Signer) -> str:
    """The whole signed note: the body, a blank line and one Ed25519 note signature line by `name`.

    For the operator, `name` is the origin (DESIGN.md). Raises `BadInput` if `sign` does not produce a
    valid signature for `public_key`, so a note is never published under the wrong key hash.
    """
    _require_name(name)
    verify_key = _verify_key(public_key)
    body = checkpoint.body()
    signature = _signed(verify_key, body.encode(), sign)
    line = NoteSignature(name, note_key_hash(name, public_key), signature).line()
    return f"{body}\n{line}"


def add_cosignature(note_text: str | bytes, name: str, public_key: bytes, sign: Signer,
                    timestamp: int) -> str:
    """The note with a tlog-cosignature/v1 line by witness `name` at `timestamp` (POSIX seconds).

    A cosignature already there from the same name and key is replaced, so cosigning again refreshes it.
    It does not verify the operator's signature or consistency: that is the witness's policy, done
    before. Parse errors propagate as from `parse_note`; bad arguments raise `BadInput`.
    """
    note = parse_note(note_text)
    _require_name(name)
    verify_key = _verify_key(public_key)
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise BadInput(f"cosignature timestamp must be an integer from 0 to 2^63-1, not {timestamp!r}")
    message = cosignature_message(note.checkpoint, timestamp)
    signature = _signed(verify_key, message, sign)
    kh = cosignature_key_hash(name, public_key)
    kept = [s for s in note.signatures if not (s.name == name and s.key_hash == kh)]
    if len(kept) + 1 > MAX_SIGNATURES:
        raise BadInput(f"the checkpoint already has {MAX_SIGNATURES} signature lines")
    new = NoteSignature(name, kh, timestamp.to_bytes(TIMESTAMP_SIZE, "big") + signature)
    return note.body + "\n" + "".join(s.line() for s in (*kept, new))


# --- verification -------------------------------------------------------------------------------------


def verify_operator(note: ParsedNote | str | bytes, origin: str, operator_public_key: bytes) -> Checkpoint:
    """The checkpoint, if the note is for `origin` and carries a valid operator signature.

    Raises `CheckpointSignatureInvalid` otherwise: not a checkpoint, another origin, no line with the
    operator's name and key hash, or such a line that does not verify. Other lines are ignored.
    """
    verify_key = _verify_key(operator_public_key)
    parsed = _as_parsed(note, CheckpointSignatureInvalid)
    checkpoint = parsed.checkpoint
    if checkpoint.origin != origin:
        raise CheckpointSignatureInvalid(
            f"checkpoint origin {checkpoint.origin[:80]!r} is not the ledger's {origin!r}")
    kh = note_key_hash(origin, operator_public_key)
    message = parsed.body.encode()
    found = False
    for sig in parsed.signatures:
        if sig.name != origin or sig.key_hash != kh:
            continue
        if not _valid(verify_key, message, sig.payload):
            raise CheckpointSignatureInvalid(f"the operator's signature on checkpoint {checkpoint.size} "
                                             "does not verify")
        found = True
    if not found:
        raise CheckpointSignatureInvalid(f"checkpoint {checkpoint.size} has no signature by the operator key "
                                         f"{kh.hex()} for {origin!r}")
    return checkpoint


def verify_cosignature(note: ParsedNote | str | bytes, name: str, witness_public_key: bytes) -> int:
    """The timestamp of witness `name`'s valid tlog-cosignature/v1 on the note (the latest, if several).

    Raises `CosignatureMissing` if the note is not a checkpoint, has no line with the witness's name and
    key hash, or has such a line that is malformed or does not verify. The operator's signature is
    `verify_operator`'s business.
    """
    verify_key = _verify_key(witness_public_key)
    parsed = _as_parsed(note, CosignatureMissing)
    kh = cosignature_key_hash(name, witness_public_key)
    latest: int | None = None
    for sig in parsed.signatures:
        if sig.name != name or sig.key_hash != kh:
            continue
        if len(sig.payload) != _COSIGNATURE_SIZE:
            raise CosignatureMissing(f"the cosignature by witness {name!r} is "
                                     f"{len(sig.payload)} bytes, not {_COSIGNATURE_SIZE}")
        timestamp = int.from_bytes(sig.payload[:TIMESTAMP_SIZE], "big")
        if timestamp > MAX_TIMESTAMP:
            raise CosignatureMissing(f"the cosignature by witness {name!r} has a timestamp beyond 2^63-1")
        message = cosignature_message(parsed.checkpoint, timestamp)
        if not _valid(verify_key, message, sig.payload[TIMESTAMP_SIZE:]):
            raise CosignatureMissing(f"the cosignature by witness {name!r} does not verify")
        latest = timestamp if latest is None else max(latest, timestamp)
    if latest is None:
        raise CosignatureMissing(
            f"checkpoint {parsed.checkpoint.size} has no cosignature by witness {name!r}")
    return latest


# --- internals ----------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Standard base64 (RFC 4648 §4) in its one canonical form, else None."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _name_problem(name: str) -> str | None:
    """c2sp.org/signed-note: key names are non-empty, with no Unicode spaces and no '+'."""
    if not name:
        return "empty key name"
    if any(ch.isspace() or ch == "+" or ch < " " for ch in name):
        return f"key name {name[:80]!r} contains a space, a control character or '+'"
    return None


MAX_ORIGIN_BYTES = 255  # ours, not C2SP's: every statement carries the origin


def check_origin(origin: str) -> None:
    """Refuse (`BadInput`) a new ledger's origin that a checkpoint cannot carry. c2sp.org/tlog-checkpoint:
    the origin line is non-empty; it is also the operator's key name (DESIGN.md), which c2sp.org/signed-note
    says has no Unicode spaces and no '+'; a note is valid UTF-8 with no control characters but newline,
    which ends the line. Control characters are refused whatever their range (C0, DEL, C1), and so is an
    origin longer than `MAX_ORIGIN_BYTES`."""
    hint = "use a name like custody.example/h200-cn"
    try:
        size = len(origin.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput(f"bad origin {origin!r:.80}: not valid UTF-8; {hint}") from None
    if not origin:
        raise BadInput(f"the origin is empty; {hint}")
    for ch in origin:
        if ch.isspace() or ch == "+" or unicodedata.category(ch) == "Cc":
            what = "a space" if ch.isspace() else "'+'" if ch == "+" else "a control character"
            raise BadInput(f"bad origin {origin!r:.80}: it contains {what} ({ch!r}), which a checkpoint's "
                           f"origin cannot (c2sp.org/tlog-checkpoint); {hint}")
    if size > MAX_ORIGIN_BYTES:
        raise BadInput(f"the origin is {size} bytes long, more than {MAX_ORIGIN_BYTES}; {hint}")


def _origin_problem(origin: object) -> str | None:
    """The origin is also the operator's key name (DESIGN.md), so it must be a valid key name."""
    if not isinstance(origin, str):
        return "the origin must be text"
    problem = _name_problem(origin)
    return problem and problem.replace("key name", "origin")


def _size_problem(size: object) -> str | None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        return f"the tree size must be an integer from 0 to 2^64-1, not {str(size)[:40]}"
    return None


def _root_problem(root: object) -> str | None:
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        return f"the root hash must be {HASH_SIZE} bytes"
    return None


def _require_name(name: str) -> None:
    problem = _name_problem(name) if isinstance(name, str) else "the key name must be text"
    if problem:
        raise BadInput(f"cannot sign: {problem}")


def _verify_key(public_key: bytes) -> VerifyKey:
    if not isinstance(public_key, bytes) or len(public_key) != ED25519_PUBLIC_KEY_SIZE:
        raise BadInput(f"an Ed25519 public key is {ED25519_PUBLIC_KEY_SIZE} raw bytes")
    return VerifyKey(public_key)


def _valid(verify_key: VerifyKey, message: bytes, signature: bytes) -> bool:
    if len(signature) != ED25519_SIGNATURE_SIZE:
        return False
    try:
        verify_key.verify(message, signature)
    except (CryptoError, ValueError):
        return False
    return True


def _signed(verify_key: VerifyKey, message: bytes, sign: Signer) -> bytes:
    signature = sign(message)
    if not isinstance(signature, bytes) or not _valid(verify_key, message, signature):
        raise BadInput("the signing key does not match the public key given (or is not Ed25519)")
    return signature


def _as_parsed(note: ParsedNote | str | bytes, error: type[LedgerError]) -> ParsedNote:
    if isinstance(note, ParsedNote):
        return note
    try:
        return parse_note(note)
    except NotALedger as e:
        raise error(e.detail) from e
    except CheckpointSignatureInvalid as e:
        if error is CheckpointSignatureInvalid:
            raise
        raise error(f"not a valid checkpoint: {e.detail}") from e
