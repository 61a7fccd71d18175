"""Witnessing over HTTP: the witness's ASGI app (c2sp.org/tlog-witness `add-checkpoint`), and the log's
`POST /v1/cosignatures` route (`cosignatures_route`, for `custody serve`).

`POST /add-checkpoint` hands the body to `ledger.witness.Witness` and maps its answer to the spec's
status codes: 200 with the cosignature line(s) (`text/plain; charset=utf-8`), 400, 403, 404, 409 with
the latest cosigned size and a newline as `text/x.tlog.size` (exactly that Content-Type), 422. Other
errors are one line of text too. Bodies are bounded before they are read whole (413) and must arrive
within `body_timeout` seconds (408), so a slow client cannot hold a worker. `GET /` names the witness
and the logs it follows. Everything else is 404 (405 for a wrong method).

`POST /v1/cosignatures` (DESIGN.md "The ledger service") answers 200 `{"stored": n}` or 422
`{"error": "cosignature", "detail": …}` from `Witnessing.accept`; 413 `usage` past
`witnessing.MAX_COSIGNATURE_BODY` bytes, 503 `unavailable` when the store fails.
"""

from __future__ import annotations

import asyncio
import base64

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ledger.errors import CosignatureMissing, LedgerError, OldSizeConflict, StoreError, WitnessRefused
from ledger.witness import ADD_CHECKPOINT_PATH, MAX_REQUEST_BYTES, TLOG_SIZE_MEDIA_TYPE, Witness
from ledger.witnessing import MAX_COSIGNATURE_BODY, Witnessing

COSIGNATURES_PATH = "/v1/cosignatures"  # DESIGN.md "The ledger service"

BODY_TIMEOUT = 10.0  # seconds for a whole request body to arrive
TEXT = "text/plain; charset=utf-8"


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (`_TooLarge`) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _text(message: str, status: int) -> Response:
    return PlainTextResponse(" ".join(message.split()) + "\n", status_code=status)


def witness_app(witness: Witness, *, max_body: int = MAX_REQUEST_BYTES,
                body_timeout: float = BODY_TIMEOUT) -> Starlette:
    """The ASGI application for `witness`."""

    async def add_checkpoint(request: Request) -> Response:
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_body(request, max_body)
        except _TooLarge:
            return _text(f"the request body is larger than {max_body} bytes", 413)
        except TimeoutError:
            return _text(f"the request body did not arrive within {body_timeout:g} seconds", 408)
        try:
            cosignature = await run_in_threadpool(witness.add_checkpoint, body)
        except OldSizeConflict as e:
            return Response(f"{e.latest}\n", status_code=409, headers={"content-type": TLOG_SIZE_MEDIA_TYPE})
        except WitnessRefused as e:
            return _text(e.detail, e.status)
        except LedgerError as e:
            return _text(f"the witness cannot answer now: {e.detail}", 503)
        return Response(cosignature.lines, status_code=200, media_type=TEXT)

    async def about(request: Request) -> Response:
        key = base64.b64encode(witness.public_key).decode("ascii")
        logs = "".join(f"log {origin}\n" for origin in witness.origins)
        return Response(f"witness {witness.name}\nkey {key}\n{logs}", media_type=TEXT)

    return Starlette(routes=[Route(ADD_CHECKPOINT_PATH, add_checkpoint, methods=["POST"]),
                             Route("/", about, methods=["GET"])])


def _error(status: int, check: str, detail: str, **headers: str) -> Response:
    return JSONResponse({"error": check, "detail": detail}, status_code=status, headers=headers or None)


def cosignatures_route(witnessing: Witnessing, *, body_timeout: float = BODY_TIMEOUT) -> Route:
    """`POST /v1/cosignatures` for the ledger service, over `witnessing`."""

    async def cosignatures(request: Request) -> Response:
        try:
            async with asyncio.timeout(body_timeout):
                body = await _read_body(request, MAX_COSIGNATURE_BODY)
        except _TooLarge:
            return _error(413, "usage", f"a cosigned checkpoint is at most {MAX_COSIGNATURE_BODY} bytes")
        except TimeoutError:
            return _error(408, "usage", f"the body did not arrive within {body_timeout:g} seconds")
        try:
            accepted = await run_in_threadpool(witnessing.accept, body)
        except CosignatureMissing as e:
            return _error(422, "cosignature", e.detail)
        except StoreError as e:
            return _error(503, "unavailable", e.detail, **{"Retry-After": "1"})
        except LedgerError as e:
            return _error(422, "cosignature", e.detail)
        return JSONResponse({"stored": accepted.stored})

    return Route(COSIGNATURES_PATH, cosignatures, methods=["POST"])
