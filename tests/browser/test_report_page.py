"""`custody report html` in headless Chromium: the page's numbers are the JSON reports', its filters and
timelines work with the mouse and the keyboard, it logs no error, loads nothing, prints without controls,
and passes axe-core's accessibility rules."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger import append, demo, reports
from ledger.values import format_time
from tests.browser import tooling


@dataclass(frozen=True)
class Made:
    """A page written by the CLI and the JSON reports for the same --until."""

    path: Path
    until: str | None
    json: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Demo:
    db: str
    pages: dict[str, Made]  # "now" and "until"
    result: demo.DemoResult


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    directory = tmp_path_factory.mktemp("report-html")
    now = append.now_us()
    plan = demo.plan(demo.DEFAULT_UNITS, now)
    result = demo.run(directory / "demo", plan, now_us=now)
    db = str(result.db)
    # a time after the injected violations but the diversion and the over-cap units
    cut = next(s.at for s in plan.steps if s.kind == "received" and set(s.serials) & set(
        next(v.serials for v in result.injected if v.code == demo.DIVERSION)))
    until = format_time(cut - 1)
    pages = {}
    for name, when in (("now", None), ("until", until)):
        path = directory / f"{name}.html"
        extra = ["--until", when] if when else []
        tooling.cli("--db", db, "report", "html", str(path), *extra)
        documents = {r: json.loads(tooling.cli("--db", db, "report", r, "--json", *extra)) for r in reports.REPORTS}
        pages[name] = Made(path, when, documents)
    return Demo(db, pages, result)


@pytest.fixture
def watched(browser: Any) -> Iterator[list[tooling.Watched]]:
    opened: list[tooling.Watched] = []
    yield opened
    for w in opened:
        w.page.context.close()


def _open(browser: Any, opened: list[tooling.Watched], path: Path, **options: Any) -> tooling.Watched:
    w = tooling.open_page(browser, path, **options)
    opened.append(w)
    return w


# --- reading the page ---------------------------------------------------------------------------------

_ROWS = """sel => Array.from(document.querySelectorAll(sel)).map(tr =>
    Array.from(tr.children).map(c => c.innerText.trim()))"""


def rows(page: Any, selector: str) -> list[list[str]]:
    return list(page.evaluate(_ROWS, selector))


def text(page: Any, selector: str) -> str:
    return str(page.inner_text(selector)).strip()


def number(shown: str) -> int:
    return int(shown.replace(",", ""))


def cents(shown: str) -> int:
    """"$54,000.00" → 5400000: the dollars on the page, back in cents."""
    assert shown.startswith(("$", "-$")) and shown[-3] == ".", shown
    return int(shown.replace("$", "").replace(",", "").replace(".", ""))


def all_pages(page: Any, table: str, pager: str) -> list[list[str]]:
    """Every row of a paged table, page by page."""
    found: list[list[str]] = []
    for _ in range(10_000):
        found += rows(page, f"{table} tbody tr")
        following = page.locator(f"{pager} button[data-move='1']")
        if not following.is_visible() or following.is_disabled():
            return found
        following.click()
    raise AssertionError("the pager never ended")


# --- the numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["now", "until"])
def test_every_number_equals_the_json_reports(browser: Any, ledger: Demo, watched: list[tooling.Watched],
                                              which: str) -> None:
    made = ledger.pages[which]
    page = _open(browser, watched, made.path).page
    compliance, duty, customers, units = (made.json[n] for n in ("compliance", "duty", "customers", "units"))
    assert number(text(page, "#log-size")) == compliance["log_size"]

    assert {r[0]: number(r[1]) for r in rows(page, "#flow-table tbody tr")} == units["steps"]
    assert number(text(page, "#flow-total")) == units["total"] == number(text(page, "#glance-units"))

    counts = compliance["counts"]
    assert counts, "the demo's violations are findings"
    assert {r[0]: number(r[1]) for r in rows(page, "#codes-table tbody tr")} == counts
    assert number(text(page, "#findings-total")) == len(compliance["findings"])
    assert number(text(page, "#glance-findings")) == len(compliance["findings"])
    shown = all_pages(page, "#findings-table", "#f-pager")
    expected = [[f["code"], f["serial"] or "—", str(f["index"]), f["detail"]] for f in compliance["findings"]]
    assert shown == expected
    weekly = rows(page, "#weeks-table tbody tr")
    assert sum(number(r[-1]) for r in weekly) == len(compliance["findings"])

    money = ("entered_value_cents", "duty_due_cents", "paid_cents", "shortfall_cents")
    entries = all_pages(page, "#duty-table", "#d-pager")
    assert [[r[0], number(r[1]), number(r[2]), *(cents(c) for c in r[3:7])] for r in entries] == [
        [e["entry"], e["statements"], e["units"], *(e[k] for k in money)] for e in duty["entries"]]
    assert all(("SHORTFALL" in r[7]) == (e["shortfall_cents"] > 0) for r, e in zip(entries, duty["entries"],
                                                                                     strict=True))
    total = rows(page, "#duty-total")[0]
    assert number(total[2]) == duty["total"]["units"]
    assert [cents(c) for c in total[3:7]] == [duty["total"][k] for k in money]
    assert cents(text(page, "#glance-shortfall")) == duty["total"]["shortfall_cents"]

    listed = {r[0]: r[1:] for r in rows(page, "#customers-table tbody tr")}
    assert set(listed) == {c["id"] for c in customers["customers"]}
    for c in customers["customers"]:
        status, license_, _, cap, consigned, received, remaining, over, mark = listed[c["id"]]
        assert (status, license_) == (c["status"], c["license"])
        assert [number(cap), number(consigned), number(received), number(remaining), number(over)] == [
            c["cap"], c["consigned"], c["received"], c["remaining"], c["over_cap"]]
        assert ("OVER CAP" in mark) == (c["over_cap"] > 0)  # in words, not only in colour

    volume = made.json.get("volume", {}).get("periods") or []
    if volume:
        shown_periods = rows(page, "#volume-table tbody tr")
        assert [[r[0], number(r[3]), number(r[5])] for r in shown_periods] == [
            [p["model"], p["us_units"], p["exported"]] for p in volume]
    else:
        assert page.locator("#volume").count() == 0


def test_the_demo_shows_its_violations_shortfall_and_the_customer_over_its_cap(
        browser: Any, ledger: Demo, watched: list[tooling.Watched]) -> None:
    page = _open(browser, watched, ledger.pages["now"].path).page
    glance = text(page, "#glance")
    for v in ledger.result.injected:
        if v.code not in demo.CLEAN_STORIES:  # a scrapped or withdrawn unit is no finding
            assert v.code in glance
    assert "$0.00" not in text(page, "#glance-shortfall")
    assert "bytedance (OVER CAP by 3" in glance
    assert "OVER CAP by 3" in text(page, "#customers-table tr[data-customer='bytedance']")
    assert "within cap" in text(page, "#customers-table tr[data-customer='alibaba']")
    assert "Ledger verified intact" in text(page, "#verdict")


def test_the_page_as_of_an_earlier_time_shows_fewer_findings(ledger: Demo) -> None:
    now, then = ledger.pages["now"].json["compliance"], ledger.pages["until"].json["compliance"]
    assert 0 < len(then["findings"]) < len(now["findings"])
    assert "DIVERSION" not in then["counts"]


# --- filtering, searching, the timeline ---------------------------------------------------------------


def test_filtering_findings_by_code_shows_exactly_those(browser: Any, ledger: Demo,
                                                        watched: list[tooling.Watched]) -> None:
    made = ledger.pages["now"]
    page = _open(browser, watched, made.path).page
    for code in made.json["compliance"]["counts"]:
        page.select_option("#f-code", code)
        shown = all_pages(page, "#findings-table", "#f-pager")
        expected = [[f["code"], f["serial"] or "—", str(f["index"]), f["detail"]]
                    for f in made.json["compliance"]["findings"] if f["code"] == code]
        assert shown == expected, code
        assert f"of {len(expected)} finding(s) with code {code}" in text(page, "#f-status")
    # the buttons beside the counts do the same
    page.click("#codes-table button[data-code='CAP_EXCEEDED']")
    assert {r[0] for r in rows(page, "#findings-table tbody tr")} == {"CAP_EXCEEDED"}


def test_searching_findings_by_serial(browser: Any, ledger: Demo, watched: list[tooling.Watched]) -> None:
    made = ledger.pages["now"]
    page = _open(browser, watched, made.path).page
    serial = next(f["serial"] for f in made.json["compliance"]["findings"] if f["code"] == "DIVERSION")
    page.fill("#f-serial", serial)
    page.click("#findings-form button[type='submit']")
    assert [r[1] for r in rows(page, "#findings-table tbody tr")] == [
        f["serial"] for f in made.json["compliance"]["findings"] if f["serial"] == serial]
    page.fill("#f-serial", "no-such-serial")
    page.press("#f-serial", "Enter")
    assert rows(page, "#findings-table tbody tr") == []
    assert text(page, "#f-status").startswith("None")


@pytest.mark.parametrize("which", ["now", "until"])
def test_searching_a_serial_shows_its_timeline(browser: Any, ledger: Demo, watched: list[tooling.Watched],
                                               which: str) -> None:
    made = ledger.pages[which]
    page = _open(browser, watched, made.path).page
    serial = next(v.serials[0] for v in ledger.result.injected if v.code == demo.DIVERSION)
    at = ["--at", made.until] if made.until else []
    history = json.loads(tooling.cli("--db", ledger.db, "history", serial, "--json", *at))
    page.fill("#u-serial", serial)
    page.click("#unit-form button[type='submit']")
    assert text(page, "#unit-title") == f"Unit {serial}"
    steps = page.locator("#unit-result ol.chain > li")
    assert steps.count() == len(history["steps"])
    for n, step in enumerate(history["steps"]):
        shown = str(steps.nth(n).inner_text())
        for value in (step["kind"], step["at"], step["hash"], step["signer"], str(step["index"])):
            assert value in shown, (n, value)
        if step["participant"]:
            assert step["participant"] in shown
    mine = [f for f in made.json["compliance"]["findings"] if f["serial"] == serial]
    listed = page.locator("#unit-result ul.unit-findings li")
    assert listed.count() == len(mine)
    for n, f in enumerate(mine):
        assert f["code"] in listed.nth(n).inner_text() and f["detail"] in listed.nth(n).inner_text()
    if which == "now":
        assert mine and "DIVERSION" in str(steps.last.inner_text())  # drawn on the step that shows it


def test_clicking_a_serial_in_the_findings_shows_its_timeline(browser: Any, ledger: Demo,
                                                              watched: list[tooling.Watched]) -> None:
    page = _open(browser, watched, ledger.pages["now"].path).page
    button = page.locator("#findings-table button.serial").first
    serial = str(button.inner_text())
    button.click()
    assert text(page, "#unit-title") == f"Unit {serial}"
    assert page.evaluate("document.activeElement.id") == "unit-title"


def test_an_unknown_serial_says_so_and_suggests_near_ones(browser: Any, ledger: Demo,
                                                          watched: list[tooling.Watched]) -> None:
    page = _open(browser, watched, ledger.pages["now"].path).page
    page.fill("#u-serial", "nope")
    page.press("#u-serial", "Enter")
    assert text(page, "#unit-title") == "No unit nope as of this report"
    serial = ledger.result.injected[0].serials[0]
    page.fill("#u-serial", serial[:-1])
    page.press("#u-serial", "Enter")
    assert page.locator("#unit-result button.serial").count() > 0
    page.locator("#unit-result button.serial").first.click()
    assert text(page, "#unit-title").startswith(f"Unit {serial[:-1]}")


def test_the_keyboard_alone_reaches_every_control(browser: Any, ledger: Demo,
                                                  watched: list[tooling.Watched]) -> None:
    page = _open(browser, watched, ledger.pages["now"].path).page
    serial = ledger.result.injected[0].serials[0]

    def tab_to(selector: str) -> None:
        for _ in range(400):
            page.keyboard.press("Tab")
            if page.evaluate("s => document.activeElement.matches(s)", selector):
                return
        raise AssertionError(f"Tab never reached {selector}")

    tab_to("#codes-table button[data-code='DIVERSION']")
    page.keyboard.press("Enter")
    assert {r[0] for r in rows(page, "#findings-table tbody tr")} == {"DIVERSION"}
    tab_to("#findings-table button.serial")
    page.keyboard.press("Enter")
    assert text(page, "#unit-title").startswith("Unit ")
    tab_to("#u-serial")
    page.keyboard.type(serial)
    page.keyboard.press("Enter")
    assert text(page, "#unit-title") == f"Unit {serial}"


# --- self-contained, error-free, printable, accessible ------------------------------------------------


def test_no_console_error_and_no_request_leaves_the_page(browser: Any, ledger: Demo,
                                                         watched: list[tooling.Watched]) -> None:
    w = _open(browser, watched, ledger.pages["now"].path)
    page = w.page
    page.fill("#u-serial", ledger.result.injected[0].serials[0])
    page.press("#u-serial", "Enter")
    page.select_option("#f-code", "UNDERPAID_DUTY")
    page.check("#d-short")
    assert w.errors == []
    assert w.left_the_page() == [] and w.blocked == []
    assert page.evaluate("performance.getEntriesByType('resource').length") == 0
    html = ledger.pages["now"].path.read_text()
    for needle in ("src=", 'href="http', "url(", "@import", "<link"):
        assert needle not in html.replace("src-", ""), needle


def test_the_page_works_without_a_server_and_every_script_obeys_its_policy(
        browser: Any, ledger: Demo, watched: list[tooling.Watched]) -> None:
    w = _open(browser, watched, ledger.pages["until"].path)
    # the Content-Security-Policy allows no source: a fetch from the page is refused and logged
    w.page.evaluate("fetch('https://example.com/').catch(() => null)")
    w.page.wait_for_timeout(200)
    assert any("Content Security Policy" in e or "Refused" in e for e in w.errors)
    assert w.blocked == []  # refused by the page itself, before any request was made


def test_print_shows_charts_and_tables_not_controls(browser: Any, ledger: Demo,
                                                    watched: list[tooling.Watched]) -> None:
    page = _open(browser, watched, ledger.pages["now"].path).page
    page.emulate_media(media="print")
    for hidden in ("nav", "#findings-form", "#unit-form", "#duty-form", ".skip", "#codes-table .control"):
        assert not page.locator(hidden).first.is_visible(), hidden
    for shown in ("#flow-chart svg", "#codes-chart svg", "#weeks-chart svg", "#customers-chart svg",
                  "#findings-table", "#duty-table", "#customers-table", "#weeks-table", "#verdict"):
        assert page.locator(shown).first.is_visible(), shown
    assert len(page.pdf()) > 10_000


def test_axe_finds_no_accessibility_violation(browser: Any, ledger: Demo, watched: list[tooling.Watched]) -> None:
    axe = tooling.axe_path()
    if axe is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but axe-core is absent (set {tooling.AXE_ENV} or run .ci/run with npm)")
        pytest.skip(f"axe-core is absent (set {tooling.AXE_ENV} or run .ci/run with npm)")
    page = _open(browser, watched, ledger.pages["now"].path, bypass_csp=True).page  # to inject axe
    page.add_script_tag(path=str(axe))
    run = """() => axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',
        'wcag22aa', 'best-practice']}}).then(r => r.violations.map(v => v.id + ': ' + v.help + ' ' +
        v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')))"""
    assert page.evaluate(run) == []
    page.fill("#u-serial", ledger.result.injected[0].serials[0])  # the timeline and a filtered table too
    page.press("#u-serial", "Enter")
    page.select_option("#f-code", "DIVERSION")
    assert page.evaluate(run) == []
