"""Fixtures of the browser tests: one Chromium for the module, skipped with the reason when there is none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import tooling


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    why = tooling.playwright_missing() or tooling.chromium_path()[1]
    if why:
        pytest.skip(why)  # only where no browser could be installed: .ci/run installs one when it can
    with tooling.launch() as b:
        yield b
