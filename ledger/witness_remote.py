"""A witness that follows a ledger service over HTTP: `custody cosign --ledger URL` (DESIGN.md).

It reads the served checkpoint (`GET /checkpoint`), the genesis statement (`GET /tile/entries/000.p/1`,
C2SP tlog-tiles) for the operator's key, and consistency proofs (`GET /v1/proofs/consistency`): the
genesis must be leaf 0 of the checkpoint's tree and the operator's signature must verify under the key
it names (trust on first use: the witness has no other source of that key), and the checkpoint must
extend the one in the witness's state file (`cosign.read_witness_state`, the same file
`custody cosign CHECKPOINT` keeps). Then it cosigns (c2sp.org/tlog-cosignature/v1), saves the cosigned
note as its new state, and only then posts it to `POST /v1/cosignatures`, as a tlog-witness persists
before it answers.

Errors: an unreachable service, a timeout or a 5xx is `ServiceUnavailable` (exit 2, naming the URL); a
service that is not a custody ledger is `NotALedger`; a checkpoint that does not verify, a rollback or a
fork is `CheckpointSignatureInvalid` / `CheckpointInconsistent` (exit 1), and nothing is written then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from ledger import checkpoint as notes
from ledger import merkle
from ledger.checkpoint import Checkpoint
from ledger.cosign import check_witness_name, read_witness_state
from ledger.errors import (
    CheckpointInconsistent,
    CosignatureMissing,
    IntegrityError,
    LedgerError,
    NotALedger,
    Refused,
    ServiceUnavailable,
)
from ledger.files import write_atomic
from ledger.keys import PrivateKey
from ledger.statement import decode

TIMEOUT = 10.0  # seconds for each request
MAX_CHECKPOINT_BYTES = 64 * 1024  # a note with at most 100 signature lines
MAX_GENESIS_BYTES = 2 + 65_535  # one entry of a tlog-tiles entry bundle: uint16 length and the entry
MAX_PROOF_BYTES = 64 * 1024  # a JSON proof of at most 64 hex hashes
GENESIS_BUNDLE = "/tile/entries/000.p/1"  # c2sp.org/tlog-tiles: the entry bundle holding entry 0 alone


@dataclass(frozen=True)
class RemoteCosigned:
    """A checkpoint cosigned from a ledger service: the note, the state it extended, what the log stored."""

    note: str
    checkpoint: Checkpoint
    previous: Checkpoint | None
    stored: int


class _Service:
    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url.rstrip("/")
        self.client = client

    def get(self, path: str, limit: int, *, params: dict[str, int] | None = None) -> tuple[int, bytes]:
        return self._send("GET", path, limit, params=params)

    def post(self, path: str, body: bytes, limit: int) -> tuple[int, bytes]:
        return self._send("POST", path, limit, content=body)

    def _send(self, method: str, path: str, limit: int, *, params: dict[str, int] | None = None,
              content: bytes | None = None) -> tuple[int, bytes]:
        where = self.url + path
        try:
            with self.client.stream(method, where, params=params, content=content,
                                    headers={"content-type": "text/plain; charset=utf-8"} if content else None
                                    ) as response:
                data = b""
                for chunk in response.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise NotALedger(f"{where} answered more than {limit} bytes: not a custody ledger service")
        except httpx.HTTPError as e:
            raise ServiceUnavailable(f"cannot reach the ledger service at {self.url}: "
                                     f"{type(e).__name__} {e}".strip()) from e
        if response.status_code >= 500:
            raise ServiceUnavailable(f"the ledger service at {self.url} answered {response.status_code} "
                                     f"to {method} {path}: {_snippet(data)}")
        return response.status_code, data


def _snippet(data: bytes) -> str:
    text = data[:300].decode("utf-8", "replace")
    try:
        document = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:200]
    if isinstance(document, dict) and "detail" in document:
        return f"{document.get('error')}: {document['detail']}"[:300]
    return " ".join(text.split())[:200]


def cosign_ledger(url: str, *, name: str, key: PrivateKey, state_path: Path, timestamp: int,
                  client: httpx.Client | None = None) -> RemoteCosigned:
    """Cosign the checkpoint the service at `url` serves, as witness `name` (module docstring)."""
    check_witness_name(name)
    own = client is None
    http = client if client is not None else httpx.Client(timeout=TIMEOUT)
    try:
        return _cosign(_Service(url, http), name, key, state_path, timestamp)
    finally:
        if own:
            http.close()


def _cosign(service: _Service, name: str, key: PrivateKey, state_path: Path, timestamp: int) -> RemoteCosigned:
    status, data = service.get("/checkpoint", MAX_CHECKPOINT_BYTES)
    if status == 404:
        raise NotALedger(f"{service.url} serves no checkpoint (an empty log, or not a custody ledger service)")
    if status != 200:
        raise NotALedger(f"{service.url}/checkpoint answered {status}: {_snippet(data)}")
    try:
        note = notes.parse_note(data)
    except LedgerError as e:
        raise NotALedger(f"{service.url}/checkpoint is not a checkpoint: {e.detail}") from None
    checkpoint = note.checkpoint
    operator = _operator_key(service, checkpoint)
    notes.verify_operator(note, checkpoint.origin, operator)
    previous = read_witness_state(state_path, checkpoint.origin, name, key.public)
    if previous is not None:
        _require_extends(service, previous, checkpoint, name)
    kh = notes.note_key_hash(checkpoint.origin, operator)
    operator_lines = "".join(s.line() for s in note.signatures if s.name == checkpoint.origin and s.key_hash == kh)
    # the note this witness vouches for: the body, the operator's signature and its own cosignature only
    cosigned = notes.add_cosignature(f"{note.body}\n{operator_lines}", name, key.public, key.sign, timestamp)
    write_atomic(state_path, cosigned.encode())
    status, data = service.post("/v1/cosignatures", cosigned.encode(), MAX_CHECKPOINT_BYTES)
    if status == 422:
        raise CosignatureMissing(f"the ledger service at {service.url} refused the cosignature: {_snippet(data)}")
    if status != 200:
        raise Refused(f"the ledger service at {service.url} answered {status} to POST /v1/cosignatures: "
                      f"{_snippet(data)}")
    try:
        stored = json.loads(data)["stored"]
    except (ValueError, KeyError, TypeError):
        stored = None
    if not isinstance(stored, int):
        raise NotALedger(f"{service.url}/v1/cosignatures answered 200 without a count of stored cosignatures")
    return RemoteCosigned(cosigned, checkpoint, previous, stored)


def _operator_key(service: _Service, checkpoint: Checkpoint) -> bytes:
    """The operator key that the genesis names, once the genesis is shown to be leaf 0 of the checkpoint."""
    if checkpoint.size == 0:
        raise NotALedger(f"{service.url} serves a checkpoint of an empty log: nothing to cosign")
    status, data = service.get(GENESIS_BUNDLE, MAX_GENESIS_BYTES)
    if status != 200:
        raise NotALedger(f"{service.url}{GENESIS_BUNDLE} answered {status}: {_snippet(data)}")
    if len(data) < 2 or int.from_bytes(data[:2], "big") != len(data) - 2:
        raise CheckpointInconsistent(f"{service.url}{GENESIS_BUNDLE} is not an entry bundle of one entry")
    wire = data[2:]
    try:
        genesis = decode(wire)
    except IntegrityError as e:
        raise CheckpointInconsistent(f"the served genesis statement is malformed: {e.detail}") from None
    operator = genesis.data.get("operator") if genesis.kind == "ledger_opened" else None
    if genesis.origin != checkpoint.origin or not isinstance(operator, bytes):
        raise CheckpointInconsistent(f"the served entry 0 is not the genesis of {checkpoint.origin!r}")
    leaf = merkle.leaf_hash(wire)
    if checkpoint.size == 1:
        if leaf != checkpoint.root:
            raise CheckpointInconsistent("the served genesis is not the checkpoint's only leaf")
        return operator
    proof = _consistency(service, 1, checkpoint.size)
    try:
        merkle.verify_consistency(1, checkpoint.size, proof, leaf, checkpoint.root)
    except IntegrityError as e:
        raise CheckpointInconsistent(f"the served genesis is not leaf 0 of the checkpoint: {e.detail}") from None
    return operator


def _require_extends(service: _Service, previous: Checkpoint, checkpoint: Checkpoint, name: str) -> None:
    if checkpoint.size < previous.size:
        raise CheckpointInconsistent(f"refusing to cosign a rollback: checkpoint size {checkpoint.size} is "
                                     f"smaller than the size {previous.size} witness {name} cosigned")
    if checkpoint.size == previous.size:
        if checkpoint.root != previous.root:
            raise CheckpointInconsistent(f"refusing to cosign a fork: witness {name} cosigned another root "
                                         f"at size {checkpoint.size}")
        return
    if previous.size == 0:
        return
    proof = _consistency(service, previous.size, checkpoint.size)
    try:
        merkle.verify_consistency(previous.size, checkpoint.size, proof, previous.root, checkpoint.root)
    except IntegrityError as e:
        raise CheckpointInconsistent(f"refusing to cosign a fork: the checkpoint of size {checkpoint.size} does "
                                     f"not extend the size {previous.size} witness {name} cosigned "
                                     f"({e.detail})") from None


def _consistency(service: _Service, old: int, new: int) -> list[bytes]:
    path = "/v1/proofs/consistency"
    status, data = service.get(path, MAX_PROOF_BYTES, params={"from": old, "to": new})
    if status != 200:
        raise CheckpointInconsistent(f"{service.url}{path}?from={old}&to={new} answered {status}: "
                                     f"{_snippet(data)}")
    try:
        hashes = json.loads(data)["proof"]
        proof = [bytes.fromhex(h) for h in hashes]
    except (ValueError, KeyError, TypeError):
        raise CheckpointInconsistent(f"{service.url}{path} did not answer a proof of hex hashes") from None
    if len(proof) > 64 or any(len(h) != merkle.HASH_SIZE for h in proof):
        raise CheckpointInconsistent(f"{service.url}{path} answered a proof that cannot be one")
    return proof
