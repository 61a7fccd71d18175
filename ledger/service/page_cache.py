"""`GET /`'s page, built once for a state of the store and served again while nothing was written.

Building the page verifies the whole log (seconds at 100,000 units), so a page is kept per `until` and
served again as long as the store's key is the same: the log's size and the largest row id of the events
table. Every write adds rows there (a statement is a log event and its unit links; a checkpoint, or a
cosignature added to one, is a new checkpoint version), so a page is rebuilt once the log grew or a
checkpoint came, never for a reader. Reading the key is two indexed queries, not a read of the log.

A page as of now also ages: `OVERDUE` and `ATTESTATION_OVERDUE` depend on the time it was made (the page
says when), so one older than `MAX_AGE_S` is made again even if nothing was written.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ledger.store import Store

MAX_AGE_S = 60.0  # a page is made again after this long, even if the store has not changed
PAGES = 4  # pages kept (one per `until` asked for lately): about 8 MB each at 100,000 units

Build = Callable[[Store, int | None], str]


@dataclass(frozen=True)
class _Kept:
    key: tuple[int, int]  # (log size, largest event row id) when it was built
    made: float  # time.monotonic() when it was built
    page: bytes


class PageCache:
    """The latest pages built by `build(store, until)`, one per `until`. One page is built at a time: a
    request that comes while its page is being built waits for it rather than building it again."""

    def __init__(self, build: Build) -> None:
        self._build = build
        self._kept: OrderedDict[int | None, _Kept] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # pages built so far

    def page(self, store: Store, until: int | None) -> bytes:
        """The page for `store` as of `until` (None: now), built if the store changed since the kept one."""
        with self._lock:
            key = (store.size(), store.event_id_bound())
            kept = self._kept.get(until)
            if kept is not None and kept.key == key and time.monotonic() - kept.made < MAX_AGE_S:
                self._kept.move_to_end(until)
                return kept.page
            made = time.monotonic()
            page = self._build(store, until).encode()
            self.builds += 1
            self._kept[until] = _Kept(key, made, page)
            self._kept.move_to_end(until)
            while len(self._kept) > PAGES:
                self._kept.popitem(last=False)
            return page
