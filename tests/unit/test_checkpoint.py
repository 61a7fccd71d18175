"""C2SP signed-note checkpoints: the golden vector, round trips, cosignatures, probes and properties.

The vector note and the operator key are pinned as literals, so the bytes stay pinned where ../shared
is absent; when it is present the files must equal the literals. Each probe test first proves the valid
note verifies, then lists every probe that wrongly passed.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable
from functools import partial

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from ledger import checkpoint as cp
from ledger.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteSignature,
    ParsedNote,
    add_cosignature,
    cosignature_key_hash,
    cosignature_message,
    note_key_hash,
    parse_body,
    parse_note,
    sign_checkpoint,
    verify_cosignature,
    verify_operator,
)
from ledger.errors import (
    BadInput,
    CheckpointSignatureInvalid,
    CosignatureMissing,
    LedgerError,
    NotALedger,
)
from tests.conftest import SHARED

CUSTODY_VECTORS = SHARED / "vectors" / "custody"

ORIGIN = "vectors.custody.example/h200-cn"
ROOT_B64 = "iAXmBoMOmDsb/DtFO7UvJmaF+52XRqm5qPmU5weT/Vc="
VECTOR_NOTE = (
    "vectors.custody.example/h200-cn\n"
    "15\n"
    "iAXmBoMOmDsb/DtFO7UvJmaF+52XRqm5qPmU5weT/Vc=\n"
    "\n"
    "— vectors.custody.example/h200-cn "
    "8SMBPZha1f1wwZzfaxmkRvK3I0qStt/mHdBryJEqPjuOa0UOHQ8Z+GK4ghRxS7xucn+T0dwlvGAsN9KdCiomlZSeyAs=\n"
)
OPERATOR_PUB_LINE = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdQERstCnNwJaGWjSNW8jGQD/Z6Uqp9kqOno1FeExWK "
                     "operator@vectors")
# golang.org/x/mod/sumdb/note's example: vkey PeterNeumann+c74f20a3+ARpc2QcU… and its signed text.
PETER_KEY = "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = (b"If you think cryptography is the answer to your problem,\n"
              b"then you don't know what your problem is.\n")
PETER_SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="


def ssh_ed25519_public_key(line: str) -> bytes:
    """The raw key from an OpenSSH `ssh-ed25519 AAAA… comment` line (RFC 4253 §6.6 string fields)."""
    blob = base64.b64decode(line.split()[1], validate=True)
    fields = []
    while blob:
        (n,) = struct.unpack(">I", blob[:4])
        fields.append(blob[4:4 + n])
        blob = blob[4 + n:]
    assert fields[0] == b"ssh-ed25519" and len(fields) == 2 and len(fields[1]) == 32
    return fields[1]


OPERATOR_KEY = ssh_ed25519_public_key(OPERATOR_PUB_LINE)
OPERATOR = SigningKey(bytes(range(32)))
WITNESS = SigningKey(bytes(range(32, 64)))
OTHER = SigningKey(b"\x07" * 32)


def signer(key: SigningKey) -> Callable[[bytes], bytes]:
    return lambda message: bytes(key.sign(message).signature)


def pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def fails(call: Callable[[], object], error: type[LedgerError] = CheckpointSignatureInvalid) -> bool:
    """True if `call` raised `error`; any other exception propagates and fails the test."""
    try:
        call()
    except error:
        return True
    return False


def sig_line(name: str, raw: bytes) -> str:
    return f"— {name} {base64.b64encode(raw).decode()}\n"


def flip_signature_bit(note: str, line_no: int = 0, byte: int = 10) -> str:
    body, _, block = note.rpartition("\n\n")
    lines = block.splitlines(keepends=True)
    name, encoded = lines[line_no][2:].split()
    raw = bytearray(base64.b64decode(encoded))
    raw[byte] ^= 1
    lines[line_no] = sig_line(name, bytes(raw))
    return body + "\n\n" + "".join(lines)


# --- the golden vector --------------------------------------------------------------------------------


def test_vector_note_verifies() -> None:
    checkpoint = verify_operator(VECTOR_NOTE, ORIGIN, OPERATOR_KEY)
    assert checkpoint == Checkpoint(ORIGIN, 15, base64.b64decode(ROOT_B64))
    assert checkpoint.root.hex() == "8805e606830e983b1bfc3b453bb52f266685fb9d9746a9b9a8f994e70793fd57"
    parsed = parse_note(VECTOR_NOTE.encode())
    assert parsed.text == VECTOR_NOTE and parsed.body == checkpoint.body()
    assert parsed.signatures == (NoteSignature(ORIGIN, note_key_hash(ORIGIN, OPERATOR_KEY),
                                               parsed.signatures[0].payload),)
    assert parsed.signatures[0].key_hash.hex() == "f123013d" and len(parsed.signatures[0].payload) == 64
    assert verify_operator(parsed, ORIGIN, OPERATOR_KEY) == checkpoint


def test_vector_files_match_the_pinned_literals() -> None:
    if not CUSTODY_VECTORS.is_dir():
        pytest.skip(f"{CUSTODY_VECTORS} is absent")
    assert (CUSTODY_VECTORS / "checkpoint.txt").read_text(encoding="utf-8") == VECTOR_NOTE
    pub_line = (CUSTODY_VECTORS / "operator.pub").read_text(encoding="utf-8").strip()
    assert ssh_ed25519_public_key(pub_line) == OPERATOR_KEY
    verify_operator((CUSTODY_VECTORS / "checkpoint.txt").read_bytes(), ORIGIN, OPERATOR_KEY)


def test_fork_probe_is_validly_signed() -> None:
    """The fork checkpoint is the operator's own signature: only a consistency check can catch it."""
    fork = CUSTODY_VECTORS / "probes" / "fork-checkpoint.txt"
    if not fork.is_file():
        pytest.skip(f"{fork} is absent")
    assert verify_operator(fork.read_text(encoding="utf-8"), ORIGIN, OPERATOR_KEY).size == 12


def test_key_hash_known_answer() -> None:
    raw = base64.b64decode(PETER_KEY)
    assert raw[0] == cp.ED25519_SIGNATURE_TYPE
    assert note_key_hash("PeterNeumann", raw[1:]).hex() == "c74f20a3"
    sig = base64.b64decode(PETER_SIG)
    assert sig[:4].hex() == "c74f20a3"
    VerifyKey(raw[1:]).verify(PETER_TEXT, sig[4:])
    assert cosignature_key_hash("w", b"k" * 32) == hashlib.sha256(b"w\n\x04" + b"k" * 32).digest()[:4]


# --- probes on the vector -----------------------------------------------------------------------------

BODY = VECTOR_NOTE[:VECTOR_NOTE.index("\n\n") + 1]
OP_LINE = VECTOR_NOTE[VECTOR_NOTE.index("\n\n") + 2:]
OP_RAW = base64.b64decode(OP_LINE.split()[2])


def vector_probes() -> dict[str, str | bytes]:
    lines = BODY.splitlines(keepends=True)
    raw = OP_RAW
    return {
        "size 16": VECTOR_NOTE.replace("\n15\n", "\n16\n"),
        "size 015": VECTOR_NOTE.replace("\n15\n", "\n015\n"),
        "size +15": VECTOR_NOTE.replace("\n15\n", "\n+15\n"),
        "size 1_5": VECTOR_NOTE.replace("\n15\n", "\n1_5\n"),
        "size -1": VECTOR_NOTE.replace("\n15\n", "\n-1\n"),
        "size empty": VECTOR_NOTE.replace("\n15\n", "\n\n"),
        "size huge": VECTOR_NOTE.replace("\n15\n", "\n" + "9" * 30 + "\n"),
        "root bit": VECTOR_NOTE.replace(ROOT_B64, ROOT_B64.replace("iAX", "iAY")),
        "root non-canonical": VECTOR_NOTE.replace(ROOT_B64, ROOT_B64[:-2] + "W="),
        "root no padding": VECTOR_NOTE.replace(ROOT_B64, ROOT_B64[:-1]),
        "root 31 bytes": VECTOR_NOTE.replace(ROOT_B64, base64.b64encode(bytes(31)).decode()),
        "root url-safe": VECTOR_NOTE.replace(ROOT_B64, ROOT_B64.replace("/", "_").replace("+", "-")),
        "origin edited": VECTOR_NOTE.replace("h200-cn\n", "h200-cx\n", 1),
        "signature bit": flip_signature_bit(VECTOR_NOTE, byte=10),
        "key hash bit": flip_signature_bit(VECTOR_NOTE, byte=0),
        "signature truncated": BODY + "\n" + sig_line(ORIGIN, raw[:-1]),
        "signature extended": BODY + "\n" + sig_line(ORIGIN, raw + b"\x00"),
        "signature bad base64": BODY + "\n" + f"— {ORIGIN} {OP_LINE.split()[2][:-2]}!=\n",
        "signature non-canonical": BODY + "\n" + f"— {ORIGIN} {OP_LINE.split()[2][:-2]}t=\n",
        "signature missing": BODY + "\n",
        "extension line": BODY + "ext\n\n" + OP_LINE,
        "missing origin": "".join(lines[1:]) + "\n" + OP_LINE,
        "missing size": lines[0] + lines[2] + "\n" + OP_LINE,
        "missing root": "".join(lines[:2]) + "\n" + OP_LINE,
        "missing blank line": BODY + OP_LINE,
        "extra blank line": BODY + "\n\n" + OP_LINE,
        "blank line in body": lines[0] + "\n" + "".join(lines[1:]) + "\n" + OP_LINE,
        "garbage before": "garbage\n" + VECTOR_NOTE,
        "garbage after": VECTOR_NOTE + "garbage\n",
        "garbage line after": VECTOR_NOTE + "— garbage\n",
        "no final newline": VECTOR_NOTE[:-1],
        "crlf": VECTOR_NOTE.replace("\n", "\r\n"),
        "tab": VECTOR_NOTE.replace("\n15\n", "\n15\t\n"),
        "hyphen instead of em dash": VECTOR_NOTE.replace("—", "-"),
        "no space after dash": VECTOR_NOTE.replace("— ", "—"),
        "two spaces after name": VECTOR_NOTE.replace(f"{ORIGIN} 8SMB", f"{ORIGIN}  8SMB"),
        "not utf-8": b"\xff" + VECTOR_NOTE.encode(),
        "utf-16": VECTOR_NOTE.encode("utf-16"),
        "bom": "\ufeff" + VECTOR_NOTE,
        "empty": "",
        "signed by another key": sign_checkpoint(parse_body(BODY), ORIGIN, pub(OTHER), signer(OTHER)),
        "signed under another name": sign_checkpoint(parse_body(BODY), "someone", OPERATOR_KEY,
                                                     lambda m: OP_RAW[4:]),
    }


def test_vector_probes_all_fail() -> None:
    verify_operator(VECTOR_NOTE, ORIGIN, OPERATOR_KEY)
    wrong = [desc for desc, text in vector_probes().items()
             if not fails(partial(verify_operator, text, ORIGIN, OPERATOR_KEY))]
    assert wrong == []


def test_wrong_origin_or_key_fails() -> None:
    assert fails(lambda: verify_operator(VECTOR_NOTE, "custody.example/h200-cn", OPERATOR_KEY))
    assert fails(lambda: verify_operator(VECTOR_NOTE, ORIGIN, pub(OTHER)))
    with pytest.raises(BadInput):
        verify_operator(VECTOR_NOTE, ORIGIN, OPERATOR_KEY[:31])


def test_every_truncation_and_every_bit_flip_fails() -> None:
    data = VECTOR_NOTE.encode()
    wrong = [f"truncated to {n}" for n in range(len(data))
             if not fails(partial(verify_operator, data[:n], ORIGIN, OPERATOR_KEY))]
    for i in range(len(data)):
        for bit in range(8):
            flipped = data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1:]
            if not fails(partial(verify_operator, flipped, ORIGIN, OPERATOR_KEY)):
                wrong.append(f"byte {i} bit {bit}")
    assert wrong == []


def test_parse_errors_are_classified() -> None:
    probes = vector_probes()
    for desc in ("not utf-8", "utf-16", "empty", "missing blank line", "signature missing",
                 "no final newline", "crlf", "tab", "hyphen instead of em dash", "no space after dash",
                 "garbage line after"):
        assert fails(partial(parse_note, probes[desc]), NotALedger), desc
    for desc in ("size 015", "size +15", "size empty", "root non-canonical", "root no padding",
                 "root 31 bytes", "signature bad base64", "signature non-canonical", "extension line",
                 "missing origin", "extra blank line", "garbage before", "two spaces after name"):
        assert fails(partial(parse_note, probes[desc]), CheckpointSignatureInvalid), desc
    # The verifiers turn every parse failure into their own check.
    assert fails(lambda: verify_operator(b"\xff", ORIGIN, OPERATOR_KEY), CheckpointSignatureInvalid)
    assert fails(lambda: verify_cosignature(b"\xff", "w", pub(WITNESS)), CosignatureMissing)
    assert fails(lambda: verify_cosignature(probes["size 015"], "w", pub(WITNESS)), CosignatureMissing)


def test_unknown_key_lines_are_ignored() -> None:
    unknown = (sig_line(ORIGIN, b"\x00\x01\x02\x03" + bytes(64))  # same name, other key hash
               + sig_line("other.example/log", OP_RAW)  # same key hash and signature, other name
               + sig_line("witness.example/w", b"\xaa" * 76))
    for text in (BODY + "\n" + OP_LINE + unknown, BODY + "\n" + unknown + OP_LINE):
        assert verify_operator(text, ORIGIN, OPERATOR_KEY).size == 15


def test_a_bad_line_from_the_known_key_fails_even_beside_a_good_one() -> None:
    bad = flip_signature_bit(VECTOR_NOTE, byte=20)
    bad_line = bad[bad.index("\n\n") + 2:]
    for text in (VECTOR_NOTE + bad_line, BODY + "\n" + bad_line + OP_LINE,
                 VECTOR_NOTE + sig_line(ORIGIN, OP_RAW[:4] + bytes(64)),
                 VECTOR_NOTE + sig_line(ORIGIN, OP_RAW[:4] + b"\x01")):
        assert fails(partial(verify_operator, text, ORIGIN, OPERATOR_KEY)), text


def test_signature_line_limit() -> None:
    filler = [sig_line(f"w{i}.example", bytes(68)) for i in range(MAX_SIGNATURES - 1)]
    verify_operator(VECTOR_NOTE + "".join(filler), ORIGIN, OPERATOR_KEY)
    assert fails(lambda: parse_note(VECTOR_NOTE + "".join(filler) + sig_line("x", bytes(68))))


# --- round trips --------------------------------------------------------------------------------------


def test_sign_parse_verify_round_trip() -> None:
    checkpoint = Checkpoint("custody.example/h200-cn", 240, hashlib.sha256(b"root").digest())
    note = sign_checkpoint(checkpoint, checkpoint.origin, pub(OPERATOR), signer(OPERATOR))
    assert note.startswith(checkpoint.body() + "\n— custody.example/h200-cn ") and note.endswith("=\n")
    parsed = parse_note(note)
    assert parsed.checkpoint == checkpoint and parsed.text == note
    assert verify_operator(note, checkpoint.origin, pub(OPERATOR)) == checkpoint
    assert parse_body(checkpoint.body()) == Checkpoint.parse_body(checkpoint.body()) == checkpoint
    empty = Checkpoint("custody.example/h200-cn", 0, hashlib.sha256(b"").digest())
    assert empty.body() == "custody.example/h200-cn\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    assert verify_operator(sign_checkpoint(empty, empty.origin, pub(OPERATOR), signer(OPERATOR)),
                           empty.origin, pub(OPERATOR)) == empty


def test_signing_refuses_mismatched_keys_and_bad_values() -> None:
    checkpoint = parse_body(BODY)
    for call in (lambda: sign_checkpoint(checkpoint, ORIGIN, pub(OPERATOR), signer(OTHER)),
                 lambda: sign_checkpoint(checkpoint, "has space", pub(OPERATOR), signer(OPERATOR)),
                 lambda: sign_checkpoint(checkpoint, "a+b", pub(OPERATOR), signer(OPERATOR)),
                 lambda: sign_checkpoint(checkpoint, ORIGIN, pub(OPERATOR)[:31], signer(OPERATOR)),
                 lambda: add_cosignature(VECTOR_NOTE, "w", pub(WITNESS), signer(WITNESS), -1),
                 lambda: add_cosignature(VECTOR_NOTE, "w", pub(WITNESS), signer(WITNESS), 2**63),
                 lambda: add_cosignature(VECTOR_NOTE, "w", pub(WITNESS), signer(OTHER), 1),
                 lambda: Checkpoint("a b", 1, bytes(32)), lambda: Checkpoint("", 1, bytes(32)),
                 lambda: Checkpoint("o", -1, bytes(32)), lambda: Checkpoint("o", 1, bytes(31)),
                 lambda: Checkpoint("o\nx", 1, bytes(32))):
        with pytest.raises(BadInput):
            call()


def test_cosignature_round_trip() -> None:
    name, t = "witness.example/w1", 1_767_225_600
    note = add_cosignature(VECTOR_NOTE, name, pub(WITNESS), signer(WITNESS), t)
    assert note.startswith(VECTOR_NOTE)
    assert verify_operator(note, ORIGIN, OPERATOR_KEY).size == 15
    assert verify_cosignature(note, name, pub(WITNESS)) == t
    # The line is key hash ‖ big-endian timestamp ‖ Ed25519 over "cosignature/v1\ntime <t>\n" ‖ body.
    line = note[len(VECTOR_NOTE):]
    assert line.startswith(f"— {name} ")
    raw = base64.b64decode(line.split()[2])
    assert len(raw) == 4 + 8 + 64
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x04" + pub(WITNESS)).digest()[:4]
    assert int.from_bytes(raw[4:12], "big") == t
    message = f"cosignature/v1\ntime {t}\n".encode() + BODY.encode()
    assert cosignature_message(parse_body(BODY), t) == message
    VerifyKey(pub(WITNESS)).verify(message, raw[12:])
    # Cosigning again replaces the witness's line; a second witness adds its own.
    again = add_cosignature(note, name, pub(WITNESS), signer(WITNESS), t + 60)
    assert again.count(f"— {name} ") == 1 and verify_cosignature(again, name, pub(WITNESS)) == t + 60
    both = add_cosignature(again, "w2", pub(OTHER), signer(OTHER), 5)
    assert verify_cosignature(both, "w2", pub(OTHER)) == 5
    assert verify_cosignature(parse_note(both), name, pub(WITNESS)) == t + 60


def test_cosignature_probes_fail() -> None:
    name = "witness.example/w1"
    note = add_cosignature(VECTOR_NOTE, name, pub(WITNESS), signer(WITNESS), 1000)
    verify_cosignature(note, name, pub(WITNESS))
    line = note[len(VECTOR_NOTE):]
    raw = base64.b64decode(line.split()[2])
    probes = {
        "absent": VECTOR_NOTE,
        "other name": note.replace(f"— {name} ", "— witness.example/w2 "),
        "timestamp edited": VECTOR_NOTE + sig_line(name, raw[:4] + (1001).to_bytes(8, "big") + raw[12:]),
        "signature bit": flip_signature_bit(note, line_no=1, byte=30),
        "timestamp beyond 2^63-1": VECTOR_NOTE + sig_line(name, raw[:4] + b"\xff" * 8 + raw[12:]),
        "no timestamp": VECTOR_NOTE + sig_line(name, raw[:4] + raw[12:]),
        "body edited": note.replace("\n15\n", "\n16\n"),
        "operator line as cosignature": VECTOR_NOTE.replace(f"— {ORIGIN} ", f"— {name} "),
    }
    wrong = [desc for desc, text in probes.items()
             if not fails(partial(verify_cosignature, text, name, pub(WITNESS)), CosignatureMissing)]
    assert wrong == []
    assert fails(lambda: verify_cosignature(note, name, pub(OTHER)), CosignatureMissing)
    bad_beside_good = note + sig_line(name, raw[:12] + bytes(64))
    assert fails(lambda: verify_cosignature(bad_beside_good, name, pub(WITNESS)), CosignatureMissing)


# --- properties ---------------------------------------------------------------------------------------

NAME_CHARS = st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters="+")
names = st.text(NAME_CHARS, min_size=1, max_size=30).filter(lambda s: not any(c.isspace() for c in s))


@settings(max_examples=60, deadline=None)
@given(names, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), names,
       st.integers(0, 2**63 - 1))
def test_round_trip_property(origin: str, size: int, root: bytes, witness: str, t: int) -> None:
    checkpoint = Checkpoint(origin, size, root)
    assert parse_body(checkpoint.body()) == checkpoint
    note = sign_checkpoint(checkpoint, origin, pub(OPERATOR), signer(OPERATOR))
    assert parse_note(note.encode()).text == note
    assert verify_operator(note, origin, pub(OPERATOR)) == checkpoint
    cosigned = add_cosignature(note, witness, pub(WITNESS), signer(WITNESS), t)
    assert verify_operator(cosigned, origin, pub(OPERATOR)) == checkpoint
    assert verify_cosignature(cosigned, witness, pub(WITNESS)) == t


LINE_POOL = [*VECTOR_NOTE.split("\n"), "", "— ", "— x", "— x AAAA", "— x AAAAAA==", "0", "00", "-1",
             "— x " + "A" * 88, "\u2014", "é", "\ud800"]
lines_text = st.lists(st.sampled_from(LINE_POOL) | st.text(max_size=12), max_size=9).map("\n".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), st.binary(), lines_text, lines_text.map(lambda s: s + "\n"),
                 lines_text.map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_parsing_arbitrary_input_raises_only_library_errors(data: str | bytes) -> None:
    try:
        parsed = parse_note(data)
    except (NotALedger, CheckpointSignatureInvalid):
        pass
    else:
        assert isinstance(parsed, ParsedNote)
        assert parsed.body + "\n" + "".join(s.line() for s in parsed.signatures) == parsed.text
    assert fails(lambda: verify_operator(data, ORIGIN, OPERATOR_KEY), CheckpointSignatureInvalid) or (
        isinstance(data, (str, bytes)) and data in (VECTOR_NOTE, VECTOR_NOTE.encode()))
    assert fails(lambda: verify_cosignature(data, "w", pub(WITNESS)), CosignatureMissing)
