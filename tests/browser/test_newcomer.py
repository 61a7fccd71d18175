"""Issue 18's "done means": a new user runs `custody demo`, then `custody report html report.html`, in an empty
folder, opens the page, and sees the five injected violations, the duty shortfall and bytedance over its cap
without reading any text output. Real processes, no options, as the README tells it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ledger import demo
from ledger.visual import dollars
from tests.browser import tooling

# the violations the demo injects into its clean flow (the rest of its story follows from them or is no finding)
FIVE = (demo.PROHIBITED_MODEL, demo.SKIPPED_INSPECTION, demo.UNDERPAID_DUTY, demo.DIVERSION, demo.CAP_EXCEEDED)


def _custody(cwd: Path, *args: str) -> str:
    """`custody ARGS` in a real process in `cwd`, with no CUSTODY_DB or CUSTODY_LEDGER in its environment."""
    run = subprocess.run([sys.executable, "-c", "from commands.main import run; run()", *args], cwd=cwd,
                         capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=300)
    assert run.returncode in (0, 3), (args, run.stderr)
    return run.stdout


def _shown(page: Any, selector: str) -> str:
    """The text a reader sees in `selector` (which must be visible)."""
    element = page.locator(selector)
    assert element.is_visible(), selector
    return str(element.inner_text())


def test_demo_then_report_html_shows_the_violations_the_shortfall_and_the_customer_over_cap(
        browser: Any, tmp_path: Path) -> None:
    assert list(tmp_path.iterdir()) == []
    _custody(tmp_path, "demo")
    _custody(tmp_path, "report", "html", "report.html")
    duty = json.loads(_custody(tmp_path, "report", "duty", "--json"))
    page_file = tmp_path / "report.html"
    w = tooling.open_page(browser, page_file)
    try:
        page = w.page
        glance = _shown(page, "#glance")
        for code in FIVE:
            assert code in glance, code
            assert page.locator(f"#codes-table button[data-code='{code}']").is_visible(), code
        shortfall = duty["total"]["shortfall_cents"]
        assert shortfall > 0
        assert _shown(page, "#glance-shortfall") == dollars(shortfall)
        assert "bytedance (OVER CAP by 3" in glance
        assert "OVER CAP by 3" in _shown(page, "#customers-table tr[data-customer='bytedance']")
        assert "Ledger verified intact" in _shown(page, "#verdict")
        assert w.errors == [] and w.left_the_page() == []
    finally:
        w.page.context.close()
