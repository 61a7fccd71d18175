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

from ledger.policy import BASIS_POINTS, Policy, default_policy, parse_policy

# DESIGN.md "Compliance": the stages of the custody steps; `destroyed` and `withdrawn` (terminal) have none
STAGE = {"fabricated": 1, "shipped_to_us": 2, "inspected": 3, "duty_paid": 3, "re_exported": 4,
         "received": 5, "located": 6}
# DESIGN.md "Compliance": every finding code, in the table's order (reports group findings in this order)
CODES = ("PROHIBITED_MODEL", "UNAPPROVED_FAB", "NOT_ROUTED_VIA_US", "SKIPPED_INSPECTION", "FAILED_INSPECTION",
         "INSPECTION_OUTSIDE_US", "SKIPPED_DUTY", "UNDERPAID_DUTY", "UNDERVALUED_ENTRY", "SKIPPED_EXPORT",
         "UNAPPROVED_CUSTOMER", "DIVERSION", "CAP_EXCEEDED", "OUT_OF_ORDER", "LICENSE_MISMATCH",
         "DESTINATION_MISMATCH", "LOCATION_MISMATCH", "AFTER_TERMINAL", "WRONG_TARIFF_LINE",
         "VOLUME_RATIO_EXCEEDED", "ATTESTATION_OVERDUE", "SIGNED_AFTER_REVOCATION", "OVERDUE")
# The layout of the stored view rows: a store whose views an older version wrote is rebuilt (writers) or
# folded from the log (readers), since its unit rows lack what the fold now keeps (`views.stale`).
VIEWS_VERSION = 2
_V1_UNIT_ROW = 16  # the fields of a unit row of version 1
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
    terminal: str | None = None  # the kind of its first `destroyed` or `withdrawn`: its journey's end
    receiver: str | None = None  # the participant that signed its first `received`
    attested_at: int | None = None  # its latest `received` or `located` (ATTESTATION_OVERDUE)
    attested_index: int | None = None
    exports: tuple[int, ...] = ()  # the `at` of each re-export counted toward the volume rule

    def to_row(self) -> list[Any]:
        return [self.serial, self.head, self.at, self.index, self.step, self.stage, self.model,
                self.shipped, self.inspection, self.duty_paid, self.exported, self.consignee,
                list(self.counted), self.received, self.links, sorted(self.codes), self.terminal,
                self.receiver, self.attested_at, self.attested_index, list(self.exports)]

    @classmethod
    def from_row(cls, row: list[Any]) -> UnitState:
        if len(row) == _V1_UNIT_ROW:  # written before VIEWS_VERSION 2: `views.stale` says to fold again
            row = [*row, None, None, None, None, []]
        (serial, head, at, index, step, stage, model, shipped, inspection, duty_paid, exported, consignee,
         counted, received, links, codes, terminal, receiver, attested_at, attested_index, exports) = row
        return cls(serial, head, at, index, step, stage, model, shipped, inspection, duty_paid, exported,
                   consignee, tuple(counted), received, links, frozenset(codes) if codes else _NO_CODES,
                   terminal, receiver, attested_at, attested_index, tuple(exports))


@dataclass(slots=True)
class Period:
    """A volume period (DESIGN.md `VOLUME_RATIO_EXCEEDED`): the latest `us_volume_reported` of its
    (`model`, `start`, `until`), and the units of that model counted as exported in [`start`, `until`)."""

    model: str
    start: int  # the declaration's `from`
    until: int
    us_units: int
    index: int  # the latest declaration's
    exported: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        return self.model, self.start, self.until

    def limit(self, policy: Policy) -> int | None:
        """⌊us_units × volume_ratio_bp / 10000⌋, or None under a policy without the volume keys."""
        if policy.volume_ratio_bp is None or policy.volume_destinations is None:
            return None
        return self.us_units * policy.volume_ratio_bp // BASIS_POINTS

    def to_row(self) -> list[Any]:
        return [self.model, self.start, self.until, self.us_units, self.index, self.exported]

    @classmethod
    def from_row(cls, row: list[Any]) -> Period:
        return cls(*row)


@dataclass(slots=True)
class Volume:
    """What the volume rule counts, per model: how many units were first counted at each re-export time
    (`first`: at → units), and the rarer later counted re-exports of a unit already counted once
    (`again`: (serial, at, the unit's earlier counted times)), so a period declared afterwards can be
    counted exactly, distinct units only."""

    first: dict[int, int] = field(default_factory=dict)
    again: list[tuple[str, int, tuple[int, ...]]] = field(default_factory=list)

    def count(self, start: int, until: int) -> int:
        """Distinct units counted at a re-export with `at` in [start, until)."""
        total = sum(n for at, n in self.first.items() if start <= at < until)
        more = {serial for serial, at, earlier in self.again
                if start <= at < until and not any(start <= e < until for e in earlier)}
        return total + len(more)

    def to_row(self) -> list[Any]:
        return [[[at, n] for at, n in self.first.items()], [[s, at, list(e)] for s, at, e in self.again]]

    @classmethod
    def from_row(cls, row: list[Any]) -> Volume:
        return cls({at: n for at, n in row[0]}, [(s, at, tuple(e)) for s, at, e in row[1]])


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
    # the volume rule: the declared periods by (model, from, until), and what it counts per model
    periods: dict[tuple[str, int, int], Period] = field(default_factory=dict)
    volume: dict[str, Volume] = field(default_factory=dict)

    def authority_row(self) -> list[Any]:
        """The small authority part of the state, stored as one row of the views."""
        return [self.size, self.origin, self.operator, self.policy.source,
                {k: v.to_row() for k, v in self.keys.items()},
                {k: v.to_row() for k, v in self.participants.items()},
                [[i, s] for i, s in self.policies],
                [[h, i] for h, i in self.admin.items()],
                VIEWS_VERSION,
                [p.to_row() for p in self.periods.values()],
                [[m, v.to_row()] for m, v in self.volume.items()]]

    def load_authority_row(self, row: list[Any]) -> None:
        self.size, self.origin, self.operator = row[0], row[1], row[2]
        self.policy = parse_policy(row[3])
        self.keys = {k: KeyInfo.from_row(v) for k, v in row[4].items()}
        self.participants = {k: Participant.from_row(v) for k, v in row[5].items()}
        self.policies = [(i, s) for i, s in row[6]]
        self.admin = {h: i for h, i in row[7]} if len(row) > 7 else {}
        self.load_volume_row(row)

    def load_volume_row(self, row: list[Any]) -> None:
        """The volume rule's part of a stored authority row: compliance state, not authority (a writer
        takes its authority from the log, these counts from the views, as it takes the units)."""
        if len(row) > 10:
            self.periods = {p.key: p for p in map(Period.from_row, row[9])}
            self.volume = {m: Volume.from_row(v) for m, v in row[10]}

    @staticmethod
    def row_version(row: list[Any]) -> int:
        """The `VIEWS_VERSION` an authority row was written with (1: before there was one)."""
        return int(row[8]) if len(row) > 8 else 1

    def adopt_authority(self, other: State) -> None:
        """Take `other`'s authority part (shared, not copied): origin, operator, policy, keys,
        participants, recorded policies and the administrative statements' hashes."""
        self.origin, self.operator, self.policy = other.origin, other.operator, other.policy
        self.keys, self.participants = other.keys, other.participants
        self.policies, self.admin = other.policies, other.admin

    def participant_of(self, key_id: str) -> str | None:
        info = self.keys.get(key_id)
        return info.participant if info else None
