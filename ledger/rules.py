"""The hard rules of DESIGN.md, checked against the fold's state before a statement is applied.

Append and `verify` call the same `check`, so a statement the ledger accepted is exactly one that
verification accepts. Encoding is checked earlier, by `statement.decode`.
"""

from __future__ import annotations

import functools
from collections.abc import Collection

from ledger import small_order
from ledger.errors import (
    ChainBroken,
    EncodingInvalid,
    GenesisUntrusted,
    KeyRevoked,
    OriginMismatch,
    PolicyInvalid,
    RoleMissing,
    SignerUnknown,
    TimeInvalid,
)
from ledger.policy import parse_policy
from ledger.state import State
from ledger.statement import ADMIN_KINDS, KIND_ROLES, ZERO_HASH, Statement, key_id, verify_signature

MAX_CLOCK_SKEW_US = 5 * 60 * 1_000_000  # DESIGN.md: `at` at most 5 minutes ahead of the real clock

# The small-order test costs a few modular exponentiations; the same few keys are checked again at every
# verification of every registration, so remember the answers.
is_small_order = functools.lru_cache(maxsize=4096)(small_order.is_small_order)


_ADMIN_KINDS = frozenset(ADMIN_KINDS)
_ADMIN_CHECKED = frozenset({"participant_registered", "key_revoked", "policy_issued"})  # `_check_admin`'s


@functools.lru_cache(maxsize=64)
def _policy_problem(text: str) -> str | None:
    """Why a recorded policy text is malformed, or None; verification meets the same few texts again."""
    try:
        parse_policy(text)
    except PolicyInvalid as e:
        return e.detail
    return None


def check_policy_text(text: str, index: int) -> None:
    problem = _policy_problem(text)
    if problem is not None:
        raise EncodingInvalid(f"recorded policy is malformed: {problem}", index)


def _check_genesis(statement: Statement, index: int, trusted: Collection[bytes] | None) -> None:
    authorities: list[bytes] = statement.data["authorities"]
    if statement.signer not in {key_id(k) for k in authorities}:
        raise GenesisUntrusted("ledger_opened is not signed by one of its own authorities", index)
    for key in [*authorities, statement.data["operator"]]:
        if is_small_order(key):
            raise SignerUnknown("genesis names a key of small order", index)
    check_policy_text(statement.data["policy"], index)
    if trusted is not None:
        untrusted = [k for k in authorities if k not in trusted]
        if untrusted:
            raise GenesisUntrusted(f"genesis authority {key_id(untrusted[0])[:16]}… is not a trusted key",
                                   index)


def check_signer(state: State, statement: Statement, index: int) -> bytes:
    """Signer, role and revocation checks; returns the signer's public key."""
    info = state.keys.get(statement.signer)
    if info is None:
        raise SignerUnknown(f"key {statement.signer[:16]}… is not registered", index)
    revoked = info.revoked_index
    if revoked is not None and revoked < index:
        raise KeyRevoked(f"key {statement.signer[:16]}… was revoked at index {revoked}", index)
    kind = statement.kind
    if kind in _ADMIN_KINDS:
        if not info.authority:
            raise RoleMissing(f"{kind} needs a genesis authority key", index)
    else:
        roles = KIND_ROLES[kind]
        participant = state.participants.get(info.participant or "")
        if participant is None or roles.isdisjoint(participant.roles):
            wanted = " or ".join(repr(role) for role in sorted(roles))
            raise RoleMissing(f"participant {info.participant} lacks the role {wanted} for {kind}", index)
    return info.public


def _check_admin(state: State, statement: Statement, index: int) -> None:
    """The rules of the administrative kinds that name a key or a policy (`check` does the replay rule)."""
    data = statement.data
    if statement.kind == "participant_registered":
        key: bytes = data["key"]
        if is_small_order(key):
            raise SignerUnknown("the registered key is of small order", index)
        owner = state.keys.get(key_id(key))
        if owner is not None and (owner.authority or owner.participant != data["id"]):
            holder = owner.participant or "an authority"
            raise SignerUnknown(f"key {key_id(key)[:16]}… already belongs to {holder}", index)
    elif statement.kind == "key_revoked":
        if key_id(data["key"]) not in state.keys:
            raise SignerUnknown(f"revoked key {key_id(data['key'])[:16]}… is not known", index)
    elif statement.kind == "policy_issued":
        check_policy_text(data["policy"], index)


def check_units(state: State, statement: Statement, index: int) -> None:
    """Chain and time rules for each unit of a step."""
    units = state.units
    if statement.kind == "fabricated":
        for serial, prev in statement.units:
            if serial in units:
                raise ChainBroken(f"unit {serial} was already fabricated at index {units[serial].index}", index)
            if prev != ZERO_HASH:
                raise ChainBroken(f"unit {serial}: a new chain's prev must be zero", index)
        return
    at = statement.at
    for serial, prev in statement.units:
        try:
            unit = units[serial]
        except KeyError:
            raise ChainBroken(f"unit {serial} has no chain (no fabricated)", index) from None
        if prev != unit.head:
            raise ChainBroken(f"unit {serial}: prev is not its head (index {unit.index})", index)
        if at < unit.at:
            raise TimeInvalid(f"unit {serial}: at is earlier than its previous statement's", index)


def signature_done(public: bytes | None, verified: bytes | None, index: int) -> bool:
    """True when a worker's libsodium accepted the signature under `verified`, the very key `check`
    would verify it under (`public`, the signer's registered key): checking it again would repeat it."""
    return verified is not None and public is not None and index > 0 and public == verified


def check(state: State, statement: Statement, index: int, now_us: int, *,
          trusted: Collection[bytes] | None = None, verified: bytes | None = None) -> None:
    """Raise the first hard rule `statement` breaks at log `index`, or return if it may be appended.

    `state.origin` is the ledger's origin (from the store or the bundle header) when known.
    `verified` is the key a worker process's libsodium accepted the signature under: the signature step
    is skipped if `signature_done` says it is the very key this step would use; every other rule still
    runs. `trusted` (from `--trust`) is checked last, so a caller may still apply a genesis that is
    well-formed but not trusted.
    """
    origin = state.origin
    if origin is not None and statement.origin != origin:
        raise OriginMismatch(f"origin {statement.origin!r:.80} is not this ledger's", index)
    kind = statement.kind
    if index == 0:
        if kind != "ledger_opened":
            raise GenesisUntrusted(f"index 0 is {kind}, not ledger_opened", index)
        _check_genesis(statement, index, None)
        public = next(k for k in statement.data["authorities"] if key_id(k) == statement.signer)
    elif kind == "ledger_opened":
        raise GenesisUntrusted("a second ledger_opened", index)
    else:
        public = check_signer(state, statement, index)
    if not signature_done(public, verified, index):
        verify_signature(statement, public, index)
    if index:
        earlier = state.admin.get(statement.hash)
        if earlier is not None:
            raise ChainBroken(f"{kind} replayed: the same statement is already at index {earlier}", index)
        if kind in _ADMIN_CHECKED:
            _check_admin(state, statement, index)
    if index and statement.units:
        check_units(state, statement, index)
    if statement.at > now_us + MAX_CLOCK_SKEW_US:
        raise TimeInvalid("at is more than 5 minutes in the future", index)
    if index == 0 and trusted is not None:
        _check_genesis(statement, index, trusted)
