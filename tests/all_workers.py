"""A pytest plugin: every verification in the session uses worker processes, in tiny chunks.

`.venv/bin/python -m pytest tests/adversarial/test_tamper.py -p tests.all_workers` runs the tamper suite through the
parallel paths (`test_parallel.py::test_tamper_suite_with_all_workers` does exactly that).
"""

from __future__ import annotations

import pytest

from ledger import links, parallel


@pytest.fixture(autouse=True)
def _all_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "MIN_STATEMENTS", 0)
    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    monkeypatch.setattr(parallel, "CHUNK_STATEMENTS", 5)
    monkeypatch.setattr(links, "RANGE_ROWS", 11)
