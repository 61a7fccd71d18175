"""The ledger service as an ASGI application (Starlette): DESIGN.md "The ledger service".

Routes: `GET /` (the visual report), `POST /v1/statements`, `POST /v1/heads`, `GET /v1/units/{serial}[/proof]`,
`GET /v1/reports/{name}`, `GET /v1/proofs/consistency`, and the C2SP tlog-tiles resources at the root
(`/checkpoint`, `/tile/…`), with `/openapi.json` describing them all. Responses are JSON (but the page);
an error is `{"error": CHECK, "detail": TEXT}` plus the fields DESIGN.md names. Every request body is bounded
(1 MiB, a statement 65,535 bytes) and must arrive within `BODY_TIMEOUT_S`; store reads run in threads, a few
at a time, and never read the whole log for a tile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ledger import proof as proofs
from ledger import reports, visual, visual_html
from ledger.append import now_us
from ledger.errors import (
    BadInput,
    ChainBroken,
    EncodingInvalid,
    IntegrityError,
    NotFound,
    Refused,
    StoreError,
    ViewsDisagree,
    ViolationsFound,
)
from ledger.heads import Head, log_heads
from ledger.history import document as history_document
from ledger.history import unit_history
from ledger.service import openapi
from ledger.service.page_cache import PageCache
from ledger.service.submission import Covered, Failed, Ledger, Pending
from ledger.service.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, parse_tile_path
from ledger.statement import decode, valid_id
from ledger.store import Store
from ledger.values import format_time, parse_time
from ledger.witness_app import cosignatures_route
from ledger.witnessing import WitnessConfig, Witnessing

MAX_BODY = 1 << 20  # DESIGN.md "Limits": a body over 1 MiB is refused (413) before it is read whole
MAX_STATEMENT = MAX_ENTRY_SIZE  # DESIGN.md "Size": a wire form is at most 65,535 bytes (413 `encoding`)
MAX_HEADS = 10_000  # DESIGN.md: at most 10,000 serials in one heads request
BODY_TIMEOUT_S = 10.0  # a body that has not arrived whole by then is cut off (slow clients)
READERS = 4  # store reads at once (each may fold the views)
RETRY_AFTER_S = 1
MAX_REQUESTS = 4096  # requests in progress at once; beyond, 503 `unavailable` (uvicorn's own limit is above it)
STATEMENT_TYPE = "application/vnd.custody.statement"
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"  # c2sp.org/tlog-proof: the receipt's first line
IMMUTABLE = "public, max-age=31536000, immutable"  # DESIGN.md: full tiles never change
PARTIAL = "public, max-age=86400"  # a partial tile never changes either, but the full one supersedes it

_ENCODE = msgspec.json.Encoder().encode


class ApiError(Exception):
    """An answer other than 200: status, DESIGN's check name, a detail and extra fields."""

    def __init__(self, status: int, check: str, detail: str, headers: dict[str, str] | None = None,
                 **fields: Any) -> None:
        super().__init__(detail)
        self.status, self.check, self.detail, self.headers, self.fields = status, check, detail, headers, fields


def json_response(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_ENCODE(document), status, headers, media_type="application/json")


def error_response(e: ApiError) -> Response:
    return json_response({"error": e.check, "detail": e.detail, **e.fields}, e.status, e.headers)


def unavailable(detail: str) -> ApiError:
    return ApiError(503, "unavailable", detail, {"Retry-After": str(RETRY_AFTER_S)})


class Capacity:
    """ASGI middleware: at most `limit` requests in progress; beyond, DESIGN.md's 503 `unavailable` with
    `Retry-After` ("the service is full"), as JSON like every other error. uvicorn's `limit_concurrency`
    (`server.MAX_CONNECTIONS`) is set above it, so its plain-text 503 comes only past that many
    connections, idle kept-alive ones included."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int = MAX_REQUESTS) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0  # changed on the event loop only

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            full = unavailable(f"the service is full: {self.in_flight} requests in progress; try again")
            await error_response(full)(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class Service:
    """The routes over one `Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._readers = asyncio.Semaphore(READERS)
        self.pages = PageCache(_build_page)
        self._page_turn = asyncio.Lock()  # pages are built one at a time: one reader's slot at the most

    # --- helpers --------------------------------------------------------------------------------------

    async def read(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a store read in a thread, a few at a time; library errors become answers."""
        async with self._readers:
            try:
                return await run_in_threadpool(func, *args, **kwargs)
            except NotFound as e:
                raise ApiError(404, "usage", e.detail) from None
            except StoreError as e:
                raise unavailable(e.detail) from None
            except IntegrityError as e:
                raise ApiError(500, e.check, str(e)) from None

    async def body(self, request: Request, limit: int, what: str = "usage") -> bytes:
        """The request body, refused (413) past `limit` before it is read whole, cut off when slow."""
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "usage", "Content-Length is not a number")
            if int(length) > limit:
                raise ApiError(413, what, f"the body is {length} bytes, more than the {limit} accepted")
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                async for chunk in request.stream():
                    total += len(chunk)
                    if total > limit:
                        raise ApiError(413, what, f"the body is more than the {limit} bytes accepted",
                                       {"Connection": "close"})
                    chunks.append(chunk)
        except TimeoutError:
            raise ApiError(408, "usage", f"the body did not arrive within {BODY_TIMEOUT_S:g} s",
                           {"Connection": "close"}) from None
        return b"".join(chunks)

    @staticmethod
    def query(request: Request, allowed: Sequence[str]) -> dict[str, str]:
        params = request.query_params
        extra = [k for k in params if k not in allowed]
        if extra:
            raise ApiError(400, "usage", f"unknown query parameter {extra[0][:40]!r}"
                           + (f" (known: {', '.join(allowed)})" if allowed else ""))
        for k in allowed:
            if len(params.getlist(k)) > 1:
                raise ApiError(400, "usage", f"query parameter {k!r} given twice")
        return {k: params[k] for k in allowed if k in params}

    @staticmethod
    def time_param(params: dict[str, str], name: str) -> int | None:
        if name not in params:
            return None
        try:
            return parse_time(params[name])
        except BadInput as e:
            raise ApiError(400, "usage", f"{name}: {e.detail}") from None

    # --- submission -----------------------------------------------------------------------------------

    async def statements(self, request: Request) -> Response:
        params = self.query(request, ["findings"])
        findings = params.get("findings", "refuse")
        if findings not in ("refuse", "allow"):
            raise ApiError(400, "usage", f"findings must be refuse or allow, not {findings[:40]!r}")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != STATEMENT_TYPE:
            raise ApiError(400, "usage", f"Content-Type must be {STATEMENT_TYPE}")
        wire = await self.body(request, MAX_STATEMENT, "encoding")
        try:
            statement = decode(wire)
        except EncodingInvalid as e:
            raise ApiError(400, "encoding", e.detail) from None
        ledger = self.ledger
        if ledger.in_flight >= ledger.max_waiting:
            raise unavailable(f"{ledger.in_flight} submissions are waiting for a checkpoint; try again")
        # A wire form already logged is answered as it was the first time, whatever the rules now say:
        # the writer looks it up for every statement the rules refuse, which any logged one is (its units
        # moved on, or it is a replayed administrative statement), so a first submission pays nothing.
        if (ledger.tiles.size or await self.read(ledger.refresh, force=True)) == 0 and (
                statement.kind != "ledger_opened" or statement.data.get("operator") != ledger.operator.public):
            raise ApiError(422, "genesis_trust", "this service holds no ledger yet: it accepts only a "
                           "ledger_opened that names its operator key")
        loop = asyncio.get_running_loop()
        pending = Pending(wire, statement, findings, loop, loop.create_future())
        ledger.in_flight += 1
        try:
            ledger.submit(pending)
            try:
                outcome = await asyncio.wait_for(asyncio.shield(pending.future), ledger.wait_timeout)
            except TimeoutError:
                raise unavailable(f"no checkpoint covered the statement within {ledger.wait_timeout:g} s; "
                                  "submit it again (it is not logged twice)") from None
        finally:
            ledger.in_flight -= 1
        if isinstance(outcome, Failed):
            raise self.refusal(outcome)
        return json_response(self.answer(outcome))

    def answer(self, covered: Covered) -> dict[str, Any]:
        proof = self.ledger.tiles.tree(covered.size).inclusion_proof(covered.index)
        note = self.ledger.decorate(covered.note)
        receipt = "".join([f"{TLOG_PROOF_HEADER}\n", f"index {covered.index}\n",
                           *(f"{_b64(h)}\n" for h in proof), "\n", note])
        return {"index": covered.index, "hash": covered.statement.hash.hex(), "checkpoint": note,
                "inclusion": [h.hex() for h in proof], "receipt": receipt}

    @staticmethod
    def refusal(failed: Failed) -> ApiError:
        e = failed.error
        if failed.unavailable or isinstance(e, ViewsDisagree):  # the views need `replay --rebuild`
            return unavailable(e.detail)
        if isinstance(e, ViolationsFound):
            found = [reports.finding_json(f) for f in e.findings]  # type: ignore[arg-type]
            return ApiError(422, "compliance", e.detail, findings=found)
        if isinstance(e, ChainBroken) and failed.heads:
            heads = {s: h.hex() if h is not None else None for s, h in failed.heads}
            return ApiError(409 if failed.moved else 422, "chain", str(e), heads=heads)
        if isinstance(e, IntegrityError):
            return ApiError(400 if e.check == "encoding" else 422, e.check, str(e))
        if isinstance(e, Refused):  # beyond the writer's bounds: the operator's key as a participant's
            return ApiError(422, getattr(e, "check", "usage"), e.detail)
        if isinstance(e, BadInput):  # beyond the writer's bounds: an amount or an entry's total
            return ApiError(422, "encoding", e.detail)
        return unavailable(e.detail)

    async def heads(self, request: Request) -> Response:
        self.query(request, [])
        raw = await self.body(request, MAX_BODY)
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "usage", "the body is not JSON") from None
        serials = document.get("serials") if isinstance(document, dict) else None
        if not isinstance(document, dict) or set(document) != {"serials"} or not isinstance(serials, list):
            raise ApiError(400, "usage", 'the body must be {"serials": [...]}')
        if len(serials) > MAX_HEADS:
            raise ApiError(400, "usage", f"{len(serials)} serials: at most {MAX_HEADS} in one request")
        bad = next((s for s in serials if not valid_id(s)), None)
        if bad is not None or any(not isinstance(s, str) for s in serials):
            raise ApiError(400, "usage", f"bad serial {str(bad)[:80]!r}")
        size, units = await self.read(self._heads, serials)
        return json_response({
            "log_size": size,
            "heads": {s: units[s].hash.hex() if s in units else None for s in serials},
            "at": {s: format_time(units[s].at) if s in units else None for s in serials}})

    def _heads(self, serials: list[str]) -> tuple[int, dict[str, Head]]:
        """The units' heads as the log has them (`ledger.heads.log_heads`), never a view row: what a client signs
        on must be what the service's writer will check its `prev` against."""
        store = self.ledger.reader()
        if not store.opened:
            return 0, {}
        size = store.size()
        return size, log_heads(store, serials, size)

    # --- reading --------------------------------------------------------------------------------------

    def _opened(self) -> Any:
        store = self.ledger.reader()
        if not store.opened:
            raise NotFound("the log is empty")
        return store

    async def unit(self, request: Request) -> Response:
        serial = request.path_params["serial"]
        at = self.time_param(self.query(request, ["at"]), "at")
        if not valid_id(serial):
            raise ApiError(400, "usage", f"bad serial {serial[:80]!r}")

        def load() -> dict[str, Any]:
            return history_document(unit_history(self._opened(), serial, until=at, now_us=now_us()))

        return json_response(await self.read(load))

    async def unit_proof(self, request: Request) -> Response:
        serial = request.path_params["serial"]
        self.query(request, [])
        if not valid_id(serial):
            raise ApiError(400, "usage", f"bad serial {serial[:80]!r}")

        def load() -> bytes:
            current = self.ledger.checkpoint  # none yet: an empty note, which covers nothing (Refused)
            held = proofs.HeldLog(current[1] if current else "", self._tree, self.ledger.tiles.admin_below)
            try:
                # the unit's rows only: the tree and the administrative statements are the service's tiles
                return proofs.build_proof(self._opened(), serial, now_us=now_us(), held=held).encode()
            except Refused as e:
                raise StoreError(e.detail) from None

        return Response(await self.read(load), media_type="application/json")

    def _tree(self, size: int) -> Any:
        """The log's tree at `size` from the tiles, brought up to the store first if they hold less."""
        tiles = self.ledger.tiles
        if size > tiles.size:
            self.ledger.refresh(force=True)
        if size > tiles.size:
            raise StoreError(f"the log holds {tiles.size} statements, not the checkpoint's {size}")
        return tiles.tree(size)

    async def report(self, request: Request) -> Response:
        name = request.path_params["name"]
        until = self.time_param(self.query(request, ["until"]), "until")
        if name not in reports.REPORTS:
            raise ApiError(404, "usage", f"unknown report {name[:40]!r}: use {', '.join(reports.REPORTS)}")

        def load() -> dict[str, Any]:
            return reports.of_store(self._opened(), name, until=until, now_us=now_us()).document

        return json_response(await self.read(load))

    async def page(self, request: Request) -> Response:
        """`GET /`: the visual report (`report html`), live. Building it verifies the whole log, in this
        process (no worker processes forked beside the server's threads); the page is kept and served again
        until the store changes (`page_cache`)."""
        until = self.time_param(self.query(request, ["until"]), "until")

        def load() -> bytes:
            return self.pages.page(self._opened(), until)

        async with self._page_turn:  # the others wait here, not in a reader's slot that tiles and reports need
            page = await self.read(load)
        return Response(page, headers={"Cache-Control": "no-cache"}, media_type="text/html; charset=utf-8")

    async def consistency(self, request: Request) -> Response:
        params = self.query(request, ["from", "to"])
        sizes = []
        for name in ("from", "to"):
            value = params.get(name)
            if value is None or not value.isdigit() or len(value) > 20:
                raise ApiError(400, "usage", f"{name} must be a tree size (a decimal number)")
            sizes.append(int(value))
        old, new = sizes
        if old == 0 or old > new:
            raise ApiError(400, "usage", f"no consistency proof from size {old} to size {new}")
        size = await self.read(self.ledger.refresh)
        if new > size:
            raise ApiError(404, "usage", f"the log has {size} statements, not {new}")
        proof: list[bytes] = [] if old == new else self.ledger.tiles.tree(new).consistency_proof(old)
        return json_response({"proof": [h.hex() for h in proof]})

    # --- following: C2SP tlog-tiles -------------------------------------------------------------------

    async def checkpoint(self, request: Request) -> Response:
        current = self.ledger.checkpoint
        if current is None:
            raise ApiError(404, "usage", "the log is empty: no checkpoint yet")
        note = self.ledger.decorate(current[1])
        return Response(note.encode(), headers={"Cache-Control": "no-cache"},
                        media_type="text/plain; charset=utf-8")

    async def tile(self, request: Request) -> Response:
        parsed = parse_tile_path("tile/" + request.path_params["path"])
        if parsed is None:
            raise ApiError(404, "usage", "not a tile path (c2sp.org/tlog-tiles)")
        level, n, width = parsed
        tiles = self.ledger.tiles
        needed = (n * TILE_WIDTH + width) * (1 if level is None else pow(TILE_WIDTH, level))
        if needed > tiles.size:
            await self.read(self.ledger.refresh)
        if level is None:
            data = await self.read(tiles.bundle, self.ledger.reader(), n, width) if needed <= tiles.size else None
        else:
            data = tiles.tile(level, n, width)
        if data is None:
            raise ApiError(404, "usage", "the log does not determine this tile yet")
        cache = IMMUTABLE if width == TILE_WIDTH else PARTIAL
        return Response(data, headers={"Cache-Control": cache}, media_type="application/octet-stream")

    async def openapi_json(self, request: Request) -> Response:
        return json_response(openapi.document())


def _build_page(store: Store, until: int | None) -> str:
    return visual_html.render(visual.build(store, until=until, now_us=now_us(), workers=1))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _wrap(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    async def call(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e)

    return call


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(404, "usage", f"no route {request.url.path[:120]!r}"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return error_response(ApiError(405, "usage", f"method {request.method} is not allowed here"
                                       + (f" (allowed: {allowed})" if allowed else ""), dict(exc.headers or {})))
    return error_response(ApiError(exc.status_code, "usage", str(exc.detail)))


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(500, "unavailable", "internal error"))


def routes(service: Service) -> list[BaseRoute]:
    s = service
    return [
        Route("/", _wrap(s.page), methods=["GET"]),
        Route("/v1/statements", _wrap(s.statements), methods=["POST"]),
        Route("/v1/heads", _wrap(s.heads), methods=["POST"]),
        Route("/v1/units/{serial}", _wrap(s.unit), methods=["GET"]),
        Route("/v1/units/{serial}/proof", _wrap(s.unit_proof), methods=["GET"]),
        Route("/v1/reports/{name}", _wrap(s.report), methods=["GET"]),
        Route("/v1/proofs/consistency", _wrap(s.consistency), methods=["GET"]),
        Route("/checkpoint", _wrap(s.checkpoint), methods=["GET"]),
        Route("/tile/{path:path}", _wrap(s.tile), methods=["GET"]),
        Route("/openapi.json", _wrap(s.openapi_json), methods=["GET"]),
    ]


def build_app(ledger: Ledger, extra_routes: Sequence[BaseRoute] = (), *, manage: bool = True,
              witnesses: Sequence[WitnessConfig] = (), max_requests: int = MAX_REQUESTS) -> Starlette:
    """The ASGI app over `ledger`; `extra_routes` are added; at most `max_requests` in progress (`Capacity`).

    `witnesses` (`--witness`) are pushed each new checkpoint if they have a URL, and their cosignatures
    are accepted on `POST /v1/cosignatures` and served with the checkpoint (`ledger.witnessing`). With
    `manage`, the app starts the ledger's writer thread (and the witnessing thread) on start-up and stops
    them on shutdown.
    """
    service = Service(ledger)
    witnessing = Witnessing(ledger.db, witnesses,
                            proofs=lambda old, new: ledger.tiles.tree(new).consistency_proof(old))
    ledger.on_checkpoint.append(witnessing.on_checkpoint)
    ledger.decorate = witnessing.decorate

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage:
            await run_in_threadpool(ledger.start)
            await run_in_threadpool(witnessing.start)
        try:
            yield
        finally:
            if manage:
                await run_in_threadpool(witnessing.close)
                await run_in_threadpool(ledger.stop)

    app = Starlette(routes=[*routes(service), cosignatures_route(witnessing), *extra_routes], lifespan=lifespan,
                    middleware=[Middleware(Capacity, limit=max_requests)],
                    exception_handlers={404: _not_found, HTTPException: _http_error, Exception: _server_error})
    app.state.service = service
    app.state.witnessing = witnessing
    return app
