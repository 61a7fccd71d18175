"""One unit's history: its chain links, each resolved to the statement in the log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import views
from ledger.errors import NotFound
from ledger.links import unit_chain
from ledger.state import Finding
from ledger.statement import Statement
from ledger.store import Store
from ledger.values import format_time


@dataclass(frozen=True)
class Step:
    """One statement of a unit's chain, with the participant that signed it (as of that index)."""

    index: int
    statement: Statement
    participant: str | None


@dataclass(frozen=True)
class History:
    serial: str
    steps: tuple[Step, ...]
    findings: tuple[Finding, ...]


def unit_history(store: Store, serial: str, *, until: int | None = None, now_us: int = 0) -> History:
    """The statements of `serial` in chain order (those with `at` ≤ `until`, if given), read through its
    stored links as `verify` accepts them (`links.unit_chain`: anything else is `UnitLinksInvalid`)."""
    chain = unit_chain(store, serial)
    if not chain:
        raise NotFound(f"unknown serial {serial!r}: no unit with that serial in {store.url}")
    state = views.current(store, now_us)
    steps: list[Step] = []
    for index, statement in chain:
        if until is not None and statement.at > until:
            break
        steps.append(Step(index, statement, state.participant_of(statement.signer)))
    if not steps:
        raise NotFound(f"serial {serial!r} has no statement at or before that time")
    last = steps[-1].index
    findings = tuple(f for f in state.findings if f.serial == serial and f.index <= last)
    return History(serial, tuple(steps), findings)


def hexify(value: Any) -> Any:
    """Statement data as DESIGN.md shows it in JSON: bytes become hex, everything else as stored."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: hexify(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hexify(v) for v in value]
    return value


def step_json(step: Step) -> dict[str, Any]:
    """One step of a unit's history as `history --json` gives it (and `verify-proof --json`)."""
    s = step.statement
    return {"index": step.index, "kind": s.kind, "at": format_time(s.at), "signer": s.signer,
            "participant": step.participant, "hash": s.hash.hex(), "data": hexify(dict(s.data))}


def document(history: History) -> dict[str, Any]:
    """`history --json` (and the service's `GET /v1/units/{serial}`): serial, steps, findings."""
    findings = [{"code": f.code, "serial": f.serial, "index": f.index, "detail": f.detail}
                for f in history.findings]
    return {"serial": history.serial, "steps": [step_json(s) for s in history.steps], "findings": findings}
