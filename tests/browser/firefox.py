"""Headless Firefox for the visual report's tests: Debian's `firefox-esr`, driven over WebDriver BiDi (the W3C
protocol Firefox speaks natively) by the small client here, on the `websockets` package. Playwright's Firefox
is a patched build it downloads, which these machines cannot; this needs nothing beyond Debian and PyPI.

`launch()` starts the browser with a fresh profile whose preferences keep it off the network, connects, and
opens a session; `Firefox.open(path)` loads a file in a fresh tab and waits for the page's script to be
ready, recording the page's console errors and every request it makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.browser import tooling

FIREFOX_ENV = "CUSTODY_FIREFOX"  # a Firefox executable to use instead of the one on PATH
START_TIMEOUT_S = 60.0
COMMAND_TIMEOUT_S = 30.0
ENTER = "\ue007"  # WebDriver's key code for Enter
_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")
# keep a test browser off the network: no updates, telemetry, remote settings, safe browsing or portal checks
PREFS = {
    "app.update.auto": False, "app.update.enabled": False, "app.normandy.enabled": False,
    "browser.safebrowsing.malware.enabled": False, "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False, "browser.shell.checkDefaultBrowser": False,
    "browser.region.network.url": "", "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False, "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False, "toolkit.telemetry.unified": False,
    "extensions.update.enabled": False, "extensions.getAddons.cache.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False, "services.settings.server": "http://127.0.0.1:9/",
    "network.captive-portal-service.enabled": False, "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True, "network.prefetch-next": False,
}


def firefox_path() -> tuple[str | None, str]:
    """The browser executable, or None and why not."""
    return tooling.browser_path(FIREFOX_ENV, ("firefox-esr", "firefox"), "no firefox on PATH (as root, .ci/run "
                                "installs Debian's: apt-get install -y firefox-esr)")


def websockets_missing() -> str | None:
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        return "websockets is not installed (pip install -e '.[dev]')"
    return None


class BidiError(RuntimeError):
    """The browser answered a command with an error."""


@dataclass
class Tab:
    """A page in its own browsing context, and what it did: console errors, uncaught exceptions, requests."""

    browser: Firefox
    context: str
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise), through JSON."""
        answer = self.browser.command("script.evaluate", {
            "expression": f"Promise.resolve({expression}).then(v => JSON.stringify(v === undefined ? null : v))",
            "target": {"context": self.context}, "awaitPromise": True})
        if answer["type"] != "success":
            raise BidiError(f"{expression[:80]}: {answer.get('exceptionDetails', {}).get('text', answer)}")
        return json.loads(answer["result"]["value"])

    def type(self, text: str) -> None:
        """Keys pressed on the keyboard, into whatever has the focus."""
        keys = [a for ch in text for a in ({"type": "keyDown", "value": ch}, {"type": "keyUp", "value": ch})]
        self.browser.command("input.performActions", {"context": self.context, "actions": [
            {"type": "key", "id": "keyboard", "actions": keys}]})

    def text(self, selector: str) -> str:
        return str(self.evaluate(f"document.querySelector({json.dumps(selector)}).innerText.trim()"))

    def rows(self, selector: str) -> list[list[str]]:
        return list(self.evaluate(f"Array.from(document.querySelectorAll({json.dumps(selector)})).map(tr => "
                                  "Array.from(tr.children).map(c => c.innerText.trim()))"))

    def close(self) -> None:
        self.browser.tabs.pop(self.context, None)
        self.browser.command("browsingContext.close", {"context": self.context})


class Firefox:
    """One WebDriver BiDi session: commands answered in order, events routed to the tab they concern."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.next_id = 0
        self.tabs: dict[str, Tab] = {}

    def command(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        mine = self.next_id
        self.socket.send(json.dumps({"id": mine, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("type") == "event":
                self._event(message["method"], message["params"])
            elif message.get("id") == mine:
                if message.get("type") == "error":
                    raise BidiError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "log.entryAdded":
            tab = self.tabs.get(params.get("source", {}).get("context", ""))
            if tab is not None and params.get("level") == "error":
                tab.errors.append(str(params.get("text")))
        elif method == "network.beforeRequestSent":
            tab = self.tabs.get(params.get("context") or "")
            if tab is not None:
                tab.requests.append(str(params["request"]["url"]))

    def open(self, path: Path, timeout_s: float = 10.0) -> Tab:
        """`path` in a fresh tab, once its script has drawn the page (`html[data-ready='1']`)."""
        context = self.command("browsingContext.create", {"type": "tab"})["context"]
        tab = Tab(self, context, path.resolve().as_uri())
        self.tabs[context] = tab
        self.command("browsingContext.navigate", {"context": context, "url": tab.url, "wait": "complete"})
        deadline = time.monotonic() + timeout_s
        while tab.evaluate("document.documentElement.dataset.ready || ''") != "1":
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} was not ready in {timeout_s} s: {tab.errors}")
            time.sleep(0.05)
        return tab


@contextmanager
def launch() -> Iterator[Firefox]:
    """A headless Firefox with a fresh profile, over WebDriver BiDi; closed (and its profile removed) after."""
    from websockets.sync.client import connect

    executable, why = firefox_path()
    if executable is None:
        raise RuntimeError(why)
    with tempfile.TemporaryDirectory(prefix="custody-firefox-") as profile:
        Path(profile, "user.js").write_text("".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n"
                                                    for k, v in PREFS.items()))
        process = subprocess.Popen([executable, "--headless", "--no-remote", "--profile", profile,
                                    "--remote-debugging-port=0", "about:blank"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"})
        try:
            url = _listening(process)
            with connect(f"{url}/session", proxy=None, max_size=None, open_timeout=START_TIMEOUT_S) as socket:
                browser = Firefox(socket)
                browser.command("session.new", {"capabilities": {}})
                browser.command("session.subscribe", {"events": ["log.entryAdded", "network.beforeRequestSent"]})
                try:
                    yield browser
                finally:
                    with contextlib.suppress(Exception):  # it may close the socket before it answers
                        browser.command("browser.close", {})
        finally:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _listening(process: subprocess.Popen[str]) -> str:
    """The WebDriver BiDi address the browser prints on stderr once it listens (the rest of stderr is drained
    in the background, so the browser never blocks on a full pipe)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line.strip())
        found = _LISTENING.search(line)
        if found:
            return found.group(1)
    raise RuntimeError(f"firefox did not start WebDriver BiDi in {START_TIMEOUT_S:.0f} s: {' | '.join(seen[-5:])}")
