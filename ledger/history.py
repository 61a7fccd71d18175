"""One unit's history: its chain links, each resolved to the statement in the log."""

from __future__ import annotations

from dataclasses import dataclass

from ledger import views
from ledger.errors import NotFound
from ledger.state import Finding
from ledger.statement import Statement, decode
from ledger.store import Store


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
    """The statements of `serial` in chain order (those with `at` ≤ `until`, if given)."""
    links = store.unit_links(serial)
    if not links:
        raise NotFound(f"unknown serial {serial!r}: no unit with that serial in {store.url}")
    state = views.current(store, now_us)
    steps: list[Step] = []
    for link in links:
        event = next(iter(store.log(link["index"], link["index"] + 1)), None)
        if event is None:
            continue
        statement = decode(event.wire)
        if until is not None and statement.at > until:
            break
        steps.append(Step(event.index, statement, state.participant_of(statement.signer)))
    if not steps:
        raise NotFound(f"serial {serial!r} has no statement at or before that time")
    last = steps[-1].index
    findings = tuple(f for f in state.findings if f.serial == serial and f.index <= last)
    return History(serial, tuple(steps), findings)
