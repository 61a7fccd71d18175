"""The cycle collector, paused by the commands that fold a whole log: a decision for the process, so
it is made here, at the edge, and never by the library.

The fold allocates a record per unit and frees almost nothing, so the collector would scan the growing
state again and again for garbage that is not there (a tenth or more of the fold's CPU). Nothing the
fold keeps forms a cycle; the collector runs again as before once the command's fold is done.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cycle collector while a whole log is folded (`verify`, `replay`, `import`).

    What the fold kept is then moved to the oldest generation (`freeze` and `unfreeze` at once), as if it
    had survived the young collections it skipped: else the first young collection afterwards would scan
    all of it (0.1 s after folding 100,000 units). It stays collectable, by the full collections that
    scan the oldest generation.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # a caller's own frozen objects stay frozen
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()
