"""The visual report in headless Firefox (DESIGN.md: "It works in current Chromium and Firefox"): the demo's
page logs no error and loads nothing, shows the JSON reports' numbers, and its serial searches work from
the keyboard. Chromium gets the whole suite (test_report_page.py); this is the same page in the other engine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger import append, demo, reports
from ledger.visual import dollars
from tests.browser import firefox, tooling


@dataclass(frozen=True)
class Made:
    path: Path
    db: str
    json: dict[str, Any]
    result: demo.DemoResult


@pytest.fixture(scope="module")
def browser() -> Iterator[firefox.Firefox]:
    why = firefox.websockets_missing() or firefox.firefox_path()[1]
    if why:
        pytest.skip(why)  # only where no browser could be installed: .ci/run installs one when it can
    with firefox.launch() as b:
        yield b


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    directory = tmp_path_factory.mktemp("firefox")
    now = append.now_us()
    result = demo.run(directory / "demo", demo.plan(demo.DEFAULT_UNITS, now), now_us=now)
    db = str(result.db)
    path = directory / "report.html"
    tooling.cli("--db", db, "report", "html", str(path))
    documents = {r: json.loads(tooling.cli("--db", db, "report", r, "--json")) for r in reports.REPORTS}
    return Made(path, db, documents, result)


@pytest.fixture
def tab(browser: firefox.Firefox, made: Made) -> Iterator[firefox.Tab]:
    opened = browser.open(made.path)
    yield opened
    opened.close()


def number(shown: str) -> int:
    return int(shown.replace(",", ""))


def test_no_error_nothing_loaded_and_the_numbers_of_the_json_reports(tab: firefox.Tab, made: Made) -> None:
    compliance, duty, customers, units = (made.json[n] for n in ("compliance", "duty", "customers", "units"))
    assert number(tab.text("#log-size")) == compliance["log_size"]
    assert {r[0]: number(r[1]) for r in tab.rows("#codes-table tbody tr")} == compliance["counts"]
    assert number(tab.text("#findings-total")) == len(compliance["findings"])
    assert {r[0]: number(r[1]) for r in tab.rows("#flow-table tbody tr")} == units["steps"]
    assert tab.text("#glance-shortfall") == dollars(duty["total"]["shortfall_cents"])
    over = {c["id"]: c["over_cap"] for c in customers["customers"]}
    assert over["bytedance"] > 0
    assert f"OVER CAP by {over['bytedance']}" in tab.text("#customers-table tr[data-customer='bytedance']")
    assert "Ledger verified intact" in tab.text("#verdict")
    assert tab.evaluate("document.querySelectorAll('#flow-chart svg, #codes-chart svg').length") == 2
    # the first page of the findings table, drawn by the page's script from its embedded data
    shown = tab.rows("#findings-table tbody tr")
    assert shown and shown == [[f["code"], f["serial"] or "—", str(f["index"]), f["detail"]]
                               for f in compliance["findings"][:len(shown)]]
    assert tab.errors == []
    # nothing but the file itself (Firefox loads a font of its own as a data: URL, which leaves nothing)
    assert [r for r in tab.requests if r != tab.url and not r.startswith("data:")] == []
    assert tab.evaluate("performance.getEntriesByType('resource').length") == 0
    # and errors would be seen: the page's Content-Security-Policy refuses a fetch, and Firefox logs it
    tab.evaluate("fetch('https://example.com/').catch(() => null)")
    for _ in range(40):
        if tab.errors:
            break
        time.sleep(0.05)
        tab.evaluate("null")  # events arrive with the answers
    assert any("Content-Security-Policy" in e for e in tab.errors), tab.errors
    assert [r for r in tab.requests if r.startswith("http")] == []  # refused before any request was made


def test_searching_a_serial_from_the_keyboard_shows_its_timeline_and_its_findings(
        tab: firefox.Tab, made: Made) -> None:
    serial = next(v.serials[0] for v in made.result.injected if v.code == demo.DIVERSION)
    history = json.loads(tooling.cli("--db", made.db, "history", serial, "--json"))
    tab.evaluate("document.querySelector('#u-serial').focus()")
    tab.type(serial + firefox.ENTER)
    assert tab.text("#unit-title") == f"Unit {serial}"
    steps = tab.evaluate("Array.from(document.querySelectorAll('#unit-result ol.chain > li')).map(li => li.innerText)")
    assert len(steps) == len(history["steps"])
    for shown, step in zip(steps, history["steps"], strict=True):
        for value in (step["kind"], step["at"], step["hash"], str(step["index"])):
            assert value in shown, value
    assert "DIVERSION" in steps[-1]
    # the findings table searched by the same serial
    tab.evaluate("document.querySelector('#f-serial').focus()")
    tab.type(serial + firefox.ENTER)
    mine = [f for f in made.json["compliance"]["findings"] if f["serial"] == serial]
    assert [r[1] for r in tab.rows("#findings-table tbody tr")] == [serial] * len(mine) != []
    assert tab.errors == []
