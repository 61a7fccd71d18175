"""The compliance policy: a TOML document (TOML 1.0, read with `tomllib`), recorded as its source text.

DESIGN.md "Compliance (projections)": the policy names the allowed models, approved foundries, the duty
rate, the minimum unit value, the inspection country and how long a unit may wait at each step. Every key
of DESIGN.md's default block is required and no other key is allowed, so a typo cannot silently relax a
rule. The default ships with the package as `default_policy.toml`.
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ledger.errors import BadInput, PolicyInvalid
from ledger.limits import MAX_POLICY_FILE_BYTES, read_file
from ledger.statement import COUNTRY_PATTERN, STEPS, valid_id
from ledger.values import quoted

# DESIGN.md: a unit can be overdue at every step but the last (`received` ends its journey).
OVERDUE_STEPS: tuple[str, ...] = STEPS[:-1]
# TOML 1.0 "Integer": 64-bit signed; a value that cannot be represented losslessly is an error.
_TOML_INT_LIMIT = 2**63
BASIS_POINTS = 10_000  # duty_rate_bp is in hundredths of a percent

# Key → kind of value, in DESIGN.md's order (which is also the order problems are reported in).
_KEYS: dict[str, str] = {
    "name": "name",
    "duty_rate_bp": "int",
    "allowed_models": "strings",
    "approved_foundries": "ids",
    "min_unit_value_cents": "int",
    "inspection_country": "country",
    "overdue_days": "days",
}
# Optional keys (DESIGN.md): a rule whose key is absent is not checked, so older policies read the same.
_OPTIONAL_KEYS: dict[str, str] = {
    "consignee_checks": "bool",
    "hts_lines": "strings",
    "volume_ratio_bp": "int",
    "volume_destinations": "countries",
    "attestation_days": "int",
}
_TOGETHER = ("volume_ratio_bp", "volume_destinations")  # both or neither


@dataclass(frozen=True)
class Policy:
    """A parsed policy. `source` is the exact TOML text; the other fields are what it says."""

    name: str
    duty_rate_bp: int
    allowed_models: tuple[str, ...]
    approved_foundries: tuple[str, ...]
    min_unit_value_cents: int
    inspection_country: str
    overdue_days: Mapping[str, int]
    source: str
    consignee_checks: bool = False  # LICENSE_MISMATCH and DESTINATION_MISMATCH
    hts_lines: tuple[str, ...] | None = None  # WRONG_TARIFF_LINE; None: not checked
    volume_ratio_bp: int | None = None  # VOLUME_RATIO_EXCEEDED, with volume_destinations
    volume_destinations: tuple[str, ...] | None = None
    attestation_days: int | None = None  # ATTESTATION_OVERDUE

    def __post_init__(self) -> None:
        # Freeze whatever the caller passed, so a Policy built by hand is as immutable as a parsed one.
        object.__setattr__(self, "allowed_models", tuple(self.allowed_models))
        object.__setattr__(self, "approved_foundries", tuple(self.approved_foundries))
        object.__setattr__(self, "overdue_days", types.MappingProxyType(dict(self.overdue_days)))
        for name in ("hts_lines", "volume_destinations"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))

    @property
    def volume_checked(self) -> bool:
        """Whether the 50 % volume rule applies (both of its keys are present)."""
        return self.volume_ratio_bp is not None and self.volume_destinations is not None

    def __hash__(self) -> int:
        return hash((self.name, self.duty_rate_bp, self.allowed_models, self.approved_foundries,
                     self.min_unit_value_cents, self.inspection_country,
                     tuple(sorted(self.overdue_days.items())), self.source, self.consignee_checks,
                     self.hts_lines, self.volume_ratio_bp, self.volume_destinations, self.attestation_days))


def duty_due(policy: Policy, entered_value_cents: int) -> int:
    """DESIGN.md `UNDERPAID_DUTY`: ⌈entered_value × rate_bp / 10000⌉ in cents, in integers (no floats)."""
    return -(-entered_value_cents * policy.duty_rate_bp // BASIS_POINTS)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _check_int(where: str, key: str, value: object) -> int:
    # bool is a subclass of int: `duty_rate_bp = true` must not read as 1.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyInvalid(f"{where}: {key} must be a non-negative integer")
    if value >= _TOML_INT_LIMIT:
        raise PolicyInvalid(f"{where}: {key} is too large (TOML integers are 64-bit)")
    return value


def _check_strings(where: str, key: str, value: object, *, ids: bool) -> tuple[str, ...]:
    what = "a list of participant ids" if ids else "a list of non-empty strings"
    if not isinstance(value, list):
        raise PolicyInvalid(f"{where}: {key} must be {what}")
    seen: set[str] = set()
    for item in value:
        if not isinstance(item, str) or not item or (ids and not valid_id(item)):
            raise PolicyInvalid(f"{where}: {key} must be {what} ({item!r:.60} is not)")
        if item in seen:
            raise PolicyInvalid(f"{where}: {key} lists {quoted(item)} twice")
        seen.add(item)
    return tuple(value)


def _check_days(where: str, value: object) -> dict[str, int]:
    if not isinstance(value, dict):
        raise PolicyInvalid(f"{where}: overdue_days must be a table of days per step")
    for step in value:
        if step not in OVERDUE_STEPS:
            raise PolicyInvalid(f"{where}: unknown key {quoted('overdue_days.' + step)}")
    for step in OVERDUE_STEPS:
        if step not in value:
            raise PolicyInvalid(f"{where}: missing key 'overdue_days.{step}'")
    return {step: _check_int(where, f"overdue_days.{step}", value[step]) for step in OVERDUE_STEPS}


def _check(where: str, key: str, kind: str, value: object) -> Any:
    if kind == "int":
        return _check_int(where, key, value)
    if kind == "name":
        if not isinstance(value, str) or not value.strip():
            raise PolicyInvalid(f"{where}: {key} must be a non-empty string")
        return value
    if kind in ("strings", "ids"):
        return _check_strings(where, key, value, ids=kind == "ids")
    if kind == "country":
        if not isinstance(value, str) or COUNTRY_PATTERN.fullmatch(value) is None:
            raise PolicyInvalid(f'{where}: {key} must be two capital letters (ISO 3166 alpha-2), e.g. "US"')
        return value
    if kind == "days":
        return _check_days(where, value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise PolicyInvalid(f"{where}: {key} must be true or false")
        return value
    if kind == "countries":
        countries = _check_strings(where, key, value, ids=False)
        for country in countries:
            if COUNTRY_PATTERN.fullmatch(country) is None:
                raise PolicyInvalid(f"{where}: {key} must list ISO 3166 alpha-2 codes ({country!r:.20} is not)")
        return countries
    raise AssertionError(kind)  # pragma: no cover - a typo in _KEYS


def _parse(text: str, where: str) -> Policy:
    try:
        document = tomllib.loads(text)
    # TOMLDecodeError is a ValueError; a plain ValueError comes from integers of more than 4300 digits and
    # RecursionError from arrays nested a thousand deep.
    except (ValueError, RecursionError) as e:
        raise PolicyInvalid(f"{where}: not valid TOML: {_one_line(str(e)) or type(e).__name__}") from e
    for key in document:
        if key not in _KEYS and key not in _OPTIONAL_KEYS:
            raise PolicyInvalid(f"{where}: unknown key {quoted(key)}")
    for key in _KEYS:
        if key not in document:
            raise PolicyInvalid(f"{where}: missing key {key!r}")
    if (_TOGETHER[0] in document) != (_TOGETHER[1] in document):
        raise PolicyInvalid(f"{where}: {_TOGETHER[0]} and {_TOGETHER[1]} go together (both or neither)")
    values = {key: _check(where, key, kind, document[key]) for key, kind in _KEYS.items()}
    values.update({key: _check(where, key, kind, document[key]) for key, kind in _OPTIONAL_KEYS.items()
                   if key in document})
    return Policy(**values, source=text)


def parse_policy(text: str) -> Policy:
    """Parse and check a policy's TOML source; raise `PolicyInvalid` with one line naming the problem."""
    return _parse(text, "policy")


def load_policy_file(path: Path) -> Policy:
    """Read a policy file (UTF-8 TOML); any problem, the file's own included, is `PolicyInvalid`."""
    where = f"policy file {path}"
    try:
        raw = read_file(path, MAX_POLICY_FILE_BYTES, "policy file")
    except BadInput as e:
        raise PolicyInvalid(e.detail) from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyInvalid(f"{where}: not UTF-8 (byte {e.start})") from e
    return _parse(text, where)


def _read_default() -> str:
    # Bytes, then decode: text mode would translate newlines, and the source is recorded byte for byte.
    return resources.files("ledger").joinpath("default_policy.toml").read_bytes().decode("utf-8")


DEFAULT_POLICY_TEXT: str = _read_default()
_DEFAULT = parse_policy(DEFAULT_POLICY_TEXT)


def default_policy() -> Policy:
    """The policy in force until a `policy_issued` says otherwise (DESIGN.md's default block)."""
    return _DEFAULT
