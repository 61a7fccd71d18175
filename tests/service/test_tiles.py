"""C2SP tlog-tiles as served, checked by a reader written here from the spec alone (c2sp.org/tlog-tiles).

The reader shares no code with the service: its own path encoding, its own RFC 6962 Merkle Tree Hash,
its own entry-bundle parser. It recomputes the checkpoint's root from the level-0 tiles, every upper tile
from the level below, and every leaf from the entry bundles. Then `verify --ledger` must catch a tile or
an entry altered by a proxy between it and the service.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from typer.testing import CliRunner

from commands.main import app
from ledger import append, keys
from ledger.service.tiles import encode_index, parse_tile_path
from tests.conftest import Ledger as Book
from tests.conftest import open_ledger
from tests.service.conftest import Running, Served

WIDTH = 256


# --- the independent reader ---------------------------------------------------------------------------


def spec_index(n: int) -> str:
    digits = str(n)
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 over already-hashed leaves."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:])).digest()


class SpecReader:
    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def checkpoint(self) -> tuple[str, int, bytes]:
        r = self.http.get("/checkpoint")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        assert "no-cache" in r.headers["cache-control"] or "max-age=0" in r.headers["cache-control"]
        body = r.text.split("\n\n")[0].split("\n")
        return body[0], int(body[1]), base64.b64decode(body[2])

    def fetch(self, path: str) -> bytes:
        r = self.http.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/octet-stream"
        return r.content

    def tiles(self, level: int, size: int) -> list[bytes]:
        """All hashes of `level` that the tree of `size` determines, from its full and partial tiles."""
        count = size // WIDTH ** level
        out: list[bytes] = []
        for n in range(count // WIDTH):
            data = self.fetch(f"/tile/{level}/{spec_index(n)}")
            assert len(data) == WIDTH * 32
            out += [data[i:i + 32] for i in range(0, len(data), 32)]
        width = count % WIDTH
        if width:
            data = self.fetch(f"/tile/{level}/{spec_index(count // WIDTH)}.p/{width}")
            assert len(data) == width * 32
            out += [data[i:i + 32] for i in range(0, len(data), 32)]
        return out

    def entries(self, size: int) -> list[bytes]:
        out: list[bytes] = []
        for n in range((size + WIDTH - 1) // WIDTH):
            width = min(WIDTH, size - n * WIDTH)
            path = f"/tile/entries/{spec_index(n)}" + ("" if width == WIDTH else f".p/{width}")
            data = self.fetch(path)
            at = 0
            while at < len(data):
                length = int.from_bytes(data[at:at + 2], "big")
                out.append(data[at + 2:at + 2 + length])
                at += 2 + length
            assert at == len(data)
            assert len(out) == min(size, (n + 1) * WIDTH)
        return out

    def check(self) -> int:
        _origin, size, root = self.checkpoint()
        leaves = self.tiles(0, size)
        assert len(leaves) == size
        assert mth(leaves) == root, "the level-0 tiles do not give the checkpoint's root"
        below, level = leaves, 1
        while WIDTH ** level <= size:
            hashes = self.tiles(level, size)
            assert hashes == [mth(below[i * WIDTH:(i + 1) * WIDTH]) for i in range(len(below) // WIDTH)]
            below, level = hashes, level + 1
        entries = self.entries(size)
        assert [hashlib.sha256(b"\x00" + e).digest() for e in entries] == leaves
        return size


# --- the tests ----------------------------------------------------------------------------------------


def test_tile_paths_are_the_specs() -> None:
    assert encode_index(1234067) == "x001/x234/067" == spec_index(1234067)
    for n in (0, 5, 999, 1000, 256000, 10**9 + 7):
        assert encode_index(n) == spec_index(n)
        assert parse_tile_path(f"tile/3/{spec_index(n)}") == (3, n, 256)
        assert parse_tile_path(f"tile/entries/{spec_index(n)}.p/17") == (None, n, 17)
    for bad in ("tile/0/x000/001", "tile/0/01", "tile/0/1", "tile/00/000", "tile/64/000", "tile/0/000.p/0",
                "tile/0/000.p/256", "tile/0/000.p/007", "tile/0/000.p", "tile/0/001/000", "tile/-1/000",
                "tile/entries/000.p/", "tile/0/x001", "tile/0/", "tile/entries", "tile/0/000/"):
        assert parse_tile_path(bad) is None, bad


def test_every_tile_is_the_specs(served: Served, book: Book) -> None:
    with served.client() as http:
        reader = SpecReader(http)
        assert reader.check() == 10
        full = http.get("/tile/0/000.p/3")
        assert full.headers["cache-control"].startswith("public")
        for missing in ("/tile/0/000", "/tile/0/000.p/11", "/tile/1/000.p/1", "/tile/entries/000",
                        "/tile/entries/001.p/1", "/tile/0/x000/000", "/tile/0/000.p/0"):
            r = http.get(missing)
            assert r.status_code == 404 and r.json()["error"] == "usage", missing


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Book, Served]]:
    """A SQLite ledger of 600 statements (two full tiles, a partial one, a level-1 tile), served."""
    directory = tmp_path_factory.mktemp("big")
    book = open_ledger(directory, str(directory / "custody.db"), CliRunner())
    from ledger.store import Store

    fab = keys.load_private(Path(book.key("tsmc")), lambda: None)
    with Store(book.db) as store:
        for i in range(590):
            append.record(store, fab, "fabricated", {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"},
                          [f"B{i}"])
    with Served(book.db, Path(book.key("operator"))) as server:
        yield book, server


def test_every_tile_of_a_larger_log_is_the_specs(big: tuple[Book, Served]) -> None:
    _book, served = big
    with served.client() as http:
        reader = SpecReader(http)
        assert reader.check() == 600
        full = http.get("/tile/0/001")
        assert full.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert len(full.content) == 8192
        assert http.get("/tile/0/000.p/200").content == full_tile_prefix(http, 200)
        assert http.get("/tile/1/000.p/2").status_code == 200
        assert http.get("/tile/1/000.p/3").status_code == 404
        assert http.get("/tile/entries/002").status_code == 404


def full_tile_prefix(http: httpx.Client, width: int) -> bytes:
    return http.get("/tile/0/000").content[:width * 32]


class Tamper:
    """A proxy that passes every request to the service, but changes one byte of the resource at `path`."""

    def __init__(self, upstream: str, path: str, offset: int) -> None:
        self.upstream, self.path, self.offset = upstream, path, offset

    def app(self) -> Starlette:
        async def forward(request: Request) -> Response:
            async with httpx.AsyncClient(base_url=self.upstream) as http:
                r = await http.request(request.method, request.url.path, params=request.query_params,
                                       content=await request.body(),
                                       headers={"content-type": request.headers.get("content-type", "")})
            body = r.content
            if request.url.path == self.path:
                body = body[:self.offset] + bytes([body[self.offset] ^ 1]) + body[self.offset + 1:]
            return Response(body, r.status_code, media_type=r.headers.get("content-type"))

        return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


@pytest.mark.parametrize("path, offset, check", [
    ("/tile/0/001", 5 * 32 + 3, "checkpoint_root"),  # a leaf hash in a full tile
    ("/tile/1/000.p/2", 40, "checkpoint_root"),  # a level-1 hash
    ("/tile/0/002.p/88", 0, "checkpoint_root"),  # the partial tile
    ("/tile/entries/001", 150, "signature"),  # inside a statement of a full bundle
    ("/tile/entries/000", 1, "encoding"),  # a length prefix
])
def test_verify_over_http_catches_an_altered_tile_or_entry(big: tuple[Book, Served], path: str, offset: int,
                                                           check: str) -> None:
    book, served = big
    honest = CliRunner().invoke(app, ["verify", "--ledger", served.url, "--json", "--trust", book.pub("authority")])
    assert honest.exit_code == 0, honest.stdout + honest.stderr
    with Running(Tamper(served.url, path, offset).app()) as proxy:
        result = CliRunner().invoke(app, ["verify", "--ledger", proxy.url, "--json"])
    assert result.exit_code == 1, result.stdout + result.stderr
    import json

    failures = json.loads(result.stdout)["failures"]
    assert failures and any(f["check"] in (check, "checkpoint_root") for f in failures), failures
