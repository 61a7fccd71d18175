"""Reports computed from a fold's `State`: compliance, duty, customers, units, and the replay summary.

DESIGN.md "Compliance (projections)" and "JSON": `report compliance --json` is exactly `as_of`,
`log_size`, `findings` (`{code, serial, index, detail}`) and `counts` by code. Every report is one
`Report`: the JSON document and the CSV table, both ready to print (times RFC 3339 `Z`, money in integer
cents in fields ending `_cents`). `OVERDUE` is computed here, as of the report time, never stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ledger import fold, views
from ledger import replay as replaying
from ledger.errors import BadInput
from ledger.policy import Policy
from ledger.state import CODES, Customer, DutyEntry, Finding, Period, State
from ledger.statement import CUSTODY_STEPS
from ledger.store import Store
from ledger.values import MICROS_PER_DAY, format_time

_CODE_ORDER = {code: i for i, code in enumerate(CODES)}


@dataclass(frozen=True)
class Report:
    """One report: its `--json` document and its `--csv` table."""

    name: str
    as_of: int
    log_size: int
    document: dict[str, Any]
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]


def findings_as_of(state: State, as_of: int) -> list[Finding]:
    """Every finding of the log plus `OVERDUE` and `ATTESTATION_OVERDUE` as of `as_of`, grouped by code
    (DESIGN's order), then index."""
    return in_report_order([*state.findings, *fold.timed(state, as_of)])


def in_report_order(findings: Iterable[Finding]) -> list[Finding]:
    """Findings grouped by code (DESIGN's order), then by index and serial; the sort is stable, so the same
    findings in any order that keeps those of equal code, index and serial in theirs come out the same."""
    found = list(findings)
    found.sort(key=lambda f: (_CODE_ORDER.get(f.code, len(CODES)), f.index, f.serial or ""))
    return found


def counts(findings: Sequence[Finding]) -> dict[str, int]:
    """Findings per code, in DESIGN's order; codes without findings are left out."""
    seen = Counter(f.code for f in findings)
    return {code: seen[code] for code in sorted(seen, key=lambda c: _CODE_ORDER.get(c, len(CODES)))}


def finding_json(f: Finding) -> dict[str, Any]:
    return {"code": f.code, "serial": f.serial, "index": f.index, "detail": f.detail}


def compliance(state: State, as_of: int, log_size: int | None = None, *,
               found: Sequence[Finding] | None = None) -> Report:
    """Every finding, grouped by code, with counts. `found`: `findings_as_of(state, as_of)` if the caller
    has it already (the visual report takes them from its `verify`, which gathers the same findings)."""
    size = state.size if log_size is None else log_size
    if found is None:
        found = findings_as_of(state, as_of)
    document = {"as_of": format_time(as_of), "log_size": size, "findings": [finding_json(f) for f in found],
                "counts": counts(found)}
    return from_document("compliance", as_of, document)


def _entry_json(d: DutyEntry) -> dict[str, Any]:
    return {"entry": d.entry, "statements": d.statements, "units": d.units,
            "entered_value_cents": d.entered_value, "duty_due_cents": d.duty_due, "paid_cents": d.paid,
            "shortfall_cents": shortfall(d)}


def shortfall(d: DutyEntry) -> int:
    """What an entry still owes; an overpaid entry owes nothing and offsets no other."""
    return max(d.duty_due - d.paid, 0)


def duty_totals(state: State) -> dict[str, int]:
    entries = state.duty.values()
    return {"entries": len(state.duty), "units": sum(d.units for d in entries),
            "entered_value_cents": sum(d.entered_value for d in entries),
            "duty_due_cents": sum(d.duty_due for d in entries), "paid_cents": sum(d.paid for d in entries),
            "shortfall_cents": sum(shortfall(d) for d in entries)}


def duty(state: State, as_of: int, log_size: int | None = None) -> Report:
    """Per customs entry and in total: entered value, duty due, paid, shortfall."""
    size = state.size if log_size is None else log_size
    entries = [_entry_json(state.duty[e]) for e in sorted(state.duty)]
    total = duty_totals(state)
    document = {"as_of": format_time(as_of), "log_size": size, "entries": entries, "total": total}
    return from_document("duty", as_of, document)


def customer_status(c: Customer, as_of: int) -> str:
    if not c.approved:
        return "not approved"
    if c.suspended:
        return "suspended"
    if c.valid_until is not None and as_of >= c.valid_until:
        return "expired"
    return "approved"


def customer_json(c: Customer, as_of: int) -> dict[str, Any]:
    return {"id": c.id, "status": customer_status(c, as_of), "license": c.license,
            "valid_until": format_time(c.valid_until) if c.valid_until is not None else None,
            "cap": c.cap, "consigned": c.consigned, "received": c.received,
            "remaining": max(c.cap - c.consigned, 0) if c.approved else 0, "over_cap": c.over_cap}


def customers(state: State, as_of: int, log_size: int | None = None) -> Report:
    """Per customer: cap, consigned (toward the cap), received, remaining, over the cap."""
    size = state.size if log_size is None else log_size
    listed = [customer_json(state.customers[c], as_of) for c in sorted(state.customers)]
    document = {"as_of": format_time(as_of), "log_size": size, "customers": listed}
    return from_document("customers", as_of, document)


def units_by_step(state: State) -> dict[str, int]:
    """Units per step, every custody step listed: under its terminal step if it has one (DESIGN.md
    "`report units` counts each unit under its terminal step if it has one, else under its latest step")."""
    seen = Counter(u.terminal or u.step for u in state.units.values())
    return {step: seen[step] for step in CUSTODY_STEPS}


def overdue_json(state: State, as_of: int) -> list[dict[str, Any]]:
    out = []
    for f in fold.overdue(state, as_of):
        unit = state.units[f.serial or ""]
        out.append({"serial": unit.serial, "step": unit.step, "index": unit.index,
                    "since": format_time(unit.at), "days_waiting": (as_of - unit.at) // MICROS_PER_DAY})
    return out


def units(state: State, as_of: int, log_size: int | None = None) -> Report:
    """Counts per current step, and the overdue units (unaccounted for), oldest first."""
    size = state.size if log_size is None else log_size
    steps = units_by_step(state)
    late = overdue_json(state, as_of)
    document = {"as_of": format_time(as_of), "log_size": size, "total": len(state.units), "steps": steps,
                "overdue": late}
    return from_document("units", as_of, document)


def from_document(name: str, as_of: int, document: dict[str, Any]) -> Report:
    """A report from its `--json` document (built here, or served by `GET /v1/reports/NAME`): the CSV
    table is derived from the document alone, so it reads the same either way."""
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    if name == "compliance":
        columns = ("code", "serial", "index", "detail")
        rows = [(f["code"], f["serial"], f["index"], f["detail"]) for f in document["findings"]]
    elif name == "duty":
        columns = ("row", "entry", "statements", "units", "entered_value_cents", "duty_due_cents",
                   "paid_cents", "shortfall_cents")
        entries, total = document["entries"], document["total"]
        rows = [("entry", e["entry"], e["statements"], e["units"], e["entered_value_cents"],
                 e["duty_due_cents"], e["paid_cents"], e["shortfall_cents"]) for e in entries]
        rows.append(("total", "", sum(e["statements"] for e in entries), total["units"],
                     total["entered_value_cents"], total["duty_due_cents"], total["paid_cents"],
                     total["shortfall_cents"]))
    elif name == "customers":
        columns = ("id", "status", "license", "valid_until", "cap", "consigned", "received", "remaining",
                   "over_cap")
        rows = [tuple(c[k] if c[k] is not None else "" for k in columns) for c in document["customers"]]
    elif name == "units":
        columns = ("row", "step", "count", "serial", "index", "since", "days_waiting")
        rows = [("step", step, count, "", "", "", "") for step, count in document["steps"].items()]
        rows += [("overdue", o["step"], "", o["serial"], o["index"], o["since"], o["days_waiting"])
                 for o in document["overdue"]]
    elif name == "volume":
        columns = ("model", "from", "until", "us_units", "limit", "exported", "over", "index")
        rows = [tuple(p[k] if p[k] is not None else "" for k in columns) for p in document["periods"]]
    else:
        raise BadInput(f"unknown report {name!r:.40}")
    return Report(name, as_of, int(document["log_size"]), document, columns, tuple(rows))


def period_json(period: Period, policy: Policy) -> dict[str, Any]:
    limit = period.limit(policy)
    return {"model": period.model, "from": format_time(period.start), "until": format_time(period.until),
            "us_units": period.us_units, "limit": limit, "exported": period.exported,
            "over": max(0, period.exported - limit) if limit is not None else None, "index": period.index}


def volume(state: State, as_of: int, log_size: int | None = None) -> Report:
    """DESIGN.md `report volume`: each declared period (the latest declaration of its model, from and
    until), the units exported in it and the limit under the latest policy, ascending by from, then model."""
    size = state.size if log_size is None else log_size
    periods = sorted(state.periods.values(), key=lambda p: (p.start, p.model, p.until))
    listed = [period_json(p, state.policy) for p in periods]
    document = {"as_of": format_time(as_of), "log_size": size, "periods": listed}
    return from_document("volume", as_of, document)


REPORTS: dict[str, Callable[[State, int, int | None], Report]] = {
    "compliance": compliance, "duty": duty, "customers": customers, "units": units, "volume": volume}


def check_name(name: str) -> str:
    """The report's name, or `BadInput` naming the known ones."""
    if name not in REPORTS:
        raise BadInput(f"unknown report {name!r:.40}: use {', '.join(REPORTS)}")
    return name


def build(name: str, state: State, as_of: int, log_size: int | None = None) -> Report:
    """The report called `name` (compliance, duty, customers, units, volume) of `state` as of `as_of`."""
    return REPORTS[check_name(name)](state, as_of, log_size)


def summary(state: State, as_of: int, *, log_size: int, folded: int, last_index: int | None,
            policy_name: str, what_if: bool) -> dict[str, Any]:
    """The replay summary: what was folded, units per step, findings by code, duty totals, customers."""
    found = findings_as_of(state, as_of)
    return {
        "as_of": format_time(as_of),
        "log_size": log_size,
        "folded": folded,
        "last_index": last_index,
        "policy": {"name": policy_name, "what_if": what_if},
        "units": {"total": len(state.units), "steps": units_by_step(state)},
        "findings": {"total": len(found), "counts": counts(found)},
        "duty": duty_totals(state),
        "customers": [customer_json(state.customers[c], as_of) for c in sorted(state.customers)],
    }


def of_store(store: Store, name: str, *, until: int | None, now_us: int) -> Report:
    """Report `name` on a store: as of now from the views and the log beyond them, else a replay to `until`."""
    check_name(name)
    return build(name, *state_of_store(store, until=until, now_us=now_us))


def state_of_store(store: Store, *, until: int | None, now_us: int) -> tuple[State, int, int]:
    """What every report of a store reads: the state, the report time and the log size. As of now, the
    views and the log beyond them; with `until`, a replay of the statements with `at` ≤ `until`."""
    if until is None:
        state = views.current(store, now_us)
        return state, now_us, state.size
    result = replaying.replay(store, now_us=now_us, until=until)
    return result.state, until, result.folded


def replay_summary(store: Store, *, now_us: int, until: int | None = None, upto: int | None = None,
                   policy: Policy | None = None, progress: Callable[[int], None] | None = None,
                   workers: int | None = None) -> dict[str, Any]:
    """`replay`: fold the log (or a prefix, or under a what-if policy) in memory and summarise it."""
    result = replaying.replay(store, now_us=now_us, until=until, upto=upto, policy=policy, progress=progress,
                              workers=workers)
    return summary(result.state, result.as_of, log_size=result.log_size, folded=result.folded,
                   last_index=result.last_index, policy_name=result.state.policy.name, what_if=policy is not None)


def rebuild_summary(store: Store, *, now_us: int, progress: Callable[[int], None] | None = None,
                    workers: int | None = None) -> dict[str, Any]:
    """`replay --rebuild`: rebuild the stored views from the whole log, then summarise them."""
    state = views.rebuild(store, now_us, progress, workers)
    return summary(state, now_us, log_size=store.size(), folded=state.size,
                   last_index=state.size - 1 if state.size else None, policy_name=state.policy.name,
                   what_if=False)
