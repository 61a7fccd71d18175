"""Verification: every hard rule re-checked from the stored wire bytes alone, then compliance.

One `Verifier` consumes (index, wire) pairs from a database or a bundle and runs the same
`rules.check` and `fold.apply` that appending runs; database-only checks (log indices, unit links) and
checkpoint checks are added by the two entry points. Verification goes on past a failure where it
can: a statement that breaks a rule is reported and left out of the state, as an append would have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ledger import bundle as bundle_format
from ledger import checkpoint as notes
from ledger import fold, merkle, rules
from ledger.aggregates import unit_id
from ledger.errors import (
    CheckpointInconsistent,
    CheckpointSignatureInvalid,
    CosignatureMissing,
    EncodingInvalid,
    IntegrityError,
    LedgerError,
    LogIndexInvalid,
    RootMismatch,
    UnitLinksInvalid,
)
from ledger.state import Finding, State
from ledger.statement import Statement, decode
from ledger.store import Store

MAX_FAILURES = 100
CORE_CHECKS = ("encoding", "origin", "signature", "signer", "role", "revocation", "chain", "time")
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Failure:
    check: str
    index: int | None
    detail: str


@dataclass(frozen=True)
class Report:
    """What `verify` found: DESIGN.md's `verify --json` fields, plus warnings for stderr."""

    intact: bool
    compliant: bool
    log_size: int
    checks: tuple[str, ...]
    failures: tuple[Failure, ...]
    findings: tuple[Finding, ...]
    warnings: tuple[str, ...]
    state: State = field(repr=False, compare=False)

    @property
    def violations(self) -> int:
        return len(self.findings)


@dataclass(frozen=True)
class Witness:
    name: str
    public_key: bytes


@dataclass
class Options:
    trusted: Sequence[bytes] | None = None
    checkpoints: Sequence[tuple[str, str]] = ()  # (file name, note text) given with --checkpoint
    witnesses: Sequence[Witness] = ()
    as_of: int = 0
    now: int = 0
    progress: Progress | None = None
    workers: int | None = None


class Verifier:
    """Folds a stream of wire forms, collecting failures instead of stopping at the first."""

    def __init__(self, origin: str | None, options: Options) -> None:
        self.options = options
        self.state = State(origin=origin)
        self.failures: list[Failure] = []
        self.failure_count = 0
        self.leaves: list[bytes] = []
        self.links: dict[str, tuple[int, bytes]] = {}  # serial -> (count, digest) expected from the log
        self.warnings: list[str] = []

    def fail(self, error: IntegrityError | Failure) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES:
            if isinstance(error, Failure):
                self.failures.append(error)
            else:
                self.failures.append(Failure(error.check, error.index, error.detail))

    def statement(self, index: int, wire: bytes) -> Statement | None:
        """Check and fold the statement at `index`; returns it if it decoded."""
        self.leaves.append(merkle.leaf_hash(wire))
        try:
            statement = decode(wire)
        except IntegrityError as e:
            self.fail(e.at_index(index))
            return None
        for serial in statement.serials:
            count, digest = self.links.get(serial, (0, b""))
            self.links[serial] = (count + 1, _link_digest(digest, index, statement.hash))
        try:
            rules.check(self.state, statement, index, self.options.now, trusted=self.options.trusted)
        except IntegrityError as e:
            self.fail(e.at_index(index))
            if e.check != "genesis_trust" or index != 0 or self.options.trusted is None:
                return statement
            try:  # an untrusted but well-formed genesis: report it, and go on verifying the rest
                rules.check(self.state, statement, index, self.options.now)
            except IntegrityError:
                return statement
        fold.apply(self.state, index, statement)
        return statement

    def roots(self, sizes: Iterable[int]) -> dict[int, bytes]:
        return {size: merkle.root_of(self.leaves[:size]) for size in set(sizes) if size <= len(self.leaves)}

    def check_notes(self, stored: Sequence[str], where: str) -> list[notes.ParsedNote]:
        """Stored or bundled checkpoints: a valid operator signature, and the log's root at the size."""
        operator = self.state.operator
        parsed: list[notes.ParsedNote] = []
        for text in stored:
            try:
                note = notes.parse_note(text)
                if operator is None or self.state.origin is None:
                    raise CheckpointSignatureInvalid("no operator key: the genesis did not verify")
                cp = notes.verify_operator(note, self.state.origin, operator)
            except LedgerError as e:
                self.fail(Failure("checkpoint_signature", None, f"{where} checkpoint: {e.detail}"))
                continue
            if cp.size > len(self.leaves):
                self.fail(RootMismatch(f"{where} checkpoint of size {cp.size} exceeds the log "
                                       f"({len(self.leaves)} statements)"))
            elif merkle.root_of(self.leaves[:cp.size]) != cp.root:
                self.fail(RootMismatch(f"{where} checkpoint of size {cp.size}: root is not the log's",
                                       expected=cp.root, calculated=merkle.root_of(self.leaves[:cp.size])))
            else:
                parsed.append(note)
        return parsed

    def check_given(self) -> list[notes.ParsedNote]:
        """`--checkpoint FILE`: the log must be an append-only extension of each."""
        good: list[notes.ParsedNote] = []
        for name, text in self.options.checkpoints:
            try:
                note = notes.parse_note(text)
                if self.state.operator is None or self.state.origin is None:
                    raise CheckpointSignatureInvalid("no operator key: the genesis did not verify")
                cp = notes.verify_operator(note, self.state.origin, self.state.operator)
            except LedgerError as e:
                self.fail(Failure("checkpoint_consistency", None, f"{name}: {e.detail}"))
                continue
            if cp.size > len(self.leaves):
                self.fail(CheckpointInconsistent(f"{name}: the log ({len(self.leaves)}) is shorter than the "
                                                 f"checkpoint ({cp.size}): truncated or rolled back"))
                continue
            source = merkle.ProofSource(self.leaves)
            try:
                proof = source.consistency_proof(cp.size) if 0 < cp.size < len(self.leaves) else []
                if cp.size == len(self.leaves) or cp.size == 0:
                    if merkle.root_of(self.leaves[:cp.size]) != cp.root:
                        raise CheckpointInconsistent("root differs at the same size")
                else:
                    merkle.verify_consistency(cp.size, len(self.leaves), proof, cp.root, source.root())
            except LedgerError as e:
                self.fail(CheckpointInconsistent(f"{name}: the log does not extend this checkpoint of size "
                                                 f"{cp.size} ({e.detail})"))
                continue
            good.append(note)
        return good

    def check_witnesses(self, candidates: Sequence[notes.ParsedNote]) -> None:
        if not self.options.witnesses:
            return
        if not candidates:
            for w in self.options.witnesses:
                self.fail(CosignatureMissing(f"witness {w.name}: no checkpoint to check a cosignature on"))
            return
        latest_size = max(n.checkpoint.size for n in candidates)
        latest = [n for n in candidates if n.checkpoint.size == latest_size]
        for w in self.options.witnesses:
            for note in latest:
                try:
                    notes.verify_cosignature(note, w.name, w.public_key)
                    break
                except LedgerError:
                    continue
            else:
                self.fail(CosignatureMissing(f"witness {w.name} has not validly cosigned the latest "
                                             f"checkpoint (size {latest_size})"))

    def report(self, checks: Sequence[str]) -> Report:
        findings = list(self.state.findings)
        if not self.failures and self.state.operator is not None:
            findings += fold.overdue(self.state, self.options.as_of)
        findings.sort(key=lambda f: (f.index, f.serial or "", f.code))
        intact = self.failure_count == 0
        return Report(intact=intact, compliant=intact and not findings, log_size=len(self.leaves),
                      checks=tuple(checks), failures=tuple(self.failures), findings=tuple(findings),
                      warnings=tuple(self.warnings), state=self.state)


def _link_digest(digest: bytes, index: int, statement_hash: bytes) -> bytes:
    return hashlib.sha256(digest + index.to_bytes(8, "big") + statement_hash).digest()


def _checks(options: Options, database: bool, notes_seen: bool) -> list[str]:
    checks = list(CORE_CHECKS)
    if database:
        checks += ["log_index", "unit_links"]
    if options.trusted is not None:
        checks.append("genesis_trust")
    if notes_seen:
        checks += ["checkpoint_signature", "checkpoint_root"]
    if options.checkpoints:
        checks.append("checkpoint_consistency")
    if options.witnesses:
        checks.append("cosignature")
    return checks


def _trust_warning(verifier: Verifier, options: Options) -> None:
    if options.trusted is None:
        authorities = [k.public.hex()[:16] for k in verifier.state.keys.values() if k.authority]
        verifier.warnings.append("no --trust given: trusting the genesis authorities on first use ("
                                 + ", ".join(authorities) + ")")


def _uncovered_warning(verifier: Verifier, sizes: Sequence[int]) -> None:
    if len(verifier.leaves) and (not sizes or max(sizes) < len(verifier.leaves)):
        newest = max(sizes) if sizes else 0
        verifier.warnings.append(f"no checkpoint covers statements {newest}…{len(verifier.leaves) - 1}")


def verify_store(store: Store, options: Options) -> Report:
    """Verify a ledger database: statements, log indices, unit links, stored checkpoints."""
    verifier = Verifier(store.origin, options)
    expected_version = 1
    for event in store.log(0):
        if event.version != expected_version:
            verifier.fail(LogIndexInvalid(f"log version {event.version} where {expected_version} was expected "
                                          "(a gap or a reorder)", expected_version - 1))
            # statements keep their stored position: the index is what the store says
        expected_version = event.version + 1
        verifier.statement(len(verifier.leaves), event.wire)
        if options.progress:
            options.progress(1)
    _check_unit_links(store, verifier)
    stored = store.checkpoints()
    good = verifier.check_notes([note for _, _, note in stored], "stored")
    given = verifier.check_given()
    verifier.check_witnesses(good + given)
    _trust_warning(verifier, options)
    _uncovered_warning(verifier, [size for _, size, _ in stored])
    return verifier.report(_checks(options, True, bool(stored)))


def _check_unit_links(store: Store, verifier: Verifier) -> None:
    """Each unit's stored chain links must be exactly the log's statements that name it, in order."""
    origin = store.origin or ""
    seen: dict[str, tuple[int, bytes]] = {}
    bad: set[str] = set()
    for originator, version, state in store.all_unit_links():
        serial = state.get("serial")
        if not isinstance(serial, str) or unit_id(origin, serial) != originator:
            verifier.fail(UnitLinksInvalid(f"a unit link names serial {serial!r:.40} under another unit's id",
                                           state.get("index") if isinstance(state.get("index"), int) else None))
            continue
        count, digest = seen.get(serial, (0, b""))
        if version != count + 1:
            bad.add(serial)
        index, hash_ = state.get("index"), state.get("hash")
        if not isinstance(index, int) or not isinstance(hash_, bytes):
            bad.add(serial)
            continue
        seen[serial] = (count + 1, _link_digest(digest, index, hash_))
    for serial in set(seen) | set(verifier.links):
        if serial in bad or seen.get(serial) != verifier.links.get(serial):
            expected = _expected_links(store, serial)
            stored = [(link.get("index"), link.get("hash")) for link in store.unit_links(serial)]
            at = next((e[0] for e, s in zip(expected, stored, strict=False) if e != s),
                      expected[min(len(expected), len(stored))][0] if len(expected) > len(stored)
                      else stored[len(expected)][0] if len(stored) > len(expected) else None)
            verifier.fail(UnitLinksInvalid(f"unit {serial}: stored chain links disagree with the log",
                                           at if isinstance(at, int) else None))


def _expected_links(store: Store, serial: str) -> list[tuple[int, bytes]]:
    out = []
    for event in store.log(0):
        try:
            statement = decode(event.wire)
        except IntegrityError:
            continue
        if serial in statement.serials:
            out.append((event.index, statement.hash))
    return out


def verify_bundle(path: Path, options: Options, stream: BinaryIO | None = None) -> Report:
    """Verify a bundle offline: every check a database gets, but log indices and unit links."""
    with (stream or path.open("rb")) as handle:
        reader = bundle_format.open_bundle(handle)
        verifier = Verifier(reader.origin, options)
        checkpoints: list[str] = []
        try:
            for index, wire in reader.statements():
                verifier.statement(index, wire)
                if options.progress:
                    options.progress(1)
            checkpoints = list(reader.checkpoints())
        except EncodingInvalid as e:
            verifier.fail(e.at_index(len(verifier.leaves)))
    good = verifier.check_notes(checkpoints, "bundled")
    given = verifier.check_given()
    verifier.check_witnesses(good + given)
    _trust_warning(verifier, options)
    sizes = []
    for text in checkpoints:
        try:
            sizes.append(notes.parse_note(text).checkpoint.size)
        except LedgerError:
            continue
    _uncovered_warning(verifier, sizes)
    return verifier.report(_checks(options, False, bool(checkpoints)))


def statements_of(pairs: Iterable[tuple[int, bytes]]) -> Iterable[tuple[int, Statement]]:
    for index, wire in pairs:
        yield index, decode(wire)


def _unused(*_: Any) -> None:  # pragma: no cover
    return None
