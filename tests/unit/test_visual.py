"""The visual report's data (`ledger.visual`) and its page (`ledger.visual_html`), without a browser."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ledger import append, demo, history, reports, visual, visual_html
from ledger.statement import decode
from ledger.store import Store
from ledger.values import parse_time
from tests.conftest import open_ledger


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, demo.DemoResult, int]:
    now = append.now_us()
    result = demo.run(tmp_path_factory.mktemp("visual") / "demo", demo.plan(80, now), now_us=now)
    return str(result.db), result, now


def test_week_of_is_the_monday_that_starts_the_week() -> None:
    assert visual.week_of(parse_time("2026-01-15T10:00:00Z")) == "2026-01-12"  # a Thursday
    assert visual.week_of(parse_time("2026-01-12")) == "2026-01-12"  # a Monday, at midnight
    assert visual.week_of(parse_time("2026-01-18T23:59:59.999999Z")) == "2026-01-12"  # the Sunday after
    assert visual.week_of(parse_time("2026-01-19")) == "2026-01-19"
    assert visual.week_of(0) == "1970-01-01"  # the epoch's first week has no Monday to name


def test_place_of_a_step() -> None:
    assert visual.place_of({"site": "Lab", "country": "US", "result": "pass"}) == "Lab, US"
    assert visual.place_of({"port_of_entry": "LAX", "waybill": "W"}) == "LAX"
    assert visual.place_of({"consignee": "a", "destination": "CN"}) == "CN"
    assert visual.place_of({"entry": "E-1", "duty": 5}) == ""


def test_the_page_data_is_the_reports_and_every_units_chain(demo_db: tuple[str, demo.DemoResult, int]) -> None:
    db, result, now = demo_db
    with Store(db, readonly=True) as store:
        page = visual.build(store, until=None, now_us=now)
        state, as_of, size = reports.state_of_store(store, until=None, now_us=now)
        assert dict(page.reports) == {n: reports.build(n, state, as_of, size).document for n in reports.REPORTS}
        assert page.verification.intact and page.log_size == page.ledger_size == store.size()
        assert page.checkpoint is not None and page.checkpoint.operator_verified
        assert page.checkpoint.size == store.size() and page.checkpoint.cosigners == ()
        t = page.timelines
        assert len(t.serials) == len(set(t.serials)) == 80 == t.units and not t.omitted
        for violation in result.injected:
            if not violation.serials:  # a declaration (the U.S. volume) has no unit
                continue
            serial = violation.serials[0]
            chain = t.chains[t.chain_of[t.serials.index(serial)]]
            steps = history.unit_history(store, serial, now_us=now).steps
            assert list(chain) == [s.index for s in steps]
            assert [t.steps[i].hash for i in chain] == [s.statement.hash for s in steps]
            assert [t.steps[i].participant for i in chain] == [s.participant for s in steps]
    assert sum(w.count for w in page.weeks) == len(page.reports["compliance"]["findings"])
    assert len(t.chains) < len(t.serials)  # a board shares one chain


def test_until_folds_what_the_report_folds_and_cuts_each_chain(demo_db: tuple[str, demo.DemoResult, int]) -> None:
    db, _, now = demo_db
    with Store(db, readonly=True) as store:
        statements = list(store.log())
        ats = sorted(decode(e.wire).at for e in statements)
        until = ats[len(ats) // 2]
        page = visual.build(store, until=until, now_us=now)
        state, as_of, size = reports.state_of_store(store, until=until, now_us=now)  # what `report --until` folds
        assert dict(page.reports) == {n: reports.build(n, state, as_of, size).document for n in reports.REPORTS}
    assert page.as_of == until and page.until == until
    assert page.log_size == page.reports["compliance"]["log_size"] < page.ledger_size
    assert all(s.at <= until for s in page.timelines.steps.values())
    assert page.checkpoint is None  # the demo's one checkpoint covers the whole log, not this prefix


@pytest.mark.parametrize("halfway", [False, True], ids=["now", "until"])
def test_one_pass_over_the_log_serves_the_verdict_and_the_reports(demo_db: tuple[str, demo.DemoResult, int],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  halfway: bool) -> None:
    """The page's one `verify` reads the log; its fold (or, with `until`, the fold of the statements up to
    then, made in the same pass) is what the reports read: the log is not read a second time."""
    db, _, now = demo_db
    with Store(db, readonly=True) as store:
        ats = sorted(decode(e.wire).at for e in store.log())
        until = ats[len(ats) // 2] if halfway else None
        reads: list[int] = []
        log_states = Store.log_states

        def counted(self: Store, start: int = 0, chunk: int = 5000) -> Iterator[tuple[int, bytes]]:
            reads.append(start)
            return log_states(self, start, chunk)

        monkeypatch.setattr(Store, "log_states", counted)
        page = visual.build(store, until=until, now_us=now)
    assert page.verification.intact and reads == [0]
    assert sum(page.reports["units"]["steps"].values()) == page.reports["units"]["total"] > 0


def test_too_many_units_for_timelines_keeps_the_counts(demo_db: tuple[str, demo.DemoResult, int],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    db, _, now = demo_db
    monkeypatch.setattr(visual, "MAX_TIMELINE_UNITS", 79)
    with Store(db, readonly=True) as store:
        page = visual.build(store, until=None, now_us=now)
    assert page.timelines.omitted and page.timelines.serials == () and page.timelines.units == 80
    text = visual_html.render(page)
    assert "This ledger holds 80 units" in text and 'id="u-serial"' not in text
    assert page.reports["units"]["total"] == 80


def test_the_page_embeds_its_data_safely_and_loads_nothing(demo_db: tuple[str, demo.DemoResult, int]) -> None:
    db, _, now = demo_db
    with Store(db, readonly=True) as store:
        page = visual.build(store, until=None, now_us=now)
    text = visual_html.render(page)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", text, re.S)
    assert [attrs for attrs, _ in scripts] == [' type="application/json" id="report-data"', ""]
    data = json.loads(scripts[0][1])
    assert len(data["findings"]) == len(page.reports["compliance"]["findings"])
    assert sorted(data["serials"]) == sorted(page.timelines.serials)
    assert re.search(r"\b(src|href)=\"(https?:)?//", text) is None and "<link" not in text
    policy = html.unescape(re.findall(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)[0])
    assert policy.startswith("default-src 'none';") and "script-src 'sha256-" in policy


def test_markup_in_ledger_text_stays_text(tmp_path: Path) -> None:
    """A participant may write anything in a free-text field: it reaches the page as text, never markup."""
    book = open_ledger(tmp_path, str(tmp_path / "custody.db"), CliRunner())
    evil = "</script><img src=x onerror=alert(1)><!--"
    book.record("fabricated", "tsmc", ["S1"], "--model", "H200-SXM5-141GB", "--site", evil, "--lot", evil,
                ok=True)
    with Store(book.db, readonly=True) as store:
        text = visual_html.render(visual.build(store, until=None, now_us=append.now_us()))
    assert "<img" not in text and text.count("</script>") == 2
    data = json.loads(re.findall(r'id="report-data">(.*?)</script>', text, re.S)[0])
    (step,) = data["steps"].values()  # the one custody step: its place (the site) and its lot, as written
    assert step[4] == evil and ["lot", evil] in step[5]


def test_dollars() -> None:
    assert visual.dollars(5_400_000) == "$54,000.00"
    assert visual.dollars(5) == "$0.05" and visual.dollars(0) == "$0.00"
    assert visual.dollars(-123_456) == "-$1,234.56"


def test_a_tampered_ledger_is_reported_not_intact_with_the_reports_numbers(tmp_path: Path) -> None:
    import sqlite3

    book = open_ledger(tmp_path, str(tmp_path / "custody.db"), CliRunner())
    book.full_flow(["T1", "T2"])
    db = sqlite3.connect(book.db)
    rowid, state = db.execute("SELECT rowid, state FROM stored_events WHERE topic LIKE '%Log.Appended' "
                              "AND instr(state, CAST('H200-SXM5' AS BLOB)) > 0 LIMIT 1").fetchone()
    i = state.index(b"H200-SXM5")
    db.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state[:i] + b"X" + state[i + 1:], rowid))
    db.commit()
    db.close()
    now = append.now_us()
    with Store(book.db, readonly=True) as store:
        page = visual.build(store, until=None, now_us=now)
        units = reports.of_store(store, "units", until=None, now_us=now).document
    assert not page.verification.intact
    assert page.verification.failures[0].check == "signature"
    assert page.reports["units"]["total"] == units["total"] == 2  # what `report units` says, from the views
    text = visual_html.render(page)
    assert "Ledger NOT intact" in text and "signature" in text


def test_new_steps_and_volume_periods_show_when_the_reports_carry_them(
        demo_db: tuple[str, demo.DemoResult, int]) -> None:
    """Kinds and reports added later (destroyed, withdrawn, `report volume`) need no change to the page."""
    import dataclasses

    db, _, now = demo_db
    with Store(db, readonly=True) as store:
        page = visual.build(store, until=None, now_us=now)
    without = {name: doc for name, doc in page.reports.items() if name != "volume"}
    assert 'id="volume"' not in visual_html.render(dataclasses.replace(page, reports=without))
    no_periods = {**without, "volume": {"as_of": "2026-05-01T00:00:00Z", "log_size": 14, "periods": []}}
    assert 'id="volume"' not in visual_html.render(dataclasses.replace(page, reports=no_periods))
    units = {**page.reports["units"], "steps": {**page.reports["units"]["steps"], "destroyed": 3, "withdrawn": 1}}
    periods = [{"model": "H200-SXM5-141GB", "from": "2026-01-01T00:00:00Z", "until": "2026-04-01T00:00:00Z",
                "us_units": 100, "limit": 50, "exported": 57, "over": 7, "index": 12},
               {"model": "H200-NVL-141GB", "from": "2026-01-01T00:00:00Z", "until": "2026-04-01T00:00:00Z",
                "us_units": 10, "limit": None, "exported": 2, "over": None, "index": 13}]
    volume = {"as_of": "2026-05-01T00:00:00Z", "log_size": 14, "periods": periods}
    text = visual_html.render(dataclasses.replace(page, reports={**page.reports, "units": units, "volume": volume}))
    assert '<tr data-step="destroyed"><th scope="row">destroyed</th><td class="num">3</td>' in text
    assert '<tr data-step="withdrawn"><th scope="row">withdrawn</th><td class="num">1</td>' in text
    section = text[text.index('<section id="volume"'):]
    section = section[:section.index("</section>")]
    assert "<strong>OVER LIMIT by 7</strong>" in section and "no limit under this policy" in section
    assert section.count("<tr data-period=") == 2 and '<a href="#volume">' in text
