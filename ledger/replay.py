"""Replay: the one fold over a prefix of the log, in memory, under the recorded policies or a what-if one.

DESIGN.md "Command line": `--until TIME` folds, in log order, the statements with `at` ≤ TIME and reports
as of TIME; `--upto INDEX` folds the log prefix 0…INDEX. With a policy given (what-if), that policy
replaces every recorded one, the genesis' included. Replay reads the log and nothing else, and writes
nothing: the views are neither read nor changed, so a regulator's "what if" leaves no trace.

Every statement is re-checked against the hard rules before it is folded (`driver`), as the tail of
`views.current` is, so a replay never folds what an append would have refused. The rules see the whole log in log order
(authority state is the fold of what precedes a statement in the log, whatever its `at`); the time filter
of `--until` only decides which statements the compliance state folds.

The log is read and decoded as `verify` reads it (`parallel.decoded_log`): worker processes verify the
signatures while this process checks every other rule and folds, in log order. A signature no worker
verified under the signer's registered key is verified again here, so one worker or many, the same
statements are accepted and the same state results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger import driver, fold, parallel
from ledger.errors import BadInput
from ledger.policy import Policy
from ledger.state import State
from ledger.store import Store


@dataclass(frozen=True)
class Replay:
    """The state folded by a replay and what it covered."""

    state: State
    as_of: int  # the report time: TIME for --until, else the given clock
    log_size: int  # statements in the log
    folded: int  # statements folded into `state`
    last_index: int | None  # the log index of the last statement folded
    until: int | None
    upto: int | None
    what_if: Policy | None


def replay(store: Store, *, now_us: int, until: int | None = None, upto: int | None = None,
           policy: Policy | None = None, progress: Callable[[int], None] | None = None,
           workers: int | None = None) -> Replay:
    """Fold the log prefix (`upto`) or the statements with `at` ≤ `until` into a fresh state.

    `workers` processes verify signatures (default: every core, one for a small log). Raises `BadInput`
    for both bounds at once or an index beyond the log, and the `IntegrityError` of the first statement
    that breaks a hard rule.
    """
    if until is not None and upto is not None:
        raise BadInput("give --until or --upto, not both")
    size = store.size()
    if upto is not None and not 0 <= upto < size:
        indices = f"0…{size - 1}" if size else "none: the log is empty"
        raise BadInput(f"--upto {upto} is beyond the log of {size} statements (indices {indices})")
    stop = upto + 1 if upto is not None else size
    state = State(origin=store.origin, what_if=policy)
    if policy is not None:
        state.policy = policy
    # With --until the rules need the log as it was logged; the compliance state sees only the filtered.
    checker = State(origin=store.origin) if until is not None else state
    folded = 0
    last: int | None = None
    clock = driver.reader_clock(now_us)
    log = parallel.decoded_log(store, workers)
    try:
        for item in log:
            index = item.index
            if index >= stop:
                break
            statement = driver.admit_item(checker, item, clock)
            if until is None or statement.at <= until:
                if checker is not state:  # checked on the whole log; folded here as of the time
                    fold.apply(state, index, statement)
                folded += 1
                last = index
            if progress is not None:
                progress(1)
    finally:
        log.close()  # stop the workers now, not whenever the generator is collected
    return Replay(state=state, as_of=until if until is not None else now_us, log_size=size, folded=folded,
                  last_index=last, until=until, upto=upto, what_if=policy)
