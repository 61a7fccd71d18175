"""`GET /`: the visual report, live, as `custody report html` writes it (DESIGN.md "The ledger service")."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from commands.main import app
from ledger import visual
from ledger.service import page_cache
from ledger.store import Store
from tests.conftest import Ledger as Book
from tests.service.conftest import Served


def _data(page: str) -> dict[str, object]:
    found = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert len(found) == 1
    return dict(json.loads(found[0]))


def test_the_root_serves_the_visual_report(served: Served, book: Book) -> None:
    book.full_flow(["P1", "P2"])
    book.record("fabricated", "tsmc", ["P3"], "--model", "B200-SXM6-192GB", "--site", "F", "--lot", "L",
                "--allow-violation", ok=True)
    with served.client() as http:
        answer = http.get("/")
        report = http.get("/v1/reports/compliance").json()
        units = http.get("/v1/reports/units").json()
    assert answer.status_code == 200 and answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    page = answer.text
    assert "Ledger verified intact" in page
    assert f'id="findings-total">{len(report["findings"])}<' in page
    assert f'id="flow-total">{units["total"]}<' in page
    assert sorted(_data(page)["serials"]) == ["P1", "P2", "P3"]  # type: ignore[call-overload]
    written = book.dir / "written.html"
    assert CliRunner().invoke(app, ["--db", book.db, "report", "html", str(written)]).exit_code == 0
    assert _data(written.read_text()) == _data(page)  # the same page as the command writes


def test_the_root_takes_until_and_refuses_anything_else(served: Served, book: Book) -> None:
    book.full_flow(["Q1"], at="2026-01-10")
    book.full_flow(["Q2"], at="2026-02-10")
    with served.client() as http:
        then = http.get("/", params={"until": "2026-01-31"})
        bad = http.get("/", params={"until": "someday"})
        other = http.get("/", params={"upto": "3"})
    assert then.status_code == 200 and _data(then.text)["serials"] == ["Q1"]
    assert bad.status_code == 400 and bad.json()["error"] == "usage"
    assert other.status_code == 400 and bad.json()["error"] == "usage"


def test_report_html_over_http_writes_the_served_ledgers_page(served: Served, book: Book) -> None:
    book.full_flow(["H1"], at="2026-01-10")
    book.full_flow(["H2"], at="2026-02-10")
    page = book.dir / "remote.html"
    result = CliRunner().invoke(app, ["report", "html", str(page), "--until", "2026-01-31", "--ledger", served.url],
                                env={"CUSTODY_DB": ""})
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"wrote {page} (") and served.url in result.stdout
    assert _data(page.read_text())["serials"] == ["H1"]
    both = CliRunner().invoke(app, ["report", "html", str(page), "--ledger", served.url, "--db", book.db])
    assert both.exit_code == 2 and "not both" in both.stderr


def _log_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each read of the whole log from its start (what building the page does, in its `verify`), counted
    (a writer's pre-check reads only the log beyond what it checked before)."""
    reads: list[int] = []
    log_states = Store.log_states

    def counted(self: Store, start: int = 0, chunk: int = 5000) -> Iterator[tuple[int, bytes]]:
        if start == 0:
            reads.append(start)
        return log_states(self, start, chunk)

    monkeypatch.setattr(Store, "log_states", counted)
    return reads


def _settled(served: Served, book: Book) -> None:
    """Wait until the service has signed a checkpoint of the whole log (the store stops changing)."""
    with Store(book.db, readonly=True) as store:
        size = store.size()
    deadline = time.monotonic() + 20
    while served.ledger.checkpoint is None or served.ledger.checkpoint[0] != size:
        assert time.monotonic() < deadline, "no checkpoint of the whole log"
        time.sleep(0.02)


def test_the_page_is_built_again_only_once_the_store_changed(served: Served, book: Book,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    book.full_flow(["K1"], at="2026-01-10")
    _settled(served, book)
    reads = _log_reads(monkeypatch)
    with served.client() as http:
        first, again = http.get("/"), http.get("/")
        assert first.status_code == again.status_code == 200 and again.content == first.content
        assert reads == [0]  # the second GET read no log: the page built for this store was served again
        earlier = http.get("/", params={"until": "2026-01-10T12:00:00Z"})
        assert reads == [0, 0]  # another `until`, another page
        assert http.get("/").content == first.content and reads == [0, 0]
        book.record("fabricated", "tsmc", ["K2"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
                    ok=True)
        _settled(served, book)
        grown = http.get("/")
        assert reads == [0, 0, 0] and _data(grown.text)["serials"] == ["K1", "K2"]
        monkeypatch.setattr(page_cache, "MAX_AGE_S", 0.0)  # a page as of now ages: made again once too old
        assert http.get("/").status_code == 200 and reads == [0, 0, 0, 0]
    assert earlier.status_code == 200 and _data(earlier.text)["serials"] == ["K1"]


def test_pages_being_built_leave_the_other_reads_free(served: Served, book: Book,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Many `GET /` at once (each `until` a page of its own, seconds to build at scale) take one reader's
    slot at the most: the reports and the units are still answered while they wait."""
    book.full_flow(["W1"], at="2026-01-10")
    _settled(served, book)
    release = threading.Event()
    built = visual.build

    def slow(*args: object, **kwargs: object) -> object:
        release.wait(30)
        return built(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(visual, "build", slow)
    with served.client() as http, ThreadPoolExecutor(8) as pool:
        pages = [pool.submit(http.get, "/", params={"until": f"2026-01-{day:02d}"}) for day in range(11, 19)]
        time.sleep(0.5)  # the builds have begun, and wait
        try:
            assert not any(page.done() for page in pages)
            assert http.get("/v1/reports/duty", timeout=10).status_code == 200
            assert http.get("/v1/units/W1", timeout=10).status_code == 200
        finally:
            release.set()
        assert all(page.result().status_code == 200 for page in pages)
