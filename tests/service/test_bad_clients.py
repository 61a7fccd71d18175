"""Bad clients: each gets its status and a JSON error (or is cut off), the server stays up, nothing is written."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger import keys
from ledger.append import now_us, sign_statement
from ledger.service import app as service_app
from ledger.service import server as service_server
from ledger.service.submission import Ledger
from ledger.statement import ZERO_HASH
from tests.conftest import Ledger as Book
from tests.service.conftest import Running, Served

STATEMENT = {"Content-Type": "application/vnd.custody.statement"}


@pytest.fixture
def quick(book: Book, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The service with short deadlines, so that slow clients are cut off within the test."""
    monkeypatch.setattr(service_app, "BODY_TIMEOUT_S", 0.5)
    monkeypatch.setattr(service_server, "HEADER_TIMEOUT_S", 0.5)
    with Served(book.db, Path(book.key("operator"))) as server:
        yield server


def raw(url: str, request: bytes, *, pause: float = 0.0, then: bytes = b"") -> bytes:
    """Send `request` on a bare socket (and `then` after `pause`); everything the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        if pause:
            time.sleep(pause)
            with contextlib.suppress(OSError):
                sock.sendall(then)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def log_size(http: httpx.Client) -> int:
    return int(http.post("/v1/heads", json={"serials": []}).json()["log_size"])


def test_bad_clients_get_json_errors_and_change_nothing(quick: Served, book: Book) -> None:
    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    good = sign_statement(fab, origin="custody.test/h200-cn", kind="fabricated", at=now_us(),
                          units=[("G1", ZERO_HASH)], data={"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})
    foreign = sign_statement(fab, origin="custody.test/other", kind="fabricated", at=now_us(),
                             units=[("G2", ZERO_HASH)], data={"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})
    with quick.client() as http:
        assert http.post("/v1/statements", content=good.wire, headers=STATEMENT).status_code == 200
        before = log_size(http)

        def refused(response: httpx.Response, status: int, check: str) -> None:
            assert response.status_code == status, response.text
            assert response.headers["content-type"] == "application/json"
            assert response.json()["error"] == check and response.json()["detail"]

        # oversized: refused on the declared length, before the body is read
        answer = raw(quick.url, b"POST /v1/heads HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b'Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{"serials": [')
        assert answer.startswith(b"HTTP/1.1 413") and b'"error":"usage"' in answer
        answer = raw(quick.url, b"POST /v1/statements HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                                b"application/vnd.custody.statement\r\nContent-Length: 65536\r\n\r\n\x92")
        assert answer.startswith(b"HTTP/1.1 413") and b'"error":"encoding"' in answer

        # oversized without a declared length (chunked): cut off once past the limit
        def flood() -> Iterator[bytes]:
            for _ in range(40):
                yield b"x" * 65536

        for path, headers, check in (("/v1/heads", {"Content-Type": "application/json"}, "usage"),
                                     ("/v1/statements", STATEMENT, "encoding")):
            # answered 413 and closed while the client was still sending: cut off either way
            with contextlib.suppress(httpx.TransportError):
                refused(http.post(path, content=flood(), headers=headers), 413, check)
        answer = raw(quick.url, b"POST /v1/heads HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b"Content-Length: x2\r\n\r\n{}")
        assert answer.startswith(b"HTTP/1.1 400")  # h11 refuses it before the app sees it

        # slow body, slow headers: cut off
        answer = raw(quick.url, b"POST /v1/heads HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                b'Content-Length: 30\r\n\r\n{"ser',
                     pause=1.5, then=b'ials": []}')
        assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer
        started = time.monotonic()
        answer = raw(quick.url, b"GET /checkpoint HTTP/1.1\r\nHost:", pause=0.1, then=b" x")
        assert answer == b"" and time.monotonic() - started < 5

        # malformed, replayed, foreign
        for junk in (b"", b"\xc1", b"\x92\xc4\x00\xc4\x40" + bytes(64), good.wire + b"\x00", good.wire[:-1]):
            refused(http.post("/v1/statements", content=junk, headers=STATEMENT), 400, "encoding")
        replay = http.post("/v1/statements", content=good.wire, headers=STATEMENT)
        assert replay.status_code == 200 and replay.json()["index"] == before - 1
        refused(http.post("/v1/statements", content=foreign.wire, headers=STATEMENT), 422, "origin")

        # heads: too many serials, bad serials, not JSON
        refused(http.post("/v1/heads", json={"serials": [f"S{i}" for i in range(10_001)]}), 400, "usage")
        refused(http.post("/v1/heads", json={"serials": ["bad serial"]}), 400, "usage")
        refused(http.post("/v1/heads", json={"serials": [1]}), 400, "usage")
        refused(http.post("/v1/heads", json=["S1"]), 400, "usage")
        refused(http.post("/v1/heads", content=b"\xff\xfe"), 400, "usage")
        assert http.post("/v1/heads", json={"serials": [f"S{i}" for i in range(10_000)]}).status_code == 200

        # unknown routes, wrong methods, bad queries
        refused(http.get("/v2/statements"), 404, "usage")
        refused(http.get("/tile/0/x/y"), 404, "usage")
        refused(http.get("/v1/statements"), 405, "usage")
        refused(http.delete("/checkpoint"), 405, "usage")
        refused(http.post("/tile/0/000"), 405, "usage")
        refused(http.get("/v1/proofs/consistency", params={"from": 0, "to": 3}), 400, "usage")
        refused(http.get("/v1/proofs/consistency", params={"from": 4, "to": 3}), 400, "usage")
        refused(http.get("/v1/proofs/consistency", params={"from": "x", "to": 3}), 400, "usage")
        refused(http.get("/v1/proofs/consistency", params={"from": 1, "to": 10**6}), 404, "usage")
        assert http.get("/v1/proofs/consistency", params={"from": 3, "to": 3}).json() == {"proof": []}
        refused(http.get("/v1/units/G1", params={"at": "yesterday"}), 400, "usage")
        refused(http.get("/v1/units/NOPE"), 404, "usage")
        refused(http.get("/v1/reports/nothing"), 404, "usage")
        refused(http.post("/v1/statements", content=good.wire, headers=STATEMENT, params={"x": "1"}), 400, "usage")

        # still up, and nothing written
        assert http.get("/checkpoint").status_code == 200
        assert log_size(http) == before


def test_a_full_service_answers_503_with_retry_after(book: Book) -> None:
    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    statements = [sign_statement(fab, origin="custody.test/h200-cn", kind="fabricated", at=now_us(),
                                 units=[(f"W{i}", ZERO_HASH)],
                                 data={"model": "H200-SXM5-141GB", "site": "F", "lot": "L"}) for i in range(2)]
    # the writer held up (a slow store): the first submission waits (and gives up after a second), the
    # second finds the service full
    import threading

    held = threading.Event()
    with Served(book.db, Path(book.key("operator")), checkpoint_every=3600, max_waiting=1,
                wait_timeout=1.0) as server, server.client() as http:
        append = server.ledger._append
        server.ledger._append = lambda group, started: held.wait(10) and append(group, started)  # type: ignore[method-assign]
        first: dict[str, httpx.Response] = {}
        waiter = threading.Thread(target=lambda: first.setdefault("r", http.post(
            "/v1/statements", content=statements[0].wire, headers=STATEMENT)))
        waiter.start()
        time.sleep(0.3)
        full = http.post("/v1/statements", content=statements[1].wire, headers=STATEMENT)
        waiter.join()
        held.set()
        assert full.status_code == 503 and full.headers["retry-after"] and full.json()["error"] == "unavailable"
        assert first["r"].status_code == 503 and first["r"].json()["error"] == "unavailable"


def test_requests_past_the_cap_get_a_json_503_before_uvicorns_limit(book: Book) -> None:
    """DESIGN.md "when the service is full": 503 `unavailable` with Retry-After, JSON like every error, from
    the app's own cap on requests in progress (uvicorn's plain-text 503 is set further off)."""
    assert service_server.config(object()).limit_concurrency > service_app.MAX_REQUESTS
    operator = keys.load_private(Path(book.key("operator")), lambda: None)
    ledger = Ledger(book.db, operator, checkpoint_every=0.05)
    try:
        with Running(service_app.build_app(ledger, max_requests=2)) as server:
            host, port = server.url.removeprefix("http://").split(":")
            slow = []
            for _ in range(2):  # two requests in progress: each waits for the rest of its body
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(b"POST /v1/heads HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                             b'Content-Length: 15\r\n\r\n{"seri')
                slow.append(sock)
            time.sleep(0.3)
            with server.client() as http:
                full = http.get("/checkpoint")
                assert full.status_code == 503, full.text
                assert full.headers["content-type"] == "application/json" and full.headers["retry-after"] == "1"
                assert full.json()["error"] == "unavailable" and "full" in full.json()["detail"]
                for sock in slow:  # they finish, and make room
                    sock.sendall(b'als": []}')
                    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
                    sock.close()
                assert http.get("/checkpoint").status_code == 200
    finally:
        ledger.close()
