"""Fixtures of the browser tests: one Chromium per module, skipped with the reason when there is none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import tooling


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Closed at the end of the module: while Playwright's sync API runs, its event loop is this thread's,
    and a later test's `asyncio.run()` would fail."""
    why = tooling.playwright_missing() or tooling.chromium_path()[1]
    if why:
        pytest.skip(why)  # only where no browser could be installed: .ci/run installs one when it can
    with tooling.launch() as b:
        yield b
