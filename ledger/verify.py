"""Verification: every hard rule re-checked from the stored wire bytes alone, then compliance.

One `Verifier` folds decoded statements from a database or a bundle in log order through the same
driver (`driver.admit`: `rules.check`, then `fold.apply`) that appending runs; database-only checks
(log indices, unit links) and checkpoint checks are added by the two entry points. Verification goes
on past a failure where it can: a statement that breaks a rule is reported and left out of the state,
as an append would have.

The log streams through in chunks that worker processes decode and whose signatures they verify
(`ledger.parallel`; `Options.workers`, default every core); the fold stays in this process and in
order. Memory grows with the units (the fold's state), plus 32 bytes per statement for the Merkle
leaves that checkpoints are checked against (a bytearray: 32 MB per million statements).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ledger import accounting, driver, fold, links, merkle, parallel
from ledger import bundle as bundle_format
from ledger import checkpoint as notes
from ledger.errors import (
    CheckpointInconsistent,
    CheckpointSignatureInvalid,
    CosignatureMissing,
    EncodingInvalid,
    GenesisUntrusted,
    IntegrityError,
    LedgerError,
    LogIndexInvalid,
    NotALedger,
    RootMismatch,
)
from ledger.state import Finding, State
from ledger.statement import Statement
from ledger.store import Store

MAX_FAILURES = 100
_SERIAL = operator.itemgetter(0)  # of a statement's (serial, prev) pair
HASH_SIZE = merkle.HASH_SIZE
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
    # called with each statement that passed every rule and was folded, in log order (the visual report
    # reads the log in the same pass)
    folded: Callable[[int, Statement], None] | None = None


class Verifier:
    """Folds decoded statements in log order, collecting failures instead of stopping at the first."""

    def __init__(self, origin: str | None, options: Options) -> None:
        self.options = options
        self.state = State(origin=origin)
        self.failures: list[Failure] = []
        self.failure_count = 0
        self.leaves = merkle.Leaves()
        self.links: links.StoredLinks | None = None  # the stored unit links, compared in order (database)
        self.warnings: list[str] = []
        self._roots: dict[int, bytes] = {}

    @property
    def size(self) -> int:
        return len(self.leaves)

    def fail(self, error: IntegrityError | Failure) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES:
            if isinstance(error, Failure):
                self.failures.append(error)
            else:
                self.failures.append(Failure(error.check, error.index, error.detail))

    def known_keys(self) -> dict[str, bytes]:
        """The keys the state holds (key id → key)."""
        return {kid: info.public for kid, info in self.state.keys.items()}

    def chunk(self, items: Sequence[parallel.Item], leaves: bytes) -> None:
        self.leaves.data += leaves
        for item in items:
            self.item(item)

    def item(self, item: parallel.Item) -> None:
        """Check and fold the statement of `item` (or record why it did not decode).

        `item.verified` is the key a worker's libsodium accepted the signature under; the rules skip that
        one step only if it is the signer's registered key, and verify the signature again otherwise.
        """
        index, statement = item.index, item.statement
        if statement is None:
            assert item.failure is not None
            self.fail(item.failure)
            return
        state = self.state
        try:
            driver.admit(state, index, statement, self.options.now, trusted=self.options.trusted,
                         verified=item.verified)
        except IntegrityError as e:
            self.fail(e)
            if e.check != "genesis_trust" or index != 0 or self.options.trusted is None:
                return
            try:  # an untrusted but well-formed genesis: report it, and go on verifying the rest
                driver.admit(state, index, statement, self.options.now)
            except IntegrityError:
                return
        if statement.units and self.links is not None:
            self.links.statement(index, statement,
                                 list(map(state.units.__getitem__, map(_SERIAL, statement.units))))
        if self.options.folded is not None:
            self.options.folded(index, statement)

    def statement(self, index: int, wire: bytes) -> None:
        """Check and fold one wire form at `index` in this process (the work of a one-worker chunk)."""
        items, leaves = parallel.decode_chunk(index, [wire], False, self.known_keys())
        self.chunk(items, leaves)

    def root(self, size: int) -> bytes:
        if size not in self._roots:
            self.prepare_roots([size])
        return self._roots[size]

    def prepare_roots(self, sizes: Iterable[int]) -> None:
        """The log's roots at every size asked for, in one pass over the leaves."""
        wanted = sorted({s for s in sizes if 0 <= s <= self.size and s not in self._roots})
        compact = merkle.CompactRange.empty()
        for size in wanted:
            compact = compact.extend(self.leaves.between(compact.size, size))
            self._roots[size] = compact.root()

    def check_notes(self, stored: Sequence[str], where: str) -> list[notes.ParsedNote]:
        """Stored or bundled checkpoints: a valid operator signature, and the log's root at the size."""
        operator = self.state.operator
        parsed: list[notes.ParsedNote] = []
        checked: list[tuple[str, notes.Checkpoint, notes.ParsedNote]] = []
        for text in stored:
            try:
                note = notes.parse_note(text)
                if operator is None or self.state.origin is None:
                    raise CheckpointSignatureInvalid("no operator key: the genesis did not verify")
                cp = notes.verify_operator(note, self.state.origin, operator)
            except LedgerError as e:
                self.fail(Failure("checkpoint_signature", None, f"{where} checkpoint: {e.detail}"))
                continue
            checked.append((text, cp, note))
        self.prepare_roots(cp.size for _, cp, _ in checked)
        for _, cp, note in checked:
            if cp.size > self.size:
                self.fail(RootMismatch(f"{where} checkpoint of size {cp.size} exceeds the log "
                                       f"({self.size} statements)"))
            elif self.root(cp.size) != cp.root:
                self.fail(RootMismatch(f"{where} checkpoint of size {cp.size}: root is not the log's",
                                       expected=cp.root, calculated=self.root(cp.size)))
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
            if cp.size > self.size:
                self.fail(CheckpointInconsistent(f"{name}: the log ({self.size}) is shorter than the "
                                                 f"checkpoint ({cp.size}): truncated or rolled back"))
                continue
            source = merkle.ProofSource(self.leaves)
            try:
                proof = source.consistency_proof(cp.size) if 0 < cp.size < self.size else []
                if cp.size == self.size or cp.size == 0:
                    if self.root(cp.size) != cp.root:
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
            findings += fold.timed(self.state, self.options.as_of)
        findings.sort(key=lambda f: (f.index, f.serial or "", f.code))
        intact = self.failure_count == 0
        return Report(intact=intact, compliant=intact and not findings, log_size=self.size,
                      checks=tuple(checks), failures=tuple(self.failures), findings=tuple(findings),
                      warnings=tuple(self.warnings), state=self.state)


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
        authorities = [kid for kid, k in verifier.state.keys.items() if k.authority]  # key ids, as keys show
        verifier.warnings.append("no --trust given: trusting the genesis authorities on first use ("
                                 + ", ".join(authorities) + ")")


def _uncovered_warning(verifier: Verifier, sizes: Sequence[int]) -> None:
    if verifier.size and (not sizes or max(sizes) < verifier.size):
        newest = max(sizes) if sizes else 0
        verifier.warnings.append(f"no checkpoint covers statements {newest}…{verifier.size - 1}")


def _given_notes_parse(options: Options) -> None:
    """A `--checkpoint` file that is no signed note at all is a usage error (`NotALedger`, exit 2, as for
    `cosign`), found before any work; a note that does not verify is a `checkpoint_consistency` failure."""
    for name, text in options.checkpoints:
        try:
            notes.parse_note(text)
        except NotALedger as e:
            raise NotALedger(f"{name}: {e.detail}") from None
        except LedgerError:
            pass


def verify_store(store: Store, options: Options) -> Report:
    """Verify a ledger database: statements, log indices, unit links, stored checkpoints, and that the
    store holds nothing else (`ledger.accounting`)."""
    _given_notes_parse(options)
    verifier = Verifier(store.origin, options)
    for defect in store.audit():  # a second log, or a genesis out of place: reported, and verify goes on
        verifier.fail(defect)
    if store.origin is not None:
        verifier.links = links.StoredLinks(store, store.origin)
    expected_version = 1
    with parallel.Pipeline(parallel.worker_count(options.workers, store.size())) as pipe:
        chunks = parallel.store_chunks(store)
        for versions, items, leaves in pipe.decode(chunks, stored=True):
            verifier.leaves.data += leaves
            for version, item in zip(versions, items, strict=True):
                if version != expected_version:
                    verifier.fail(LogIndexInvalid(f"log version {version} where {expected_version} was "
                                                  "expected (a gap or a reorder)", expected_version - 1))
                    # statements keep their stored position: the index is what the store says
                expected_version = version + 1
                verifier.item(item)
            if options.progress:
                options.progress(len(items))
    identical = verifier.links is not None and verifier.links.finish()
    if not identical:
        links.check_exactly(store, verifier.fail)
    accounting.account(store, verifier.state, verifier.size, identical, verifier.fail)
    _check_tree_head(store, verifier)
    stored = store.checkpoints()
    good = verifier.check_notes([note for _, _, note in stored], "stored")
    given = verifier.check_given()
    verifier.check_witnesses(good + given)
    _trust_warning(verifier, options)
    _uncovered_warning(verifier, [size for _, size, _ in stored])
    return verifier.report(_checks(options, True, bool(stored)))


def _check_tree_head(store: Store, verifier: Verifier) -> None:
    """The compact range kept with the newest log event is what writers and `checkpoint` build on."""
    size = len(verifier.leaves)
    if size == 0:
        verifier.fail(GenesisUntrusted("the log is empty: there is no ledger_opened at index 0", 0))
        return
    head = store.head()
    try:
        stored = merkle.CompactRange(size, tuple(head.range)).root() if head else b""
    except LedgerError:  # a range of the wrong shape for the size
        stored = b""
    if head is None or head.index != size - 1 or stored != verifier.root(size):
        verifier.fail(LogIndexInvalid("the stored tree head (the compact range kept with the newest log "
                                      "event) disagrees with the log", size - 1))


def verify_bundle(path: Path, options: Options, stream: BinaryIO | None = None) -> Report:
    """Verify a bundle offline: every check a database gets, but log indices and unit links."""
    _given_notes_parse(options)
    with (stream or path.open("rb")) as handle:
        try:
            reader = bundle_format.open_bundle(handle)
        except EncodingInvalid as e:  # a bundle (it names the format) with a defective header: exit 1
            verifier = Verifier(None, options)
            verifier.fail(e)
            return verifier.report(_checks(options, False, False))
        return verify_wires(reader.origin, _bundle_chunks(reader), lambda: list(reader.checkpoints()), options,
                            where="bundled", count=_statements_in(path))


def verify_wires(origin: str, chunks: Iterator[tuple[int, list[bytes], None]],
                 checkpoints: Callable[[], Sequence[str]], options: Options, *, where: str,
                 count: int | None = None, after: Callable[[Verifier], None] | None = None) -> Report:
    """Verify a log given as its wire forms in log order (a bundle's, or a service's entry bundles) and
    its checkpoints (read once the wires are): every check a database gets, but log indices and unit links.

    A defect in the source (`IntegrityError` from `chunks` or `checkpoints`) is a failure after what came
    before it; `after` may add failures of its own once the leaves are known (the served hash tiles).
    """
    verifier = Verifier(origin, options)
    notes_found: Sequence[str] = []
    try:
        with parallel.Pipeline(parallel.worker_count(options.workers, count)) as pipe:
            for _, items, leaves in pipe.decode(chunks, stored=False):
                verifier.chunk(items, leaves)
                if options.progress:
                    options.progress(len(items))
        notes_found = checkpoints()
    except IntegrityError as e:  # the source names the statement's index, None among checkpoints
        verifier.fail(e)
    if after is not None:
        after(verifier)
    if not verifier.size and not verifier.failure_count:
        verifier.fail(Failure("genesis_trust", None, f"the {where} log holds no statements: no genesis at "
                              "index 0"))
    checkpoints_seen = list(notes_found)
    good = verifier.check_notes(checkpoints_seen, where)
    given = verifier.check_given()
    verifier.check_witnesses(good + given)
    _trust_warning(verifier, options)
    sizes = []
    for text in checkpoints_seen:
        try:
            sizes.append(notes.parse_note(text).checkpoint.size)
        except LedgerError:
            continue
    _uncovered_warning(verifier, sizes)
    return verifier.report(_checks(options, False, bool(checkpoints_seen)))


def _bundle_chunks(reader: bundle_format.BundleReader) -> Iterator[tuple[int, list[bytes], None]]:
    """The bundle's statements in chunks; a defect is raised after the chunk of statements before it."""
    start = 0
    wires: list[bytes] = []
    size = 0
    try:
        for _, wire in reader.statements():
            wires.append(wire)
            size += len(wire)
            if len(wires) >= parallel.CHUNK_STATEMENTS or size >= parallel.CHUNK_BYTES:
                yield start, wires, None
                start += len(wires)
                wires, size = [], 0
    except EncodingInvalid:
        if wires:
            yield start, wires, None
        raise
    if wires:
        yield start, wires, None


def _statements_in(path: Path) -> int | None:
    """About how many statements a bundle holds (at least 200 bytes each), when its size is known."""
    try:
        return path.stat().st_size // 200
    except OSError:
        return None
