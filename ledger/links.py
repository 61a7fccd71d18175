"""Unit links: each unit's stored chain links must be exactly the log's statements that name it, in order.

A writer stores a statement's unit links right after its log event, in the statement's unit order, in
the same transaction (`append.Batch`), so an untouched database holds its unit links, in row order,
exactly in the order the fold meets them. `StoredLinks` walks the stored rows in that order beside the
fold and compares each with the link the fold expects: (unit id, version, serial, index, statement
hash). That costs one row read and one comparison per link, and no hashing.

The walk only answers "identical, in order" or "something differs". On any difference (a row missing,
extra, out of order, undecodable, under another unit's id) verification runs `check_exactly`, which
compares each unit's chain as the log has it with its stored links, whatever their order, and names the
units that differ. A database whose links are all right but stored in another order passes there too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import msgspec

from ledger.errors import IntegrityError, UnitLinksInvalid
from ledger.parallel import stored_wire
from ledger.state import UnitState
from ledger.statement import ZERO_HASH, Statement, decode
from ledger.store import Store
from ledger.store.codec import UNIT_TOPICS, decode_state, unit_hex, unit_id

RANGE_ROWS = 25_000  # row ids per read of stored links: bounded memory, few queries
UNIT_IDS = 1 << 18  # unit ids kept for units met lately (about 40 MB at most)


def id_ranges(bound: int, step: int) -> list[tuple[int | None, int | None]]:
    """Ranges of row ids covering every row: [None, step), [step, 2·step), …, [k·step, None)."""
    cuts = list(range(step, bound, step))
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def _rows(store: Store) -> Iterator[tuple[Any, int, bytes]]:
    for low, high in id_ranges(store.event_id_bound(), RANGE_ROWS):
        yield from store.unit_link_rows(low, high)


class _Link(msgspec.Struct):
    """What a stored link's state must say (its other fields, such as the write time, are not compared)."""

    serial: str
    index: int
    hash: bytes


_LINK = msgspec.msgpack.Decoder(_Link)


class StoredLinks:
    """The stored unit links, in row order, compared one by one with the links the fold gives."""

    def __init__(self, store: Store, origin: str) -> None:
        self._rows = _rows(store)
        self._origin = origin
        self._ids: dict[str, str] = {}  # serial -> unit id, for the units met lately (UNIT_IDS at most)
        self.identical = True  # every link so far was the next stored row

    def _unit_id(self, serial: str) -> str:
        """The unit id of `serial`, hashed and kept: a unit's steps tend to follow each other within a few
        thousand units, so the ids of the latest units are kept (`_ids`) rather than hashed again."""
        ids = self._ids
        if len(ids) >= UNIT_IDS:
            ids.clear()
        found = ids[serial] = unit_hex(self._origin, serial)
        return found

    def statement(self, index: int, statement: Statement, records: Sequence[UnitState]) -> None:
        """The links of the statement at `index`, folded: `records` are its units' records, in the
        statement's order, each at its new chain version, which is the unit's chain length."""
        if not self.identical:
            return
        rows, ids, digest = self._rows, self._ids, statement.hash
        for unit in records:
            serial = unit.serial
            row = next(rows, None)
            try:
                if row is None:
                    raise ValueError("no row")
                uid, stored_version, state = row
                link = _LINK.decode(state)
            except Exception:  # msgspec's errors: a missing or undecodable row differs from the log's
                self.identical = False
                return
            if (stored_version != unit.links or link.index != index or link.hash != digest
                    or link.serial != serial or uid != (ids.get(serial) or self._unit_id(serial))):
                self.identical = False
                return

    def finish(self) -> bool:
        """Whether the stored links were exactly the fold's, in order, and no more."""
        if self.identical and next(self._rows, None) is not None:
            self.identical = False
        return self.identical


# --- the exact comparison, unit by unit, when the walk found a difference -------------------------------


def _link_digest(digest: bytes, index: int, statement_hash: bytes) -> bytes:
    return hashlib.sha256(digest + index.to_bytes(8, "big") + statement_hash).digest()


def _decoded_log(store: Store) -> Iterator[tuple[int, Statement]]:
    """(position, statement) of every stored log event that decodes, in log order, read as verification
    reads them (`parallel.stored_wire`)."""
    for position, (_, state) in enumerate(store.log_states(0)):
        wire = stored_wire(state)
        try:
            statement = decode(wire) if wire is not None else None
        except IntegrityError:  # verification reports it in its place
            continue
        if statement is not None:
            yield position, statement


def _log_links(store: Store) -> dict[str, tuple[int, bytes]]:
    """Each unit's chain as the log has it, as a digest per serial: the exact side of the comparison.

    Positions are those the verification gave the statements (their order in the stored log).
    """
    links: dict[str, tuple[int, bytes]] = {}
    for index, statement in _decoded_log(store):
        for serial in statement.serials:
            count, digest = links.get(serial, (0, b""))
            links[serial] = (count + 1, _link_digest(digest, index, statement.hash))
    return links


def _stored_links(store: Store, fail: Callable[[IntegrityError], None] | None
                  ) -> Iterator[tuple[object, int, dict[str, object]]]:
    """Every stored unit link as (unit id, version, state), in row order; one that does not decode is
    reported (when `fail` is given) and skipped."""
    for originator, version, blob in _rows(store):
        state: object
        try:
            state = decode_state(blob)
        except Exception:  # msgpack raises a handful of unrelated types for bad input
            state = None
        if not isinstance(state, dict):
            if fail is not None:
                fail(UnitLinksInvalid(f"a stored unit link (version {version}) does not decode"))
            continue
        yield originator, version, state


def _expected_links(store: Store, serials: Sequence[str]) -> dict[str, list[tuple[int, bytes]]]:
    """(index, hash) of the log's statements naming each of `serials`, in one pass over the log."""
    wanted = set(serials)
    out: dict[str, list[tuple[int, bytes]]] = {}
    if not wanted:
        return out
    for index, statement in _decoded_log(store):
        for serial in statement.serials:
            if serial in wanted:
                out.setdefault(serial, []).append((index, statement.hash))
    return out


def check_exactly(store: Store, fail: Callable[[IntegrityError], None]) -> None:
    """Compare each unit's stored chain links with the log's statements that name it, in chain order,
    whatever the order of the rows; `fail` each unit that differs, naming the first index that does.

    A first pass, in row order, finds the units whose links may differ (digests of their chains); a
    second reads just those units' links, sorted by version, and compares them with the log's."""
    origin = store.origin or ""
    expected_links = _log_links(store)
    seen: dict[str, tuple[int, bytes]] = {}
    bad: set[str] = set()
    for originator, version, state in _stored_links(store, fail):
        serial = state.get("serial")
        if not isinstance(serial, str) or unit_id(origin, serial).hex != originator:
            index = state.get("index")
            fail(UnitLinksInvalid(f"a unit link names serial {serial!r:.40} under another unit's id",
                                  index if isinstance(index, int) else None))
            continue
        count, digest = seen.get(serial, (0, b""))
        if version != count + 1:
            bad.add(serial)
        index, hash_ = state.get("index"), state.get("hash")
        if not isinstance(index, int) or not isinstance(hash_, bytes):
            bad.add(serial)
            continue
        seen[serial] = (count + 1, _link_digest(digest, index, hash_))
    differing = sorted(s for s in set(seen) | set(expected_links)
                       if s in bad or seen.get(s) != expected_links.get(s))
    expected_of = _expected_links(store, differing)
    stored_of: dict[str, list[tuple[int, object, object]]] = {}
    wanted = set(differing)
    for originator, version, state in _stored_links(store, None):
        serial = state.get("serial")
        if serial in wanted and unit_id(origin, serial).hex == originator:
            stored_of.setdefault(serial, []).append((version, state.get("index"), state.get("hash")))
    for serial in differing:
        expected = expected_of.get(serial, [])
        rows = sorted(stored_of.get(serial, []), key=lambda r: r[0])
        stored = [(index, hash_) for _, index, hash_ in rows]
        if stored == expected and [version for version, _, _ in rows] == list(range(1, len(rows) + 1)):
            continue  # the right links, stored out of row order
        at = next((e[0] for e, s in zip(expected, stored, strict=False) if e != s),
                  expected[min(len(expected), len(stored))][0] if len(expected) > len(stored)
                  else stored[len(expected)][0] if len(stored) > len(expected) else None)
        fail(UnitLinksInvalid(f"unit {serial}: stored chain links disagree with the log",
                              at if isinstance(at, int) else None))


# --- one unit's chain, for readers (`history`, `prove`) --------------------------------------------------


def unit_chain(store: Store, serial: str) -> list[tuple[int, Statement]]:
    """The statements of `serial`'s chain, oldest first, read through its stored links and accepted only
    as `verify` would accept them; [] for a unit the store does not hold.

    Every row stored under the unit's id must be a chain link: versions 1, 2, … with the link topics,
    naming this serial, each pointing at a log statement whose hash it holds, that names this unit and
    whose `prev` is the hash of the link before (32 zero bytes for the first). Anything else, an extra
    row of another topic, a link that points at another unit's step or that does not decode, is
    `UnitLinksInvalid` (exit 1): readers never show a step that is not the unit's.
    """
    chain: list[tuple[int, Statement]] = []
    previous = ZERO_HASH
    for version, topic, state in store.unit_rows(serial):
        where = f"unit {serial}: the stored row at version {version}"
        if version != len(chain) + 1 or topic != UNIT_TOPICS[version != 1]:
            raise UnitLinksInvalid(f"{where} is not a chain link (topic {topic!r:.80})",
                                   chain[-1][0] if chain else None)
        try:
            link = _LINK.decode(state)
        except Exception:  # msgspec's errors: not a link
            raise UnitLinksInvalid(f"{where} does not decode as a chain link",
                                   chain[-1][0] if chain else None) from None
        event = next(iter(store.log(link.index, link.index + 1)), None) if link.index >= 0 else None
        statement = decode(event.wire) if event is not None else None
        if (link.serial != serial or statement is None or statement.hash != link.hash
                or dict(statement.units).get(serial) != previous or (chain and link.index <= chain[-1][0])):
            raise UnitLinksInvalid(f"{where} does not link the unit's statement at index {link.index}",
                                   link.index if event is not None else None)
        chain.append((link.index, statement))
        previous = statement.hash
    return chain
