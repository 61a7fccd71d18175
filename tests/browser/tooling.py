"""Headless Chromium for the visual report's tests, benchmark and screenshots: Debian's `chromium` driven by
Playwright for Python (which cannot download its own browser on these machines).

`launch()` starts it with the flags a sandboxed CI box needs; `chromium_path()` says where it is, or why
there is none. The page under test gets a context that lets nothing leave it: every request but the page's
own file is aborted and recorded.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "CUSTODY_CHROMIUM"  # a browser executable to use instead of the one on PATH
AXE_ENV = "CUSTODY_AXE"  # axe.min.js; .ci/run installs it from npm under .venv/axe
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AXE = ROOT / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> tuple[str | None, str]:
    """The browser executable, or None and why not."""
    return browser_path(CHROMIUM_ENV, ("chromium", "chromium-browser", "google-chrome"),
                        "no chromium on PATH (as root, .ci/run installs Debian's: apt-get install -y chromium)")


def browser_path(env: str, names: tuple[str, ...], missing: str) -> tuple[str | None, str]:
    """The executable that `env` names, else the first of `names` on PATH; or None and why not."""
    given = os.environ.get(env)
    if given:
        return (given, "") if os.access(given, os.X_OK) else (None, f"{env}={given} is not executable")
    for name in names:
        found = shutil.which(name)
        if found:
            return found, ""
    return None, missing


def cli(*args: str) -> str:
    """`custody ARGS` in this process; its stdout. It must end as a command on the demo's ledger does: 0 or 3."""
    from typer.testing import CliRunner

    from commands.main import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code in (0, 3), (args, result.stderr)
    return result.stdout


def playwright_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def axe_path() -> Path | None:
    path = Path(os.environ.get(AXE_ENV) or DEFAULT_AXE)
    return path if path.is_file() else None


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium browser (Playwright's `Browser`), closed afterwards."""
    from playwright.sync_api import sync_playwright

    executable, why = chromium_path()
    if executable is None:
        raise RuntimeError(why)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page and what it did: console errors, uncaught exceptions, every request it made."""

    page: Any
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)

    def left_the_page(self) -> list[str]:
        return [r for r in self.requests if r != self.url]


def open_page(browser: Any, path: Path, *, bypass_csp: bool = False, width: int = 1280) -> Watched:
    """Open the file in a fresh context where any request other than the file itself is aborted."""
    context = browser.new_context(bypass_csp=bypass_csp, viewport={"width": width, "height": 900},
                                  java_script_enabled=True, offline=True)
    page = context.new_page()
    url = path.resolve().as_uri()
    watched = Watched(page, url)

    def route(r: Any) -> None:
        if r.request.url == url:
            r.continue_()
        else:
            watched.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("console", lambda message: watched.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: watched.errors.append(f"uncaught: {error}"))
    page.goto(url)
    page.wait_for_selector("html[data-ready='1']", timeout=10_000)
    return watched
