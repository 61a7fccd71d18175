"""`report html --ledger URL`: the page built on the client from a running service's JSON routes and tiles
(DESIGN.md "Command line"), with the numbers of the page `report html` writes from the same database."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import append, demo, visual
from ledger.errors import StoreError
from ledger.service import report_page
from ledger.service.client import LedgerClient
from ledger.store import Store
from ledger.values import format_time, parse_time
from tests.service.conftest import Served


class Spying(httpx.BaseTransport):
    """Real HTTP, with every request's path recorded and an answer optionally rewritten."""

    def __init__(self, rewrite: Callable[[httpx.Request, httpx.Response], httpx.Response] | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []
        self.rewrite = rewrite

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        response = self.inner.handle_request(request)
        if self.rewrite is None:
            return response
        response.read()
        return self.rewrite(request, response)


@pytest.fixture(scope="module")
def demo_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, demo.DemoResult, str]]:
    """The demo's ledger (240 units) served, and a time before its diversion's receipt for --until."""
    now = append.now_us()
    plan = demo.plan(demo.DEFAULT_UNITS, now)
    result = demo.run(tmp_path_factory.mktemp("served-page") / "demo", plan, now_us=now)
    diverted = set(next(v.serials for v in result.injected if v.code == demo.DIVERSION))
    cut = next(s.at for s in plan.steps if s.kind == "received" and set(s.serials) & diverted)
    with Served(str(result.db), result.keys / "operator") as server:
        yield server, result, format_time(cut - 1)


def _same_but_the_time(remote: visual.Page, local: visual.Page) -> None:
    """Equal pages, but for when each report was made (as of now, the service's clock is not ours) and the
    banner's checks (a served log has no stored links to check)."""
    strip = (lambda d: {k: v for k, v in d.items() if k != "as_of"}) if local.until is None else (lambda d: d)
    assert {n: strip(d) for n, d in remote.reports.items()} == {n: strip(d) for n, d in local.reports.items()}
    assert remote.timelines == local.timelines
    assert remote.weeks == local.weeks
    assert (remote.origin, remote.until, remote.log_size, remote.ledger_size, remote.policy) == (
        local.origin, local.until, local.log_size, local.ledger_size, local.policy)
    assert remote.verification.intact and local.verification.intact
    assert remote.verification.log_size == local.verification.log_size
    assert set(remote.verification.checks) < set(local.verification.checks)
    if local.until is not None:
        assert remote.as_of == local.as_of


def _data(page: str) -> Any:
    found = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert len(found) == 1
    return json.loads(found[0])


def test_the_page_is_built_from_the_json_routes_and_the_tiles_not_from_get_root(
        demo_served: tuple[Served, demo.DemoResult, str]) -> None:
    served, result, until = demo_served
    for when in (None, until):
        spy = Spying()
        with LedgerClient(served.url, transport=spy) as client:
            remote = report_page.build(client, until=None if when is None else _us(when), now_us=append.now_us())
        assert "/" not in spy.paths
        assert {f"/v1/reports/{n}" for n in ("compliance", "duty", "customers", "units", "volume")} <= set(spy.paths)
        assert "/checkpoint" in spy.paths and "/tile/entries/000.p/104" in spy.paths  # the log, by its tiles
        store = Store(str(result.db), readonly=True)
        try:
            local = visual.build(store, until=None if when is None else _us(when), now_us=append.now_us())
        finally:
            store.close()
        _same_but_the_time(remote, local)
        assert remote.checkpoint == local.checkpoint  # with --until: none, both, of more than was folded
        assert remote.checkpoint is None if when else remote.checkpoint is not None and \
            remote.checkpoint.operator_verified


def _us(when: str) -> int:
    return parse_time(when)


@pytest.mark.parametrize("until", [False, True])
def test_report_html_over_http_writes_the_numbers_of_the_local_page(
        demo_served: tuple[Served, demo.DemoResult, str], tmp_path: Path, until: bool) -> None:
    served, result, when = demo_served
    extra = ["--until", when] if until else []
    remote, local = tmp_path / "remote.html", tmp_path / "local.html"
    over = CliRunner().invoke(app, ["report", "html", str(remote), "--ledger", served.url, *extra],
                              env={"CUSTODY_DB": "", "CUSTODY_LEDGER": ""})
    assert over.exit_code == 0, over.stderr
    assert over.stdout.startswith(f"wrote {remote} (") and f"from the ledger service at {served.url}: ledger intact" \
        in over.stdout
    here = CliRunner().invoke(app, ["--db", str(result.db), "report", "html", str(local), *extra])
    assert here.exit_code == 0, here.stderr
    assert over.stdout.split(": ledger ")[1].split(", as of")[0] == here.stdout.split(": ledger ")[1].split(
        ", as of")[0]  # intact, statements, findings
    page, mine = remote.read_text(), local.read_text()
    assert _data(page) == _data(mine)  # every finding, duty entry and timeline
    for element in ("log-size", "flow-total", "findings-total", "glance-findings", "glance-shortfall",
                    "glance-over", "glance-units"):
        pattern = f'id="{element}">([^<]*)<'
        assert re.findall(pattern, page) == re.findall(pattern, mine) != [], element
    tables = r'<table[^>]*id="(codes|flow|customers|volume|weeks)-table".*?</table>'
    assert [m.group(0) for m in re.finditer(tables, page, re.S)] == [m.group(0) for m in re.finditer(tables, mine,
                                                                                                       re.S)]


def test_reports_the_log_does_not_bear_out_are_refused(demo_served: tuple[Served, demo.DemoResult, str]) -> None:
    served, _, _ = demo_served

    def one_unit_more(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path != "/v1/reports/units":
            return response
        document = response.json()
        document["total"] += 1
        return httpx.Response(200, json=document)

    with LedgerClient(served.url, transport=Spying(one_unit_more)) as client, \
            pytest.raises(StoreError, match="reports its log does not bear out: the units report counts 241 units"):
        report_page.build(client, until=None, now_us=append.now_us())


def test_a_log_that_grows_between_two_reports_is_read_again(
        demo_served: tuple[Served, demo.DemoResult, str]) -> None:
    served, _, _ = demo_served
    moved = {"times": 0}

    def grown(times: int) -> Callable[[httpx.Request, httpx.Response], httpx.Response]:
        def rewrite(request: httpx.Request, response: httpx.Response) -> httpx.Response:
            if request.url.path != "/v1/reports/duty" or moved["times"] >= times:
                return response
            moved["times"] += 1
            document = response.json()
            document["log_size"] += 1  # as if a statement had been logged after the compliance report
            return httpx.Response(200, json=document)
        return rewrite

    spy = Spying(grown(2))
    with LedgerClient(served.url, transport=spy) as client:
        page = report_page.build(client, until=None, now_us=append.now_us())
    assert page.verification.intact and spy.paths.count("/v1/reports/compliance") == 3
    moved["times"] = 0
    with LedgerClient(served.url, transport=Spying(grown(report_page.ATTEMPTS))) as client, \
            pytest.raises(StoreError, match=f"kept logging statements .* \\({report_page.ATTEMPTS} attempts\\)"):
        report_page.build(client, until=None, now_us=append.now_us())


def test_a_page_over_http_of_a_service_without_a_ledger_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", "html", str(tmp_path / "p.html"), "--ledger", "http://127.0.0.1:9"],
                                env={"CUSTODY_DB": ""})
    assert result.exit_code == 2 and "cannot reach the ledger service" in result.stderr
    assert not (tmp_path / "p.html").exists()
