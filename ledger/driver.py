"""The fold driver: each statement decoded, checked against the hard rules, then folded, in log order.

DESIGN.md: "One pure function folds statements into state and findings; the materialised views, replay,
verify and `record`'s pre-check all use it." This is the one place that runs it on what a log holds:
`statement.decode`, `rules.check` against the state the statements before it fold to, the log index
put on whatever fails, then `fold.apply`. A statement that breaks a rule changes nothing.

Writers check `at` against their own clock (`now_us`); readers, who fold what others appended, against
none (`reader_clock`): each statement was checked against its appender's clock when it was logged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator

from ledger import fold, merkle, rules
from ledger.errors import EncodingInvalid, IntegrityError
from ledger.parallel import Item, stored_wire
from ledger.state import Finding, State
from ledger.statement import Statement, decode
from ledger.store import Store

# what a writer adds to the failure that makes it refuse to extend a log
NOT_VERIFIED = "the log this writer would extend does not verify (run `custody verify`)"

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


def checked_authority(store: Store, stop: int, now_us: int) -> State:
    """The authority part of the state (origin, keys, participants, revocations, policies) as of log
    index `stop`, folded from the log's statements without units, each checked against the hard rules
    (its signature too): what a writer relies on for signer, role and revocation, where a view row that
    a participant may edit is not to be trusted.

    Custody steps are not folded (their units are left out of the state): the rules for a statement
    without units read only the authority part, and the database finds those statements' rows through
    an index it keeps on every insert (`Store.log_states_without_units`), so the steps' rows are not
    read; a candidate is decoded and folded only if it has no units indeed. Raises the `IntegrityError`
    of the first such statement that breaks a rule, or that does not decode. A process remembers what it
    checked of a store and reads only the log beyond it the next time (stored log events are never
    changed, only added), provided the log still holds the very statement it checked last."""
    start, state = _remembered(store, stop)
    clock = reader_clock(now_us)
    for version, stored in store.log_states_without_units(start, chunk=SCAN_CHUNK):
        index = version - 1
        if index >= stop:
            break
        wire = stored_wire(stored)
        if wire is None:
            raise EncodingInvalid("the stored log event cannot be decoded", index)
        statement = decode_at(wire, index)
        if not statement.units:
            admit(state, index, statement, clock)
    if stop:
        last = _leaf_at(store, stop - 1)
        if last is not None:
            if len(_CHECKED) >= REMEMBERED_STORES and store.url not in _CHECKED:
                _CHECKED.clear()
            _CHECKED[store.url] = (stop, last, _copy(state))
    state.size = stop
    return state


REMEMBERED_STORES = 16  # stores a process remembers the checked authority of (a service opens one)
SCAN_CHUNK = 50  # stored events of statements without units per read (a policy may be large): little memory
# store URL -> (log size checked, the leaf hash of its last statement, the authority state as of that size)
_CHECKED: dict[str, tuple[int, bytes, State]] = {}


def _remembered(store: Store, stop: int) -> tuple[int, State]:
    """Where to start checking, and the authority checked up to there (a copy, for the caller to change)."""
    known = _CHECKED.get(store.url)
    if known is not None:
        size, leaf, state = known
        if 0 < size <= stop and _leaf_at(store, size - 1) == leaf:
            return size, _copy(state)
    return 0, State(origin=store.origin)


def _leaf_at(store: Store, index: int) -> bytes | None:
    for event in store.log(index, index + 1):
        return merkle.leaf_hash(event.wire)
    return None


def _copy(state: State) -> State:
    """A copy of an authority state that folding more into cannot change (the policy is immutable)."""
    return State(size=state.size, origin=state.origin, operator=state.operator, policy=state.policy,
                 keys={k: dataclasses.replace(v) for k, v in state.keys.items()},
                 participants={k: dataclasses.replace(v) for k, v in state.participants.items()},
                 customers={k: dataclasses.replace(v) for k, v in state.customers.items()},
                 findings=list(state.findings), signed={k: list(v) for k, v in state.signed.items()},
                 policies=list(state.policies), what_if=state.what_if, admin=dict(state.admin))
