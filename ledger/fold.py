"""The one fold: (state, statement) → state, yielding DESIGN.md's compliance findings.

Materialised views, replay, `verify` and `record`'s pre-check all run `apply`, through `ledger.driver`
(which runs `rules.check` first). `apply` dispatches on the statement's kind: `FOLDS` maps each kind to
the one function that folds it. It updates `state` in place (a year is millions of unit-steps, so
copying immutable state per statement is not an option) and returns the findings the statement adds,
which it has also appended to `state.findings`. Given equal states and statements it always yields
equal results: no clock, no I/O.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable

from ledger.policy import Policy, duty_due, parse_policy
from ledger.state import (
    STAGE,
    Customer,
    DutyEntry,
    Finding,
    KeyInfo,
    Participant,
    Period,
    State,
    UnitState,
    Volume,
)
from ledger.statement import Statement, key_id

US_PER_DAY = 86_400 * 1_000_000
Serials = tuple[str, ...]
_SERIAL = operator.itemgetter(0)  # of a statement's (serial, prev) pair


def _flag(state: State, out: list[Finding], unit: UnitState | None, serial: str | None, code: str,
          index: int, detail: str) -> None:
    if unit is not None:
        if code in unit.codes:
            return
        unit.codes = unit.codes | {code}  # most units never get a finding: they share one empty set
    finding = Finding(code, serial, index, detail)
    out.append(finding)
    state.findings.append(finding)


# --- administrative statements: what follows them in the log sees what they change ----------------------


def _opened(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    data = statement.data
    state.origin = statement.origin
    state.operator = data["operator"]
    _set_policy(state, index, data["policy"])
    for public in data["authorities"]:
        state.keys[key_id(public)] = KeyInfo(public, None, authority=True)
    return ()


def _registered(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    data = statement.data
    pid = data["id"]
    state.participants[pid] = Participant(pid, data["name"], data["country"], tuple(data["roles"]), index)
    kid = key_id(data["key"])
    if kid not in state.keys:
        state.keys[kid] = KeyInfo(data["key"], pid)
    return ()


def _revoked(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    data = statement.data
    kid = key_id(data["key"])
    info = state.keys.get(kid)
    if info is None:  # only where a replay by time left the key's registration out
        info = state.keys[kid] = KeyInfo(data["key"], None)
    effective: int = data["effective"]
    if info.revoked_index is None:
        info.revoked_index, info.effective = index, effective
        _flag_signed_after(state, kid, effective, None, index, out)
    elif info.effective is None or effective < info.effective:
        # a later revocation with an earlier effect: flag what the first one did not reach
        _flag_signed_after(state, kid, effective, info.effective, index, out)
        info.effective = effective
    return ()


def _approved(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    data = statement.data
    customer = state.customers.setdefault(data["id"], Customer(data["id"]))
    customer.cap, customer.license = data["cap"], data["license"]
    customer.valid_until = data.get("valid_until")
    customer.approved, customer.suspended = True, False
    return ()


def _suspended(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    customer = state.customers.setdefault(statement.data["id"], Customer(statement.data["id"]))
    customer.suspended = True
    return ()


def _policy_issued(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    _set_policy(state, index, statement.data["policy"])
    return ()


def _set_policy(state: State, index: int, text: str) -> None:
    """A recorded policy acts on what follows it, unless a what-if policy replaces them all."""
    state.policies.append((index, text))
    state.policy = state.what_if if state.what_if is not None else parse_policy(text)


def _flag_signed_after(state: State, kid: str, effective: int, before: int | None, revoked_at: int,
                       out: list[Finding]) -> None:
    """DESIGN.md `SIGNED_AFTER_REVOCATION`: the key's statements with `effective` ≤ `at` (< `before`)."""
    for index, at, serials in state.signed.get(kid, ()):
        if at < effective or (before is not None and at >= before):
            continue
        detail = f"signed at or after the key's revocation took effect (revoked at index {revoked_at})"
        if not serials:
            _flag(state, out, None, None, "SIGNED_AFTER_REVOCATION", index, detail)
        for serial in serials:
            _flag(state, out, state.units.get(serial), serial, "SIGNED_AFTER_REVOCATION", index, detail)


# --- custody steps: one function per kind, each over the statement's units in their order -------------
#
# A shipment is a thousand units: what a statement decides for all of them (its policy tests, its
# customer) is worked out once, before the loop over its units.


def _fabricated(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    policy = state.policy
    model = statement.data["model"]
    fab = state.participant_of(statement.signer)
    bad_model = model not in policy.allowed_models
    bad_fab = fab not in policy.approved_foundries
    units, head, at = state.units, statement.hash, statement.at
    serials = tuple(map(_SERIAL, statement.units))
    for serial in serials:
        unit = units[serial] = UnitState(serial, head, at, index, "fabricated", 1, model)
        if bad_model:
            _flag(state, out, unit, serial, "PROHIBITED_MODEL", index, f"model {model} is not allowed")
        if bad_fab:
            _flag(state, out, unit, serial, "UNAPPROVED_FAB", index,
                  f"{fab or 'an unregistered signer'} is not an approved foundry")
    return serials


def _moved(state: State, index: int, statement: Statement, out: list[Finding],
           repeated: Callable[[UnitState], bool] | None = None) -> list[UnitState]:
    """Move each unit of a staged step (not `fabricated`) to the statement, flagging what the stages say
    (`repeated`: the unit already took this step, which may happen once); returns the units' records.

    After `received` only `located` (stage 6, which needs it) may follow; after a terminal step every
    step is `AFTER_TERMINAL` instead of out of order. What each kind adds is done by its own function
    afterwards, on the records returned."""
    kind = statement.kind
    stage = STAGE[kind]
    routed = stage >= 3  # a step that needs the unit shipped to the US first
    locating = kind == "located"  # needs `received`, where every other step is out of order after it
    records = list(map(state.units.__getitem__, map(_SERIAL, statement.units)))
    head, at = statement.hash, statement.at
    for unit in records:
        if unit.terminal is not None:
            _flag(state, out, unit, unit.serial, "AFTER_TERMINAL", index, f"{kind} after {unit.terminal}")
        elif unit.received is not locating or stage < unit.stage or (repeated is not None and repeated(unit)):
            _flag(state, out, unit, unit.serial, "OUT_OF_ORDER", index, f"{kind} after {unit.step}")
        if routed and not unit.shipped:
            _flag(state, out, unit, unit.serial, "NOT_ROUTED_VIA_US", index, f"{kind} without shipped_to_us")
        unit.head = head
        unit.at = at
        unit.index = index
        unit.step = kind
        if unit.stage < stage:
            unit.stage = stage
        unit.links += 1
    return records


_SHIPPED = operator.attrgetter("shipped")
_EXPORTED = operator.attrgetter("exported")
_UNIT_SERIAL = operator.attrgetter("serial")


def _serials_of(records: list[UnitState]) -> Serials:
    """The units' own serial strings (what `state.signed` keeps: not one more string per unit-step)."""
    return tuple(map(_UNIT_SERIAL, records))


def _shipped_to_us(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    records = _moved(state, index, statement, out, _SHIPPED)
    for unit in records:
        unit.shipped = True
    return _serials_of(records)


def _inspected(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    data, policy = statement.data, state.policy
    result = data["result"]
    outside = ""
    if data["country"] != policy.inspection_country:
        outside = f"inspected in {data['country']}, not {policy.inspection_country}"
    records = _moved(state, index, statement, out)
    for unit in records:
        unit.inspection = result
        if outside:
            _flag(state, out, unit, unit.serial, "INSPECTION_OUTSIDE_US", index, outside)
    return _serials_of(records)


def _duty_paid(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    underpaid, undervalued = _enter_duty(state, statement)
    lines, hts = state.policy.hts_lines, statement.data.get("hts")
    tariff = f"tariff line {hts} is not one of {', '.join(lines) or 'none'}" if (
        lines is not None and hts is not None and hts not in lines) else ""
    records = _moved(state, index, statement, out)
    for unit in records:
        unit.duty_paid = True
        if underpaid:
            _flag(state, out, unit, unit.serial, "UNDERPAID_DUTY", index, underpaid)
        if undervalued:
            _flag(state, out, unit, unit.serial, "UNDERVALUED_ENTRY", index, undervalued)
        if tariff:
            _flag(state, out, unit, unit.serial, "WRONG_TARIFF_LINE", index, tariff)
    return _serials_of(records)


def _re_exported(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    data, policy = statement.data, state.policy
    consignee: str = data["consignee"]
    customer = state.customers.get(consignee)
    in_force = customer is not None and customer.in_force(statement.at)  # unchanged within a statement
    license_ = destination = ""
    if policy.consignee_checks:
        if customer is not None and in_force and data["license"] != customer.license:
            license_ = f"licence {data['license']} is not {consignee}'s approved licence {customer.license}"
        registered = state.participants.get(consignee)
        if registered is not None and data["destination"] != registered.country:
            destination = f"shipped to {data['destination']}, {consignee} is registered in {registered.country}"
    destinations = policy.volume_destinations
    counting = destinations is not None and data["destination"] in destinations
    records = _moved(state, index, statement, out, _EXPORTED)
    for unit in records:
        serial = unit.serial
        if unit.inspection != "pass" or not unit.duty_paid:
            _before_release(state, unit, index, out, "re-exported")
        if customer is None or not in_force:
            _flag(state, out, unit, serial, "UNAPPROVED_CUSTOMER", index, f"{consignee} has no approval in force")
        elif consignee not in unit.counted:  # distinct units: re-exported twice to one customer, one
            unit.counted = (*unit.counted, consignee)
            customer.consigned += 1
            if customer.consigned > customer.cap:
                customer.over_cap += 1
                _flag(state, out, unit, serial, "CAP_EXCEEDED", index,
                      f"unit {customer.consigned} for {consignee}, cap {customer.cap}")
        if license_:
            _flag(state, out, unit, serial, "LICENSE_MISMATCH", index, license_)
        if destination:
            _flag(state, out, unit, serial, "DESTINATION_MISMATCH", index, destination)
        if counting:
            _count_export(state, index, statement.at, unit, out)
        unit.exported = True
        unit.consignee = consignee
    return _serials_of(records)


def _count_export(state: State, index: int, at: int, unit: UnitState, out: list[Finding]) -> None:
    """DESIGN.md `VOLUME_RATIO_EXCEEDED`: a re-export of `unit` to a volume destination at `at`, counted
    for its model (by its `fabricated`) in every declared period of that model that `at` falls in and
    that has not counted the unit yet; flagged where the count goes beyond the period's limit."""
    model, earlier = unit.model, unit.exports
    volume = state.volume.get(model)
    if volume is None:
        volume = state.volume[model] = Volume()
    if earlier:
        volume.again.append((unit.serial, at, earlier))
    else:
        volume.first[at] = volume.first.get(at, 0) + 1
    unit.exports = (*earlier, at)
    if not state.periods:
        return
    for period in state.periods.values():
        if (period.model != model or not period.start <= at < period.until
                or any(period.start <= e < period.until for e in earlier)):
            continue
        period.exported += 1
        limit = period.limit(state.policy)
        if limit is not None and period.exported > limit:
            _flag(state, out, unit, unit.serial, "VOLUME_RATIO_EXCEEDED", index,
                  f"unit {period.exported} of {model} exported in the period declared at index "
                  f"{period.index}, limit {limit}")


def _received(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    signer_party = state.participant_of(statement.signer)
    receiver: Customer | None = None
    if signer_party is not None:
        receiver = state.customers.get(signer_party)
        if receiver is None:
            receiver = state.customers[signer_party] = Customer(signer_party)
    records = _moved(state, index, statement, out)
    for unit in records:
        serial = unit.serial
        if unit.inspection != "pass" or not unit.duty_paid:
            _before_release(state, unit, index, out, "received")
        if not unit.exported:
            _flag(state, out, unit, serial, "SKIPPED_EXPORT", index, "received without re-export")
        elif unit.consignee != signer_party:
            _flag(state, out, unit, serial, "DIVERSION", index,
                  f"received by {signer_party}, consigned to {unit.consignee}")
        if not unit.received:
            if receiver is not None:
                receiver.received += 1
            unit.receiver = signer_party
        unit.received = True
        unit.attested_at, unit.attested_index = statement.at, index
    return _serials_of(records)


def _located(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    """Stage 6: the customer attests where the unit is (repeats); its country must be the signer's."""
    signer_party = state.participant_of(statement.signer)
    registered = state.participants.get(signer_party or "")
    country = statement.data["country"]
    mismatch = ""
    if registered is not None and country != registered.country:
        mismatch = f"located in {country}, {signer_party} is registered in {registered.country}"
    records = _moved(state, index, statement, out)
    for unit in records:
        if mismatch:
            _flag(state, out, unit, unit.serial, "LOCATION_MISMATCH", index, mismatch)
        if unit.received and unit.receiver != signer_party:
            _flag(state, out, unit, unit.serial, "DIVERSION", index,
                  f"located by {signer_party}, received by {unit.receiver}")
        unit.attested_at, unit.attested_index = statement.at, index
    return _serials_of(records)


def _ended(state: State, index: int, statement: Statement, out: list[Finding]) -> list[UnitState]:
    """Move each unit to a terminal step: no stage, never out of order or unrouted itself, but
    `AFTER_TERMINAL` on a unit whose journey already ended; the first terminal step is the unit's end."""
    kind = statement.kind
    records = list(map(state.units.__getitem__, map(_SERIAL, statement.units)))
    head, at = statement.hash, statement.at
    for unit in records:
        if unit.terminal is not None:
            _flag(state, out, unit, unit.serial, "AFTER_TERMINAL", index, f"{kind} after {unit.terminal}")
        else:
            unit.terminal = kind
        unit.head = head
        unit.at = at
        unit.index = index
        unit.step = kind
        unit.links += 1
    return records


def _destroyed(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    signer_party = state.participant_of(statement.signer)
    registered = state.participants.get(signer_party or "")
    by_customer = registered is not None and "customer" in registered.roles
    records = _ended(state, index, statement, out)
    if by_customer:
        for unit in records:
            if unit.received and unit.receiver != signer_party:
                _flag(state, out, unit, unit.serial, "DIVERSION", index,
                      f"destroyed by {signer_party}, received by {unit.receiver}")
    return _serials_of(records)


def _withdrawn(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    records = _ended(state, index, statement, out)
    for unit in records:
        if unit.exported and not unit.received:
            _flag(state, out, unit, unit.serial, "DIVERSION", index,
                  f"withdrawn after re-export to {unit.consignee}, never received")
    return _serials_of(records)


# --- declarations: a participant's statement without units -------------------------------------------


def _us_volume_reported(state: State, index: int, statement: Statement, out: list[Finding]) -> Serials:
    """The U.S. volume of a (`model`, `from`, `until`): the later declaration replaces the earlier; flagged
    (serial null) when the period is already exceeded as it is logged."""
    data = statement.data
    model, start, until = data["model"], data["from"], data["until"]
    period = state.periods.get((model, start, until))
    if period is None:
        volume = state.volume.get(model)
        exported = volume.count(start, until) if volume is not None else 0
        period = state.periods[(model, start, until)] = Period(model, start, until, data["us_units"], index,
                                                               exported)
    else:
        period.us_units, period.index = data["us_units"], index
    limit = period.limit(state.policy)
    if limit is not None and period.exported > limit:
        _flag(state, out, None, None, "VOLUME_RATIO_EXCEEDED", index,
              f"{period.exported} units of {model} exported in the period, limit {limit} "
              f"({period.us_units} to U.S. customers)")
    return ()


def _before_release(state: State, unit: UnitState, index: int, out: list[Finding], what: str) -> None:
    """The checks that re-export and receipt share: inspected, passed, duty paid."""
    serial = unit.serial
    if unit.inspection is None:
        _flag(state, out, unit, serial, "SKIPPED_INSPECTION", index, f"{what} without an inspection")
    elif unit.inspection != "pass":
        _flag(state, out, unit, serial, "FAILED_INSPECTION", index, f"{what} after a failed inspection")
    if not unit.duty_paid:
        _flag(state, out, unit, serial, "SKIPPED_DUTY", index, f"{what} without duty paid")


def _enter_duty(state: State, statement: Statement) -> tuple[str, str]:
    """Add a `duty_paid` statement to its customs entry; returns why it underpays and undervalues, or ""."""
    data, policy, count = statement.data, state.policy, len(statement.units)
    underpaid = undervalued = ""
    value: int = data["entered_value"]
    due = duty_due(policy, value)
    if data["duty"] < due:
        underpaid = f"entry {data['entry']}: duty {data['duty']} cents < {due} due"
    minimum = policy.min_unit_value_cents * count
    if value < minimum:
        undervalued = f"entry {data['entry']}: entered value {value} cents < {minimum}"
    name: str = data["entry"]
    entry = state.duty.get(name)
    if entry is None:
        entry = state.duty[name] = DutyEntry(name)
    entry.entered_value += value
    entry.duty_due += due
    entry.paid += data["duty"]
    entry.units += count
    entry.statements += 1
    return underpaid, undervalued


# What each kind does to the state: the one table the fold dispatches on. A kind without an entry
# cannot be folded (`rules.check` and the decoder refuse it first).
# Each returns the serials of the units it moved, as the state holds them.
Fold = Callable[[State, int, Statement, list[Finding]], Serials]
FOLDS: dict[str, Fold] = {
    "ledger_opened": _opened,
    "participant_registered": _registered,
    "key_revoked": _revoked,
    "customer_approved": _approved,
    "customer_suspended": _suspended,
    "policy_issued": _policy_issued,
    "fabricated": _fabricated,
    "shipped_to_us": _shipped_to_us,
    "inspected": _inspected,
    "duty_paid": _duty_paid,
    "re_exported": _re_exported,
    "received": _received,
    "located": _located,
    "destroyed": _destroyed,
    "withdrawn": _withdrawn,
    "us_volume_reported": _us_volume_reported,
}


def apply(state: State, index: int, statement: Statement) -> list[Finding]:
    """Fold one statement that passed `rules.check` into `state`; return the findings it adds."""
    out: list[Finding] = []
    serials = FOLDS[statement.kind](state, index, statement, out)
    if not serials:  # an exact copy of a statement without units, appended again, is a replay
        state.admin[statement.hash] = index
    signer = statement.signer
    signed = state.signed.get(signer)
    if signed is None:
        signed = state.signed[signer] = []
    signed.append((index, statement.at, serials))
    state.size = index + 1
    return out


def fold(statements: Iterable[tuple[int, Statement]], state: State | None = None) -> State:
    """Fold many statements (already checked) from `state` or from the empty ledger."""
    state = state if state is not None else State()
    for index, statement in statements:
        apply(state, index, statement)
    return state


def overdue(state: State, as_of: int, policy: Policy | None = None) -> list[Finding]:
    """DESIGN.md `OVERDUE`: units waiting at their latest step longer than the latest policy allows.

    Oldest first. Not part of `state.findings`: it depends on the report time, not on the log.
    """
    policy = policy or state.policy
    late: list[Finding] = []
    for unit in state.units.values():
        if unit.received or unit.terminal is not None:
            continue
        days = policy.overdue_days.get(unit.step)
        if days is None:
            continue
        waited = as_of - unit.at
        if waited > days * US_PER_DAY:
            late.append(Finding("OVERDUE", unit.serial, unit.index,
                                f"waiting at {unit.step} for {waited // US_PER_DAY} days (limit {days})"))
    late.sort(key=lambda f: (state.units[f.serial or ""].at, f.index, f.serial or ""))
    return late


def attestation_overdue(state: State, as_of: int, policy: Policy | None = None) -> list[Finding]:
    """DESIGN.md `ATTESTATION_OVERDUE`: received units whose latest `received` or `located` is older than
    the latest policy's `attestation_days` (none without that key); terminal units never. Oldest first.

    A ledger can hold a million received units, each overdue at once: the sort is on plain tuples, and
    units overdue by the same number of days share one detail text."""
    policy = policy or state.policy
    days = policy.attestation_days
    if days is None:
        return []
    latest = as_of - days * US_PER_DAY  # overdue: attested before this
    late = [(unit.attested_at, unit.attested_index, unit.serial) for unit in state.units.values()
            if unit.received and unit.terminal is None and unit.attested_at is not None
            and unit.attested_at < latest]
    late.sort()
    details: dict[int, str] = {}
    out: list[Finding] = []
    for at, index, serial in late:
        waited = (as_of - at) // US_PER_DAY
        detail = details.get(waited)
        if detail is None:
            detail = details[waited] = f"no location attested for {waited} days (limit {days})"
        out.append(Finding("ATTESTATION_OVERDUE", serial, index or 0, detail))
    return out


def timed(state: State, when: int, policy: Policy | None = None) -> list[Finding]:
    """The findings that depend on the report time, not on the log: `OVERDUE`, then `ATTESTATION_OVERDUE`."""
    return [*overdue(state, when, policy), *attestation_overdue(state, when, policy)]
