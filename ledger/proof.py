"""Per-unit proofs: the `custody-proof/1` format, built from a ledger and checked without one.

`build_proof` writes a self-contained document (README "Per-unit proofs"): the unit's statements, the
administrative statements that authorise their signers, an RFC 9162 inclusion proof for each against
one signed checkpoint, and that checkpoint. `verify_proof` checks it all offline and folds the unit's
statements for its findings.

Errors: a proof that is not one at all is `NotALedger` (exit 2); a bad one raises an `IntegrityError`
naming the check (exit 1); bad arguments are `BadInput` (exit 2).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ledger import checkpoint as notes
from ledger import driver, fold, limits, merkle, rules
from ledger.checkpoint import Checkpoint, ParsedNote
from ledger.errors import (
    BadInput,
    ChainBroken,
    CheckpointSignatureInvalid,
    GenesisUntrusted,
    IntegrityError,
    LedgerError,
    NotALedger,
    NotFound,
    OriginMismatch,
    ProofInvalid,
    Refused,
    RootMismatch,
    TimeInvalid,
)
from ledger.history import Step
from ledger.links import unit_chain
from ledger.state import Finding, State, UnitState
from ledger.statement import ADMIN_KINDS, ZERO_HASH, Statement, decode, key_id, valid_id, verify_signature
from ledger.store import Store
from ledger.tree_head import Ledger, largest, ledger_identity, read_leaves

PROOF_FORMAT = "custody-proof/1"  # README "Per-unit proofs": the `format` of a per-unit proof document
PROOF_PREFIX = b'{"format":"' + PROOF_FORMAT.encode() + b'",'  # how every canonical proof file begins
PROOF_KEYS = frozenset({"format", "origin", "serial", "signed_checkpoint", "statements"})
ENTRY_KEYS = frozenset({"index", "wire", "inclusion"})
MAX_PROOF_BYTES = limits.MAX_PROOF_FILE_BYTES  # refuse to read anything larger as a proof
MAX_INCLUSION_HASHES = 64  # RFC 9162 trees of at most 2^64 leaves have paths of at most 64 hashes


# --- the format ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProofEntry:
    """One statement of a proof: its log index, wire form and RFC 9162 inclusion proof (leaf to root)."""

    index: int
    wire: bytes
    inclusion: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class UnitProof:
    """A `custody-proof/1` document: see README "Per-unit proofs"."""

    origin: str
    serial: str
    signed_checkpoint: str
    entries: tuple[ProofEntry, ...]

    def document(self) -> dict[str, Any]:
        return {"format": PROOF_FORMAT, "origin": self.origin, "serial": self.serial,
                "signed_checkpoint": self.signed_checkpoint,
                "statements": [{"index": e.index, "wire": _b64(e.wire),
                                "inclusion": [_b64(h) for h in e.inclusion]} for e in self.entries]}

    def encode(self) -> bytes:
        """The canonical file bytes (README "File format": keys sorted, no whitespace, ASCII only)."""
        return canonical_json(self.document())


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII with \\u escapes, one final newline."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii") + b"\n"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(text: object, what: str) -> bytes:
    """Standard base64 (RFC 4648 §4) in its one canonical form (padding, zero unused bits)."""
    if not isinstance(text, str):
        raise ProofInvalid(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProofInvalid(f"{what} is not base64") from None
    if _b64(raw) != text:
        raise ProofInvalid(f"{what} is not canonical base64")
    return raw


class _Rejected(ValueError):
    """A JSON construct that no proof contains: a float, NaN, a repeated key."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Rejected(f"key {k[:40]!r} repeated")
        out[k] = v
    return out


def _no_float(text: str) -> Any:
    raise _Rejected(f"number {text[:40]} is not an integer")


def parse_proof(data: bytes) -> UnitProof:
    """Parse a proof file without verifying it.

    A file that begins with the canonical header (`{"format":"custody-proof/1",`) or is a JSON object
    whose `format` is `custody-proof/1` is a proof: any defect in it raises `ProofInvalid` (exit 1).
    Anything else raises `NotALedger` (exit 2).
    """
    if not isinstance(data, bytes):
        raise NotALedger("not a proof: expected bytes")
    claimed = data.startswith(PROOF_PREFIX)

    def defect(detail: str) -> LedgerError:
        return ProofInvalid(f"damaged proof: {detail}") if claimed else NotALedger(f"not a proof: {detail}")

    if len(data) > MAX_PROOF_BYTES:
        raise defect(f"larger than {MAX_PROOF_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise defect(f"not UTF-8 text (byte {e.start})") from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float,
                              parse_constant=_no_float)
    except (ValueError, RecursionError) as e:
        detail = e.msg if isinstance(e, json.JSONDecodeError) else str(e) or type(e).__name__
        where = f" at byte {e.pos}" if isinstance(e, json.JSONDecodeError) else ""
        raise defect(f"not JSON ({detail}{where}; truncated?)") from None
    if not isinstance(document, dict) or document.get("format") != PROOF_FORMAT:
        if claimed:
            raise ProofInvalid("damaged proof: the format field is not the first one")
        found = document.get("format") if isinstance(document, dict) else None
        raise NotALedger(f"not a proof: a {PROOF_FORMAT} file is a JSON object with format "
                         f"{PROOF_FORMAT!r}" + (f" (this one says {str(found)[:40]!r})" if found else ""))
    proof = _proof_fields(document)
    if canonical_json(document) != data:
        raise ProofInvalid("the proof is not in canonical form (sorted keys, no spaces, ASCII, one final "
                           "newline): it was edited")
    return proof


def _proof_fields(document: dict[str, Any]) -> UnitProof:
    if set(document) != PROOF_KEYS:
        extra, missing = sorted(set(document) - PROOF_KEYS), sorted(PROOF_KEYS - set(document))
        raise ProofInvalid(f"proof fields wrong (unknown {extra}, missing {missing})")
    origin, serial, note, statements = (document["origin"], document["serial"],
                                        document["signed_checkpoint"], document["statements"])
    if not isinstance(origin, str) or not origin:
        raise ProofInvalid("the proof's origin is not text")
    if not valid_id(serial):
        raise ProofInvalid(f"the proof's serial {str(serial)[:80]!r} is not a serial")
    if not isinstance(note, str):
        raise ProofInvalid("the proof's signed_checkpoint is not text")
    if not isinstance(statements, list) or not statements:
        raise ProofInvalid("the proof's statements are not a non-empty list")
    entries: list[ProofEntry] = []
    for n, item in enumerate(statements):
        where = f"statement {n}"
        if not isinstance(item, dict) or set(item) != ENTRY_KEYS:
            raise ProofInvalid(f"{where} is not an object with exactly index, wire and inclusion")
        index = item["index"]
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 2**63:
            raise ProofInvalid(f"{where}: index is not a log index")
        if entries and index <= entries[-1].index:
            raise ProofInvalid(f"{where}: index {index} does not follow {entries[-1].index} (log order)",
                               index)
        wire = _b64decode(item["wire"], f"{where} (index {index}) wire")
        path = item["inclusion"]
        if not isinstance(path, list) or len(path) > MAX_INCLUSION_HASHES:
            raise ProofInvalid(f"{where} (index {index}): inclusion is not a list of at most "
                               f"{MAX_INCLUSION_HASHES} hashes", index)
        hashes = tuple(_b64decode(h, f"{where} (index {index}) inclusion hash {i}")
                       for i, h in enumerate(path))
        if any(len(h) != merkle.HASH_SIZE for h in hashes):
            raise ProofInvalid(f"{where} (index {index}): an inclusion hash is not {merkle.HASH_SIZE} bytes",
                               index)
        entries.append(ProofEntry(index, wire, hashes))
    return UnitProof(origin, serial, note, tuple(entries))


# --- building ------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldLog:
    """What a long-running reader (the service) holds of the log, so that a proof reads only the unit's own
    rows: the latest checkpoint note it serves, the tree at any size up to it (from the stored statements'
    leaf hashes, read once), and the administrative statements (index, wire) below a size."""

    note: str
    tree: Callable[[int], merkle.ProofSource]
    admin: Callable[[int], list[tuple[int, bytes]]]


def build_proof(store: Store, serial: str, *, now_us: int, held: HeldLog | None = None) -> UnitProof:
    """The proof of unit `serial` against the largest stored checkpoint, which must cover its statements.

    Needs no key. The unit's statements are read from the log itself (its stored chain links only say
    where its newest one is). Raises `NotFound` for an unknown serial, `Refused` when no stored
    checkpoint covers the unit's newest statement, and an `IntegrityError` when the ledger disagrees with
    its own checkpoint.
    With `held` (the service) the proof is against `held.note`, and the store is read for the unit's chain
    and its statements only (checked as `verify` checks them, `links.unit_chain`), not the whole log: the
    tree and the administrative statements come from `held`. That the links name every statement of the
    unit is what `verify` checks.
    The proof is verified (trusting the genesis, as a verifier would with `--trust`) before it is returned.
    """
    if not valid_id(serial):
        raise BadInput(f"bad serial {serial[:80]!r}")
    ledger = ledger_identity(store)
    chain = unit_chain(store, serial)  # checked as `verify` checks it: UnitLinksInvalid otherwise
    if not chain:
        raise NotFound(f"unknown serial {serial!r}: no unit with that serial in {store.url}")
    newest = chain[-1][0]
    texts = [held.note] if held is not None else [text for _, _, text in store.checkpoints()]
    valid: list[ParsedNote] = []
    for text in texts:
        try:
            note = notes.parse_note(text)
            notes.verify_operator(note, ledger.origin, ledger.operator)
        except LedgerError:
            continue  # `verify` reports it; a proof is built on a checkpoint that verifies
        valid.append(note)
    chosen = largest(valid)
    if chosen is None or chosen.checkpoint.size <= newest:
        have = f"the latest covers statements 0…{chosen.checkpoint.size - 1}" if chosen else "none is stored"
        raise Refused(f"no checkpoint covers unit {serial}'s newest statement (index {newest}); {have}: "
                      "run `custody checkpoint --key OPERATOR_KEY` first")
    size = chosen.checkpoint.size
    unit_wires: dict[int, bytes] = {}
    admin: list[tuple[int, bytes]] = []

    def visit(index: int, wire: bytes) -> None:  # the log decides, not the (derived) unit links
        kind, serials = _peek(wire)
        if kind in ADMIN_KINDS:
            admin.append((index, wire))
        elif serial in serials:
            unit_wires[index] = wire

    if held is None:
        source = merkle.ProofSource(read_leaves(store, size, visit))
    else:
        source = held.tree(size)
        unit_wires = {index: statement.wire for index, statement in chain}
        admin = held.admin(size)
    if source.root() != chosen.checkpoint.root:
        raise RootMismatch(f"the stored checkpoint of size {size} is not the log's root at that size "
                           "(run `custody verify`)", expected=chosen.checkpoint.root,
                           calculated=source.root())
    steps = {i: decode_at(ProofEntry(i, w, ())) for i, w in unit_wires.items()}
    authority = [(i, st) for i, st in ((i, _decode_or_none(w)) for i, w in admin) if st is not None]
    chosen_indices = sorted(select_statements(steps, authority))
    wires = dict(admin) | unit_wires
    entries = tuple(ProofEntry(i, wires[i], tuple(source.inclusion_proof(i))) for i in chosen_indices)
    proof = UnitProof(ledger.origin, serial, operator_only(chosen, ledger), entries)
    verify_proof(proof, trusted=ledger.genesis.data["authorities"], operator=ledger.operator, now_us=now_us)
    return proof


def operator_only(note: ParsedNote, ledger: Ledger) -> str:
    """The note with the operator's signature line alone, so that every byte of a proof matters."""
    kh = notes.note_key_hash(ledger.origin, ledger.operator)
    lines = [s.line() for s in note.signatures if s.name == ledger.origin and s.key_hash == kh]
    return note.body + "\n" + "".join(lines)


def _peek(wire: bytes) -> tuple[object, frozenset[str]]:
    """A wire form's kind and serials at a glance, without the full checks (they come later)."""
    try:
        body = msgpack.unpackb(msgpack.unpackb(wire)[0])
        return body.get("kind"), frozenset(u[0] for u in body.get("units", ()) if isinstance(u[0], str))
    except Exception:  # a damaged statement is `verify`'s business; it names and authorises nothing
        return None, frozenset()


def _decode_or_none(wire: bytes) -> Statement | None:
    try:
        return decode(wire)
    except IntegrityError:
        return None


def select_statements(steps: dict[int, Statement], authority: Sequence[tuple[int, Statement]]) -> set[int]:
    """The log indices a unit's proof carries (README "Per-unit proofs" "Which statements").

    The unit's steps; the genesis; every registration of the participants that signed a step or that
    it was re-exported to (`DESTINATION_MISMATCH` compares a consignee's registered country), and every
    approval or suspension of those consignees, logged before its newest step; the
    policy in force for each step; and every revocation, anywhere below the checkpoint, of a key that
    signed a statement of the proof (to a fixpoint, as revocations are signed too).
    """
    newest = max(steps)
    owner: dict[str, str] = {}
    for _, st in authority:
        if st.kind == "participant_registered":
            owner.setdefault(key_id(st.data["key"]), st.data["id"])
    parties = {owner[st.signer] for st in steps.values() if st.signer in owner}
    consignees = {st.data["consignee"] for st in steps.values() if st.kind == "re_exported"}
    chosen: set[int] = set(steps) | {0}
    for index, st in authority:
        if index >= newest:
            continue
        if ((st.kind == "participant_registered" and (st.data["id"] in parties or st.data["id"] in consignees))
                or (st.kind in ("customer_approved", "customer_suspended") and st.data["id"] in consignees)):
            chosen.add(index)
    policies = [index for index, st in authority if st.kind == "policy_issued"]
    for index in steps:
        at = bisect.bisect_left(policies, index)
        if at:
            chosen.add(policies[at - 1])
    by_index = dict(authority)
    signers = {st.signer for st in steps.values()} | {by_index[i].signer for i in chosen if i in by_index}
    revocations = [(index, st) for index, st in authority if st.kind == "key_revoked"]
    while True:
        added = [(index, st) for index, st in revocations
                 if index not in chosen and key_id(st.data["key"]) in signers]
        if not added:
            return chosen
        for index, st in added:
            chosen.add(index)
            signers.add(st.signer)


# --- verifying -----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedProof:
    """What a proof proves: the unit's steps up to the checkpoint, and the findings they show."""

    serial: str
    origin: str
    checkpoint: Checkpoint
    operator: bytes
    authorities: tuple[bytes, ...]
    steps: tuple[Step, ...]
    findings: tuple[Finding, ...]
    statements: int


def verify_proof_file(data: bytes, *, trusted: Sequence[bytes], operator: bytes | None,
                      now_us: int) -> VerifiedProof:
    """`parse_proof`, then `verify_proof`."""
    return verify_proof(parse_proof(data), trusted=trusted, operator=operator, now_us=now_us)


def verify_proof(proof: UnitProof, *, trusted: Sequence[bytes], operator: bytes | None,
                 now_us: int) -> VerifiedProof:
    """Check a proof without the ledger; raise the `IntegrityError` of the first thing that fails.

    The genesis (index 0) must be signed by its own authorities, all of them in `trusted`; the checkpoint
    must carry the operator's signature (`operator`, else the genesis's, which must then match); every
    statement must be included in that checkpoint's tree; administrative statements are checked by
    `rules.check` as of their index on the state the proof's earlier statements fold to; the unit's
    steps by signer, role, revocation and signature, and its own chain (prev links and times).
    """
    if not trusted:
        raise BadInput("give at least one trusted authority key (--trust)")
    try:
        note = notes.parse_note(proof.signed_checkpoint)
    except LedgerError as e:
        raise CheckpointSignatureInvalid(f"the proof's checkpoint: {e.detail}") from e
    checkpoint = note.checkpoint
    if checkpoint.origin != proof.origin:
        raise OriginMismatch(f"the proof's checkpoint is for {checkpoint.origin[:80]!r}, not the proof's "
                             f"origin {proof.origin[:80]!r}")
    if proof.entries[0].index != 0:
        raise ProofInvalid("the proof does not begin with the genesis statement (index 0)")
    for entry in proof.entries:
        merkle.verify_inclusion(entry.index, checkpoint.size, merkle.leaf_hash(entry.wire), entry.inclusion,
                                checkpoint.root)
    state = State(origin=proof.origin)
    steps: list[Step] = []
    for entry in proof.entries:
        statement = decode_at(entry)
        if entry.index == 0:
            driver.admit(state, 0, statement, now_us, trusted=list(trusted))
            assert state.operator is not None
            if operator is not None and state.operator != operator:
                raise GenesisUntrusted(f"the genesis names operator key {key_id(state.operator)[:16]}…, "
                                       f"not the --operator key {key_id(operator)[:16]}…", 0)
            notes.verify_operator(note, proof.origin, state.operator)
        elif not statement.units:
            driver.admit(state, entry.index, statement, now_us)
        else:
            _check_step(state, statement, entry.index, proof.serial, now_us)
            participant = state.participant_of(statement.signer)
            _fold_step(state, statement, entry.index, proof.serial)
            steps.append(Step(entry.index, statement, participant))
    if not steps:
        raise ProofInvalid(f"the proof holds no statement of unit {proof.serial}")
    assert state.operator is not None
    findings = tuple(f for f in state.findings if f.serial == proof.serial)
    authorities = tuple(k.public for k in state.keys.values() if k.authority)
    return VerifiedProof(proof.serial, proof.origin, checkpoint, state.operator, authorities, tuple(steps),
                         findings, len(proof.entries))


def decode_at(entry: ProofEntry) -> Statement:
    return driver.decode_at(entry.wire, entry.index)


def _check_step(state: State, statement: Statement, index: int, serial: str, now_us: int) -> None:
    """The hard rules for a step, where only `serial`'s chain is known (its other units' are not)."""
    if statement.origin != state.origin:
        raise OriginMismatch(f"origin {statement.origin[:80]!r} is not the proof's", index)
    prev = dict(statement.units).get(serial)
    if prev is None:
        raise ProofInvalid(f"the {statement.kind} at index {index} does not concern unit {serial}", index)
    public = rules.check_signer(state, statement, index)
    verify_signature(statement, public, index)
    unit = state.units.get(serial)
    if unit is None:
        if statement.kind != "fabricated":
            raise ChainBroken(f"unit {serial}: its first statement in the proof is {statement.kind}, not "
                              "fabricated (the start of its chain is missing)", index)
        if prev != ZERO_HASH:
            raise ChainBroken(f"unit {serial}: a new chain's prev must be zero", index)
    else:
        if statement.kind == "fabricated":
            raise ChainBroken(f"unit {serial} was already fabricated at index {unit.index}", index)
        if prev != unit.head:
            raise ChainBroken(f"unit {serial}: prev is not the hash of its statement at index {unit.index} "
                              "(a statement is missing from the proof, or was changed)", index)
        if statement.at < unit.at:
            raise TimeInvalid(f"unit {serial}: at is earlier than its previous statement's", index)
    if statement.at > now_us + rules.MAX_CLOCK_SKEW_US:
        raise TimeInvalid("at is more than 5 minutes in the future", index)


def _fold_step(state: State, statement: Statement, index: int, serial: str) -> None:
    """`fold.apply` with the statement's other units as placeholders, dropped afterwards.

    The fold needs every unit of a step; the proof knows one. Placeholders keep the statement whole (so
    `UNDERVALUED_ENTRY` counts all its units) while counting toward no customer's cap; their findings
    are never reported, as only `serial`'s are.
    """
    others = [s for s in statement.serials if s != serial]
    if statement.kind != "fabricated":
        own = state.units[serial]
        consignee = statement.data.get("consignee") if statement.kind == "re_exported" else None
        for other in others:
            placeholder = UnitState.from_row(own.to_row())
            placeholder.serial, placeholder.codes = other, set()
            placeholder.counted = [consignee] if consignee else []
            state.units[other] = placeholder
    fold.apply(state, index, statement)
    for other in others:
        state.units.pop(other, None)
