"""Exceptions with meaning: one root, families that map to DESIGN.md's exit statuses.

`IntegrityError` and its subclasses carry the check name of DESIGN.md's "Hard rules" table and the log
index concerned; they are both what `verify` reports and what an append refuses with. The CLI maps each
family to an exit status in one place (`commands/_errors.py`).
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every error the library raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


# --- integrity (exit 1) -------------------------------------------------------------------------------


class IntegrityError(LedgerError):
    """A statement, chain, log or checkpoint breaks a hard rule; names the check and the log index."""

    check = "encoding"

    def __init__(self, detail: str, index: int | None = None) -> None:
        super().__init__(detail)
        self.index = index

    def at_index(self, index: int | None) -> IntegrityError:
        """Set the log index where it was not known when raised; returns self for `raise e.at_index(i)`."""
        if self.index is None:
            self.index = index
        return self

    def __str__(self) -> str:
        where = f" at index {self.index}" if self.index is not None else ""
        return f"{self.check}{where}: {self.detail}"


class EncodingInvalid(IntegrityError):
    check = "encoding"


class OriginMismatch(IntegrityError):
    check = "origin"


class GenesisUntrusted(IntegrityError):
    check = "genesis_trust"


class SignatureInvalid(IntegrityError):
    check = "signature"


class SignerUnknown(IntegrityError):
    check = "signer"


class RoleMissing(IntegrityError):
    check = "role"


class KeyRevoked(IntegrityError):
    check = "revocation"


class ChainBroken(IntegrityError):
    check = "chain"


class TimeInvalid(IntegrityError):
    check = "time"


class LogIndexInvalid(IntegrityError):
    check = "log_index"


class UnitLinksInvalid(IntegrityError):
    check = "unit_links"


class CheckpointSignatureInvalid(IntegrityError):
    check = "checkpoint_signature"


class RootMismatch(IntegrityError):
    check = "checkpoint_root"

    def __init__(self, detail: str, expected: bytes = b"", calculated: bytes = b"",
                 index: int | None = None) -> None:
        super().__init__(detail, index)
        self.expected = expected
        self.calculated = calculated


class CheckpointInconsistent(IntegrityError):
    check = "checkpoint_consistency"


class CosignatureMissing(IntegrityError):
    check = "cosignature"


class BundleRejected(IntegrityError):
    """A bundle to import did not verify; carries the check and index of its first failure."""

    def __init__(self, check: str, detail: str, index: int | None, failures: int, name: str) -> None:
        more = f" and {failures - 1} more failure(s)" if failures > 1 else ""
        super().__init__(f"{detail} ({name} does not verify{more}; nothing imported)", index)
        self.check = check


class ProofInvalid(IntegrityError):
    """A Merkle inclusion or consistency proof does not verify."""

    check = "proof"


# --- refusals (exit 1) --------------------------------------------------------------------------------


class Refused(LedgerError):
    """The ledger declined to record something that is well-formed (a business-rule pre-check, a fork)."""


class ViolationsFound(Refused):
    """`record`'s pre-check: the step would add findings; `some_clean` when some of its units would not."""

    def __init__(self, detail: str, findings: tuple[object, ...] = (), *, some_clean: bool = True) -> None:
        super().__init__(detail)
        self.findings = findings
        self.some_clean = some_clean


class OperatorKeyRefused(Refused):
    """The log operator's key registered to a participant: it signs checkpoints only (DESIGN.md "Who may
    sign"); the service answers it with the check `signer`."""

    check = "signer"


class ViewsDisagree(Refused):
    """A unit's row in the views disagrees with its chain in the log (edited, or left by a bug): a writer
    signs on no head but the log's, so it refuses until `custody replay --rebuild` (exit 1; the service
    answers 503 `unavailable`, as for a store it cannot use)."""


class Conflict(Refused):
    """Another writer appended first; re-read the heads and try again."""


class WitnessRefused(Refused):
    """A c2sp.org/tlog-witness witness will not cosign a submitted checkpoint; `status` is the spec's code."""

    status = 400  # tlog-witness "add-checkpoint": a malformed request, or an old size beyond the checkpoint


class OriginUnknown(WitnessRefused):
    status = 404  # tlog-witness: the checkpoint's origin is not a log the witness is configured for


class LogSignatureMissing(WitnessRefused):
    status = 403  # tlog-witness: no signature verifies against a key the witness trusts for the origin


class OldSizeConflict(WitnessRefused):
    """The old size is not the size the witness cosigned last; `latest` is that size (tlog-witness 409)."""

    status = 409

    def __init__(self, detail: str, latest: int) -> None:
        super().__init__(detail)
        self.latest = latest


class ConsistencyRejected(WitnessRefused):
    status = 422  # tlog-witness: a consistency proof that does not verify, or another root at the same size


# --- bad input (exit 2) -------------------------------------------------------------------------------


class BadInput(LedgerError):
    """A file, value or argument the user gave is not usable; nothing was changed."""


class KeyFileError(BadInput):
    """A key file that is not a usable key, has unsafe permissions, or whose passphrase is wrong."""


class PolicyInvalid(BadInput):
    """A policy TOML with unknown keys, wrong types or bad values."""


class NotFound(BadInput):
    """An unknown serial, participant or file."""


class NotALedger(BadInput):
    """A path or file that is not a ledger, bundle, checkpoint or proof at all."""


# --- the store (exit 2) -------------------------------------------------------------------------------


class StoreError(LedgerError):
    """The database is unreadable, unreachable or not writable; raised `from` the driver's error."""


class ServiceUnavailable(StoreError):
    """A ledger service or a witness over HTTP did not answer, or answered that it cannot now (5xx)."""


# --- the machine (exit 2) -----------------------------------------------------------------------------


class WorkerLost(LedgerError):
    """A worker process verifying signatures stopped before it answered (killed, or out of memory)."""
