"""The fold driver: each statement decoded, checked against the hard rules, then folded, in log order.

DESIGN.md: "One pure function folds statements into state and findings; the materialised views, replay,
verify and `record`'s pre-check all use it." This is the one place that runs it on what a log holds:
`statement.decode`, `rules.check` against the state the statements before it fold to, the log index
put on whatever fails, then `fold.apply`. A statement that breaks a rule changes nothing.

Writers check `at` against their own clock (`now_us`); readers, who fold what others appended, against
none (`reader_clock`): each statement was checked against its appender's clock when it was logged.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from ledger import fold, rules
from ledger.errors import IntegrityError
from ledger.parallel import Item
from ledger.state import Finding, State
from ledger.statement import Statement, decode
from ledger.store import Store

# Readers check `at` against no clock: the limit is this far beyond theirs (about eleven and a half days),
# far enough that no honest appender's clock differs by as much, near enough to stay an integer of the log.
NO_CLOCK_US = 10**12


def reader_clock(now_us: int) -> int:
    """The clock a reader checks `at` against: none to speak of (see `NO_CLOCK_US`)."""
    return now_us + NO_CLOCK_US


def decode_at(wire: bytes, index: int) -> Statement:
    """`statement.decode`, its error naming log `index`."""
    try:
        return decode(wire)
    except IntegrityError as e:
        raise e.at_index(index) from None


def admit(state: State, index: int, statement: Statement, now_us: int, *,
          trusted: Collection[bytes] | None = None, verified: bytes | None = None) -> list[Finding]:
    """Check `statement` as log entry `index` on `state`, then fold it in; return the findings it adds.

    Raises the `IntegrityError` of the first hard rule it breaks, at `index`, and leaves `state` as it
    was. `trusted` and `verified` are `rules.check`'s."""
    try:
        rules.check(state, statement, index, now_us, trusted=trusted, verified=verified)
    except IntegrityError as e:
        raise e.at_index(index) from None
    return fold.apply(state, index, statement)


def admit_item(state: State, item: Item, now_us: int) -> Statement:
    """`admit` for an item of the verification pipeline (`ledger.parallel`): raises why it did not
    decode, else checks it (skipping the signature a worker verified under the signer's key) and folds it."""
    statement = item.statement
    if statement is None:
        assert item.failure is not None
        raise item.failure
    admit(state, item.index, statement, now_us, verified=item.verified)
    return statement


def admit_log(store: Store, state: State, now_us: int) -> Iterator[tuple[int, Statement]]:
    """Admit, in this process, every stored statement beyond `state.size` into `state`; yields each
    (index, statement) once it is folded. For short tails: a whole log goes through `ledger.parallel`."""
    for event in store.log(state.size):
        statement = decode_at(event.wire, event.index)
        admit(state, event.index, statement, now_us)
        yield event.index, statement
