"""Running the service on uvicorn, with the connection limits DESIGN.md "Limits" asks for.

uvicorn closes an idle kept-alive connection, but a client that opens a connection and sends its request
line and headers a byte at a time is never cut off. `GuardedH11` (uvicorn's h11 protocol, chosen through
its documented `http` setting) gives every request `HEADER_TIMEOUT_S` to arrive whole from the moment the
connection is ready for it; the body has its own deadline in the app (`app.BODY_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # a request line and headers that have not arrived by then: the connection is closed
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this long
MAX_HEADER_BYTES = 16 * 1024  # h11 refuses a request line and headers larger than this (431)
BACKLOG = 2048  # connections the kernel holds until they are accepted (uvicorn's default)
# uvicorn's limit on open connections (idle kept-alive ones included) and requests at once, beyond which it
# answers a plain-text 503 itself: above the app's own cap on requests in progress (`app.MAX_REQUESTS`, a JSON
# 503 `unavailable`), so that a full service answers as DESIGN.md says while the connections are not many more
MAX_CONNECTIONS = 8192


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers do not arrive in time."""

    _deadline: asyncio.TimerHandle | None = None
    _requests = 0

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        seen = self._requests
        self._deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._cut_off, seen)

    def _cut_off(self, seen: int) -> None:
        self._deadline = None
        if self._requests == seen and not self.transport.is_closing():
            self.transport.close()  # still waiting for a request's headers: a slow client

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and self.cycle is not None:
            self._requests += 1  # a request's headers arrived whole

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


def config(app: Any, **options: Any) -> uvicorn.Config:
    """The uvicorn settings `custody serve` runs with (tests run the same)."""
    return uvicorn.Config(app, http=GuardedH11, log_level="warning", access_log=False, lifespan="on",
                          timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                          server_header=False, limit_concurrency=MAX_CONNECTIONS, **options)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); `OSError` if it cannot be had."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    # Listen at once: a client that connects while the app starts up (its first checkpoint may take a
    # while) waits in the backlog instead of being refused.
    sock.listen(BACKLOG)
    return sock
