"""Every stored row accounted for (STYLE §12): the store holds one ledger, and nothing else.

`verify` checks each statement, each unit link and each checkpoint it reads; this module checks that
those are all the rows there are. The rows of a ledger are the log's events (under the log's id, with
the log topics, `Store.log_states`), the units' chain links (the link topics, under each unit's id,
compared with the fold by `ledger.links`) and the operator's checkpoints (under the checkpoints' id, with
the checkpoint topics). When the links matched the fold exactly, one `count(*)` settles it: the three
sets are disjoint and their sizes add up to the table's, or some row is none of them. Only then (or when
the links differed) are the rows walked, by row id, and each stray row named by its position: the row id
(SQLite's rowid, PostgreSQL's notification id), which an insider may choose but not share with another.

Check names (DESIGN's table): a row under a unit's id that is not a chain link fails `unit_links`; every
other stray row (a second log, a row under the log's id that is not a log event, rows of no aggregate of
the ledger) fails `log_index`, the check of the store's own bookkeeping. Rows with the link topics are
left to `ledger.links`, which compares each with the log.
"""

from __future__ import annotations

from collections.abc import Callable

from ledger.errors import IntegrityError, LogIndexInvalid, UnitLinksInvalid
from ledger.links import id_ranges
from ledger.state import State
from ledger.store import Store
from ledger.store.codec import CHECKPOINT_TOPICS, LOG_TOPICS, UNIT_TOPICS, checkpoints_id, unit_hex

RANGE_ROWS = 50_000  # row ids per read of the walk: bounded memory, few queries


def account(store: Store, state: State, log_rows: int, links_identical: bool,
            fail: Callable[[IntegrityError], None]) -> None:
    """Fail each stored row that is not part of the ledger, naming its position.

    `log_rows`: the log events verification read; `links_identical`: whether the stored links were
    exactly the fold's (then they number the units' chain lengths together); `state`: the fold's.
    """
    origin = store.origin
    if origin is None or store.log_hex is None:
        return  # an empty store, or one without a log: verification has said so
    checkpoint_rows = len(store.checkpoints())
    if links_identical:
        link_rows = sum(unit.links for unit in state.units.values())
        if store.row_count() == log_rows + link_rows + checkpoint_rows:
            return
    _walk(store, state, origin, fail)


def _walk(store: Store, state: State, origin: str, fail: Callable[[IntegrityError], None]) -> None:
    log_hex = store.log_hex
    notes_hex = checkpoints_id(origin).hex
    units: dict[str, str] | None = None  # unit id → serial, made when a row needs it
    low, high = store.row_id_bounds()
    for start, stop in id_ranges(high - low, RANGE_ROWS):
        rows = store.row_keys(None if start is None else low + start, None if stop is None else low + stop)
        for position, aggregate, version, topic in rows:
            if topic in UNIT_TOPICS:
                continue  # a chain link or not, `ledger.links` compares it with the log
            where = f"stored row {position} (aggregate {aggregate}, version {version}, topic {topic!r:.80})"
            if aggregate == log_hex:
                if topic != LOG_TOPICS[version != 1]:
                    fail(LogIndexInvalid(f"{where}: under the log's id, not a log event", version - 1))
                continue
            if aggregate == notes_hex:
                if topic != CHECKPOINT_TOPICS[version != 1]:
                    fail(LogIndexInvalid(f"{where}: under the checkpoints' id, not a checkpoint"))
                continue
            if topic in LOG_TOPICS:
                fail(LogIndexInvalid(f"{where}: a log event outside the ledger's log (a second log)"))
                continue
            if units is None:
                units = {unit_hex(origin, serial): serial for serial in state.units}
            serial = units.get(aggregate)
            if serial is not None:
                fail(UnitLinksInvalid(f"{where}: under unit {serial}'s id, not a chain link"))
            else:
                fail(LogIndexInvalid(f"{where}: not part of the ledger"))
