"""Units' heads as the log has them: what a writer signs on, whatever the views say.

A unit's row in the views names its head (the hash, `at` and log index of its latest statement, and its
chain length), and a writer that signs a step of the unit takes `prev`, the floor for `at` and the next
link's version from it. The views are plain tables that every PostgreSQL participant may edit (writers
need UPDATE and DELETE on them), so before a writer relies on a row it compares it with the unit's chain
in the log (`check_rows`), and refuses when they differ (`ViewsDisagree`, until `replay --rebuild`).

The log's side (`log_heads`) is read as `verify` and `links.unit_chain` accept it: the rows stored under
the unit's id must be chain links, versions 1, 2, … with the link topics, naming the unit, at increasing
log indices (a writer reads them from the link before the one its view row names on: the rest of the
chain is not what it signs on); the latest (below the log size the writer extends) must point at a log
statement that has its hash and names the unit with `prev` the hash of the link before (32 zero bytes
for the first); and,
for a writer, that statement's origin must be the ledger's and its signature must verify under its
signer's key as the writer checked it from the log (`driver.checked_authority`), not after that key's
revocation (its role and time are left to `verify`). That statement is the one the writer signs on: a
step an insider inserted under the log's and the unit's ids and hid below the views' position, which the
writer's catch-up would not check, is checked here.

It costs a read of the units' last two links (one per distinct chain length) and one of their latest
statements, for the serials a writer signs (or is asked about), never the whole log.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import msgspec

from ledger import driver
from ledger.errors import (
    Conflict,
    KeyRevoked,
    OriginMismatch,
    SignerUnknown,
    UnitLinksInvalid,
    ViewsDisagree,
)
from ledger.state import State, UnitState
from ledger.statement import ZERO_HASH, Statement, verify_signature
from ledger.store import Store
from ledger.store.codec import UNIT_TOPICS


@dataclass(frozen=True)
class Head:
    """A unit's head in the log: its latest statement's `hash`, `at` and log `index`; `links`, the length
    of its chain (the version of its latest link)."""

    serial: str
    hash: bytes
    at: int
    index: int
    links: int


class _Link(msgspec.Struct):
    """What a stored link says that `verify` compares (its `at` and write time are not read)."""

    serial: str
    index: int
    hash: bytes


_LINK = msgspec.msgpack.Decoder(_Link)


def _latest_links(serial: str, rows: list[tuple[int, str, bytes]], below: int,
                  first: int) -> tuple[_Link, _Link | None, int] | None:
    """The latest link of `serial` below log index `below`, the link before it (None for the first of
    the chain) and the version of the latest, from `rows`, the unit's stored rows from version `first`
    on; None when the unit has no link there."""
    chain: list[_Link] = []
    decode = _LINK.decode
    for version, topic, state in rows:
        link: _Link | None = None
        if version == first + len(chain) and topic == UNIT_TOPICS[version != 1]:
            with contextlib.suppress(msgspec.MsgspecError):
                link = decode(state)
        if link is None:
            raise UnitLinksInvalid(f"unit {serial}: the stored row at version {version} is not a chain link "
                                   f"(topic {topic!r:.80})", chain[-1].index if chain else None)
        if link.index >= below:  # appended by a writer that won a race: beyond the log this one extends
            break
        if link.serial != serial or (chain and link.index <= chain[-1].index):
            raise UnitLinksInvalid(f"unit {serial}: the stored row at version {version} does not link the "
                                   f"unit's next statement (index {link.index})",
                                   link.index if link.index >= 0 else None)
        chain.append(link)
    if not chain or (first > 1 and len(chain) < 2):  # a suffix must hold the link before the latest
        return None
    before = chain[-2] if len(chain) > 1 else None
    return chain[-1], before, first + len(chain) - 1


def log_heads(store: Store, serials: Collection[str], below: int, authority: State | None = None,
              since: Mapping[str, int] | None = None) -> dict[str, Head]:
    """The head of each of `serials` whose chain the log's first `below` statements hold, as the log has
    it (see the module's docstring); with `authority` (a writer's, checked from the log), the latest
    statement's signature too. Raises the `IntegrityError` of the first unit whose chain does not hold,
    at the log index concerned.

    With `since`, a unit's rows are read from that version on (1 for a unit it does not name): a writer
    that expects the head at version n reads from n - 1, not the whole chain; a unit whose chain ends
    before is left out, as one without a chain."""
    firsts: dict[int, list[str]] = {}
    for serial in serials:
        firsts.setdefault(max(1, since.get(serial, 1)) if since else 1, []).append(serial)
    latest: dict[str, tuple[_Link, _Link | None, int]] = {}
    for first, group in firsts.items():
        for serial, rows in store.units_rows(group, first).items():
            chain = _latest_links(serial, rows, below, first)
            if chain is not None:
                latest[serial] = chain
    wires = store.log_wires({link.index for link, _, _ in latest.values()})
    statements: dict[int, tuple[Statement, dict[str, bytes]]] = {}  # index -> statement, its units' prev
    heads: dict[str, Head] = {}
    for serial, (link, before, links) in latest.items():
        index = link.index
        decoded = statements.get(index)
        if decoded is None and index in wires:
            statement = driver.decode_at(wires[index], index)
            if authority is not None:
                _check_signed(statement, index, authority)
            decoded = statements[index] = statement, dict(statement.units)
        prev = before.hash if before is not None else ZERO_HASH
        if decoded is None or decoded[0].hash != link.hash or decoded[1].get(serial) != prev:
            raise UnitLinksInvalid(f"unit {serial}: its latest stored link (version {links}) does not link the "
                                   f"unit's statement at index {index}", index)
        heads[serial] = Head(serial, decoded[0].hash, decoded[0].at, index, links)
    return heads


def _check_signed(statement: Statement, index: int, authority: State) -> None:
    """The rules of the statement a writer signs on that the authority decides: origin, signer,
    revocation, signature (the role is left to `verify`: it is the role held at `index`)."""
    if authority.origin is not None and statement.origin != authority.origin:
        raise OriginMismatch(f"origin {statement.origin!r:.80} is not this ledger's", index)
    info = authority.keys.get(statement.signer)
    if info is None:
        raise SignerUnknown(f"key {statement.signer[:16]}… is not registered", index)
    if info.revoked_index is not None and info.revoked_index < index:
        raise KeyRevoked(f"key {statement.signer[:16]}… was revoked at index {info.revoked_index}", index)
    verify_signature(statement, info.public, index)


def check_rows(store: Store, rows: Mapping[str, UnitState], serials: Collection[str], below: int,
               authority: State) -> None:
    """Refuse unless the views' `rows` of `serials` (a serial without a row: the views hold no chain for
    it) are each unit's head in the log's first `below` statements: `ViewsDisagree` naming the unit, or
    the `IntegrityError` of a chain the log does not hold (`log_heads`). A row of a statement at or
    beyond `below` was saved by a writer that won a race: `Conflict`."""
    heads = log_heads(store, serials, below, authority, {s: row.links - 1 for s, row in rows.items()})
    shorter = [s for s, row in rows.items() if s not in heads and row.links > 2 and row.index < below]
    if shorter:  # the log's chain ends before the link the row names: read it whole, to say how it ends
        heads.update(log_heads(store, shorter, below, authority))
    for serial in serials:
        row, head = rows.get(serial), heads.get(serial)
        if row is not None and row.index >= below:
            raise Conflict("the views moved while this writer read them")
        if row is None and head is None:
            continue
        if row is not None and _beyond_links(store, serial, row, head):
            raise UnitLinksInvalid(f"unit {serial}: the log's statement at index {row.index} names it, but its "
                                   f"stored chain links end before it (at version {head.links if head else 0})",
                                   row.index)
        fix = "the views were edited or are damaged; run `custody replay --rebuild`"
        if head is None:
            assert row is not None
            raise ViewsDisagree(f"unit {serial}: the views give it a head ({_said(row.head, row.index, row.at)}, "
                                f"link {row.links}) but the log holds no such link of its chain: {fix}")
        if row is None:
            raise ViewsDisagree(f"unit {serial}: the views hold no chain for it but the log does (head "
                                f"{_said(head.hash, head.index, head.at)}): {fix}")
        if (row.head, row.at, row.index, row.links) != (head.hash, head.at, head.index, head.links):
            raise ViewsDisagree(f"unit {serial}: the views give its head as {_said(row.head, row.index, row.at)}, "
                                f"link {row.links}; the log as {_said(head.hash, head.index, head.at)}, link "
                                f"{head.links}: {fix}")


def _beyond_links(store: Store, serial: str, row: UnitState, head: Head | None) -> bool:
    """Whether the views' head of `serial` is a statement of the log that extends the unit's chain as its
    links have it (`head`), beyond them: the links are what is missing, not the views that are wrong."""
    if head is not None and row.index <= head.index:
        return False
    wire = store.log_wires([row.index]).get(row.index)
    statement = driver.decode_at(wire, row.index) if wire is not None else None
    return (statement is not None and statement.hash == row.head
            and dict(statement.units).get(serial) == (head.hash if head is not None else ZERO_HASH))


def _said(digest: bytes, index: int, at: int) -> str:
    return f"{digest.hex()[:16]}… at index {index}, at {at}"
