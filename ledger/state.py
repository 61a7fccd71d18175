"""The state that the one fold builds: authority (keys, participants, approvals, policy) and custody.

Plain mutable records with slots: the fold updates them in place, since a year of statements is millions
of unit-steps. Each record round-trips through a msgpack-ready list (`to_row`/`from_row`) so the
materialised views can store exactly what the fold holds, and a writer can load just the rows a batch
touches (a partial state) and fold on top of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from ledger.policy import Policy, default_policy, parse_policy

STAGE = {"fabricated": 1, "shipped_to_us": 2, "inspected": 3, "duty_paid": 3, "re_exported": 4,
         "received": 5}
# DESIGN.md "Compliance": every finding code, in the table's order (reports group findings in this order)
CODES = ("PROHIBITED_MODEL", "UNAPPROVED_FAB", "NOT_ROUTED_VIA_US", "SKIPPED_INSPECTION", "FAILED_INSPECTION",
         "INSPECTION_OUTSIDE_US", "SKIPPED_DUTY", "UNDERPAID_DUTY", "UNDERVALUED_ENTRY", "SKIPPED_EXPORT",
         "UNAPPROVED_CUSTOMER", "DIVERSION", "CAP_EXCEEDED", "OUT_OF_ORDER", "SIGNED_AFTER_REVOCATION",
         "OVERDUE")
_NO_CODES: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Finding:
    """One compliance finding: a code of DESIGN.md's table, for a unit (or none), at a log index."""

    code: str
    serial: str | None
    index: int
    detail: str

    def to_row(self) -> list[Any]:
        return [self.code, self.serial, self.index, self.detail]

    @classmethod
    def from_row(cls, row: list[Any]) -> Finding:
        return cls(row[0], row[1], row[2], row[3])


@dataclass(slots=True)
class KeyInfo:
    """A public key known to the ledger: a genesis authority's or a participant's."""

    public: bytes
    participant: str | None  # None for a genesis authority key
    authority: bool = False
    revoked_index: int | None = None
    effective: int | None = None

    def to_row(self) -> list[Any]:
        return [self.public, self.participant, self.authority, self.revoked_index, self.effective]

    @classmethod
    def from_row(cls, row: list[Any]) -> KeyInfo:
        return cls(row[0], row[1], row[2], row[3], row[4])


@dataclass(slots=True)
class Participant:
    id: str
    name: str
    country: str
    roles: tuple[str, ...]
    index: int

    def to_row(self) -> list[Any]:
        return [self.id, self.name, self.country, list(self.roles), self.index]

    @classmethod
    def from_row(cls, row: list[Any]) -> Participant:
        return cls(row[0], row[1], row[2], tuple(row[3]), row[4])


@dataclass(slots=True)
class Customer:
    """A customer's approval and its counts (DESIGN.md `CAP_EXCEEDED`, `UNAPPROVED_CUSTOMER`)."""

    id: str
    cap: int = 0
    license: str = ""
    valid_until: int | None = None
    approved: bool = False
    suspended: bool = False
    consigned: int = 0  # distinct units re-exported to it while an approval was in force
    over_cap: int = 0
    received: int = 0

    def in_force(self, at: int) -> bool:
        return (self.approved and not self.suspended
                and (self.valid_until is None or at < self.valid_until))

    def to_row(self) -> list[Any]:
        return [self.id, self.cap, self.license, self.valid_until, self.approved, self.suspended,
                self.consigned, self.over_cap, self.received]

    @classmethod
    def from_row(cls, row: list[Any]) -> Customer:
        return cls(*row)


@dataclass(slots=True)
class DutyEntry:
    """A customs entry: the sum of the `duty_paid` statements that name it."""

    entry: str
    entered_value: int = 0
    duty_due: int = 0
    paid: int = 0
    units: int = 0
    statements: int = 0

    def to_row(self) -> list[Any]:
        return [self.entry, _int_cell(self.entered_value), _int_cell(self.duty_due), _int_cell(self.paid),
                self.units, self.statements]

    @classmethod
    def from_row(cls, row: list[Any]) -> DutyEntry:
        return cls(row[0], int(row[1]), int(row[2]), int(row[3]), row[4], row[5])


# msgpack holds integers in [-2^63, 2^64 - 1]; a sum of amounts a hostile participant logged may not fit
# (writers refuse such totals, `limits.MAX_TOTAL_CENTS`, but the log may come from elsewhere): kept as
# decimal text then, so the views store and reload any sum exactly.
_INT_CELL_MIN, _INT_CELL_MAX = -(2**63), 2**64 - 1


def _int_cell(value: int) -> int | str:
    return value if _INT_CELL_MIN <= value <= _INT_CELL_MAX else str(value)


@dataclass(slots=True)
class UnitState:
    """One chip: its chain head and what its chain has shown so far."""

    serial: str
    head: bytes
    at: int
    index: int
    step: str
    stage: int = 1
    model: str = ""
    shipped: bool = False
    inspection: str | None = None  # the latest result
    duty_paid: bool = False
    exported: bool = False
    consignee: str | None = None
    # the customers whose caps this unit counts toward, and the finding codes it has had: both replaced,
    # never changed in place, so the many units that have none share one empty value
    counted: Sequence[str] = ()
    received: bool = False
    links: int = 1  # the length of its chain: the version of its aggregate
    codes: AbstractSet[str] = _NO_CODES

    def to_row(self) -> list[Any]:
        return [self.serial, self.head, self.at, self.index, self.step, self.stage, self.model,
                self.shipped, self.inspection, self.duty_paid, self.exported, self.consignee,
                list(self.counted), self.received, self.links, sorted(self.codes)]

    @classmethod
    def from_row(cls, row: list[Any]) -> UnitState:
        (serial, head, at, index, step, stage, model, shipped, inspection, duty_paid, exported, consignee,
         counted, received, links, codes) = row
        return cls(serial, head, at, index, step, stage, model, shipped, inspection, duty_paid, exported,
                   consignee, tuple(counted), received, links, frozenset(codes) if codes else _NO_CODES)


@dataclass(slots=True)
class State:
    """Everything the fold knows after some prefix of the log.

    A full state holds every unit; a partial one (a writer's) holds only the rows a batch touches,
    and `size` is still the number of statements folded into the ledger it stands for.
    """

    size: int = 0
    origin: str | None = None
    operator: bytes | None = None
    policy: Policy = field(default_factory=default_policy)
    keys: dict[str, KeyInfo] = field(default_factory=dict)
    participants: dict[str, Participant] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    units: dict[str, UnitState] = field(default_factory=dict)
    duty: dict[str, DutyEntry] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    # key id -> [(index, at, serials)] of the statements it signed: SIGNED_AFTER_REVOCATION looks back
    signed: dict[str, list[tuple[int, int, tuple[str, ...]]]] = field(default_factory=dict)
    # the log index and source of each recorded policy version, oldest first
    policies: list[tuple[int, str]] = field(default_factory=list)
    # a what-if policy (`replay --policy`): replaces every recorded one, the genesis' included; never stored
    what_if: Policy | None = None
    # hash -> log index of every administrative statement: an exact copy appended again is a replay
    admin: dict[bytes, int] = field(default_factory=dict)

    def authority_row(self) -> list[Any]:
        """The small authority part of the state, stored as one row of the views."""
        return [self.size, self.origin, self.operator, self.policy.source,
                {k: v.to_row() for k, v in self.keys.items()},
                {k: v.to_row() for k, v in self.participants.items()},
                [[i, s] for i, s in self.policies],
                [[h, i] for h, i in self.admin.items()]]

    def load_authority_row(self, row: list[Any]) -> None:
        self.size, self.origin, self.operator = row[0], row[1], row[2]
        self.policy = parse_policy(row[3])
        self.keys = {k: KeyInfo.from_row(v) for k, v in row[4].items()}
        self.participants = {k: Participant.from_row(v) for k, v in row[5].items()}
        self.policies = [(i, s) for i, s in row[6]]
        self.admin = {h: i for h, i in row[7]} if len(row) > 7 else {}

    def adopt_authority(self, other: State) -> None:
        """Take `other`'s authority part (shared, not copied): origin, operator, policy, keys,
        participants, recorded policies and the administrative statements' hashes."""
        self.origin, self.operator, self.policy = other.origin, other.operator, other.policy
        self.keys, self.participants = other.keys, other.participants
        self.policies, self.admin = other.policies, other.admin

    def participant_of(self, key_id: str) -> str | None:
        info = self.keys.get(key_id)
        return info.participant if info else None
