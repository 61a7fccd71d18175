"""Fixtures for the service tests: a ledger served in-process by uvicorn on a free port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from ledger import keys
from ledger.service import server
from ledger.service.app import build_app
from ledger.service.submission import Ledger
from tests.conftest import Ledger as Book
from tests.conftest import open_ledger

CHECKPOINT_EVERY = 0.05  # seconds: the tests wait for checkpoints, so sign them often


class Running:
    """An ASGI app served by uvicorn in a thread of this process, on a free loopback port, at `url`."""

    def __init__(self, app: object) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(server.config(app))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]


class Served(Running):
    """A `custody serve` of `db` running in this process."""

    def __init__(self, db: str, operator_key: Path, *, checkpoint_every: float = CHECKPOINT_EVERY,
                 **options: object) -> None:
        key = keys.load_private(operator_key, lambda: None)
        self.ledger = Ledger(db, key, checkpoint_every=checkpoint_every, **options)  # type: ignore[arg-type]
        self.app = build_app(self.ledger)
        super().__init__(self.app)

    def __enter__(self) -> Served:
        super().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        super().__exit__()
        self.ledger.close()


@pytest.fixture
def book(tmp_path: Path, db_url: str) -> Book:
    """The usual ledger (participants, two customers) on each store, opened through the CLI."""
    return open_ledger(tmp_path, db_url, CliRunner())


@pytest.fixture
def served(book: Book) -> Iterator[Served]:
    with Served(book.db, Path(book.key("operator"))) as server:
        yield server


@pytest.fixture
def sqlite_served(tmp_path: Path) -> Iterator[Served]:
    """The usual ledger on SQLite only, served: for tests of the HTTP layer, which no store changes."""
    book = open_ledger(tmp_path, str(tmp_path / "custody.db"), CliRunner())
    with Served(book.db, Path(book.key("operator"))) as server:
        yield server
