"""Shared fixtures: the shared vectors, a CLI runner, stores on both backends, a populated ledger."""

from __future__ import annotations

import gc
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from typer.testing import CliRunner

from commands.main import app
from ledger import keys

ROOT = Path(__file__).resolve().parents[1]  # the project
SHARED = Path(os.environ.get("CUSTODY_SHARED") or ROOT.parent / "shared")  # design, vectors, EPCIS schema
PG_ENV = "CUSTODY_TEST_PG"  # e.g. postgresql://postgres@127.0.0.1:5432/test; set by .ci/run
ORIGIN = "custody.test/h200-cn"
PARTICIPANTS = {  # name: (id, role, country)
    "tsmc": ("tsmc", "fab", "TW"),
    "kerry": ("kerry", "carrier", "US"),
    "uslab": ("uslab", "inspector", "US"),
    "cbp": ("cbp", "customs", "US"),
    "nvidia": ("nvidia", "exporter", "US"),
    "alibaba": ("alibaba", "customer", "CN"),
    "bytedance": ("bytedance", "customer", "CN"),
}


@pytest.fixture(scope="session", autouse=True)
def fast_cli() -> Iterator[None]:
    """Build the Click command from the Typer app once, not on every `CliRunner.invoke`.

    Typer rebuilds it per call (two thirds of a small command's time in these tests); the command is
    stateless, so reusing it changes nothing but the speed. Without that private hook, nothing changes.
    """
    original = getattr(typer.testing, "_get_command", None)
    if original is None:
        yield
        return
    cache: dict[int, Any] = {}

    def cached(app: Any) -> Any:
        if id(app) not in cache:
            cache[id(app)] = original(app)
        return cache[id(app)]

    typer.testing._get_command = cached  # type: ignore[attr-defined]
    try:
        yield
    finally:
        typer.testing._get_command = original  # type: ignore[attr-defined]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI the shared vectors must be there: a run that silently skipped them would pass for nothing."""
    if os.environ.get("CI") == "true" and not SHARED.is_dir():
        raise pytest.UsageError(f"CI=true but the shared vectors are absent ({SHARED}); set CUSTODY_SHARED")


def shared_absent() -> str | None:
    """Why tests of the shared vectors skip, or None when they are there."""
    return None if SHARED.is_dir() else f"the shared vectors are absent ({SHARED})"


@pytest.fixture
def shared() -> Path:
    if reason := shared_absent():
        pytest.skip(reason)
    return SHARED


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _postgres_url() -> str | None:
    return os.environ.get(PG_ENV) or None


_SCHEMAS: set[str] = set()  # the URLs of the schemas this session made and has not dropped yet


def new_postgres_schema() -> str:
    """A fresh schema on the test server, so test runs never collide; returns the store URL.

    Every schema made here is dropped: by the test's fixture when it is done with it, and at the latest
    when the session ends (`postgres_schemas_dropped`), so none is left behind on the shared server."""
    import psycopg

    base = _postgres_url()
    assert base is not None
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = f"{base.split('?')[0]}?schema={schema}"
    _SCHEMAS.add(url)
    with psycopg.connect(base.split("?")[0], autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return url


def drop_postgres_schema(url: str, *, wait_s: float = 2) -> bool:
    """Remove a test's schema and everything in it; whether it is gone. A session that still holds a lock
    there (a store a test left open) makes it wait `wait_s` seconds, then give up for now."""
    import psycopg

    base, _, query = url.partition("?schema=")
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"SET lock_timeout = '{int(wait_s * 1000)}ms'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{query}" CASCADE')
    except psycopg.Error:
        return False
    _SCHEMAS.discard(url)
    return True


def postgres_schemas_left() -> list[str]:
    """The schemas this session made that still exist on the server."""
    import psycopg

    base = _postgres_url()
    if base is None or not _SCHEMAS:
        return []
    names = [url.partition("?schema=")[2] for url in _SCHEMAS]
    with psycopg.connect(base.split("?")[0], autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [names]).fetchall()
    return sorted(row[0] for row in rows)


@pytest.fixture(scope="session", autouse=True)
def postgres_schemas_dropped() -> Iterator[None]:
    """At the end of the session, drop every schema a test made and did not drop (module fixtures, a drop
    that had to wait for a store left open), after collecting what still holds connections."""
    yield
    if not _SCHEMAS:
        return
    gc.collect()  # the pools of stores that tests did not close
    for url in sorted(_SCHEMAS):
        for _ in range(3):
            if drop_postgres_schema(url, wait_s=10):
                break
    left = postgres_schemas_left()
    if left:
        raise RuntimeError(f"PostgreSQL schemas left behind: {', '.join(left)}")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One test body, both stores: a file path for SQLite, a fresh schema's URL for PostgreSQL."""
    if request.param == "sqlite":
        yield str(tmp_path / "custody.db")
        return
    if not _postgres_url():
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (set by .ci/run)")
    url = new_postgres_schema()
    request.addfinalizer(lambda: drop_postgres_schema(url))
    yield url


@dataclass
class Ledger:
    """A ledger opened through the CLI, with unencrypted keys in `dir/keys`."""

    dir: Path
    db: str
    runner: CliRunner

    def key(self, name: str) -> str:
        return str(self.dir / "keys" / name)

    def pub(self, name: str) -> str:
        return str(self.dir / "keys" / f"{name}.pub")

    def cli(self, *args: str, ok: bool | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
        result = self.runner.invoke(app, ["--db", self.db, *args], env=env)
        if ok is True:
            assert result.exit_code == 0, (args, result.stdout, result.stderr)
        return result

    def record(self, step: str, signer: str, serials: list[str], *extra: str, ok: bool | None = None):  # type: ignore[no-untyped-def]
        args = ["record", step, "--key", self.key(signer)]
        for s in serials:
            args += ["--serial", s]
        return self.cli(*args, *extra, ok=ok)

    def full_flow(self, serials: list[str], customer: str = "alibaba", *, at: str | None = None) -> None:
        """Take `serials` cleanly through all six steps."""
        when = ["--at", at] if at else []
        self.record("fabricated", "tsmc", serials, "--model", "H200-SXM5-141GB", "--site", "Fab 18",
                    "--lot", "L1", *when, ok=True)
        self.record("shipped-to-us", "kerry", serials, "--port-of-entry", "DFW", "--waybill", "W1", *when,
                    ok=True)
        self.record("inspected", "uslab", serials, "--result", "pass", "--site", "Lab", "--country", "US",
                    "--report", "R1", *when, ok=True)
        value = 20_000 * len(serials)
        self.record("duty-paid", "cbp", serials, "--entry", f"E-{serials[0]}", "--entered-value",
                    f"{value}.00", "--duty", f"{value // 4}.00", *when, ok=True)
        license_ = {"alibaba": "LIC-1", "bytedance": "LIC-2"}.get(customer, "LIC-1")  # the approval's
        self.record("re-exported", "nvidia", serials, "--consignee", customer, "--license", license_,
                    "--destination", "CN", *when, ok=True)
        self.record("received", customer, serials, "--site", "Hangzhou", *when, ok=True)


def make_keys(directory: Path, names: list[str]) -> None:
    for name in names:
        keys.write_keypair(directory, name, keys.generate(), None, comment=name)


def open_ledger(directory: Path, db: str, runner: CliRunner) -> Ledger:
    """An opened ledger with the usual participants and two approved customers (caps 100 and 5)."""
    make_keys(directory / "keys", ["authority", "operator", "rogue", *PARTICIPANTS])
    book = Ledger(directory, db, runner)
    book.cli("init", "--origin", ORIGIN, "--authority", book.key("authority"), "--operator",
             book.pub("operator"), ok=True)
    for name, (pid, role, country) in PARTICIPANTS.items():
        book.cli("participant", "add", pid, "--role", role, "--pubkey", book.pub(name), "--country", country,
                 "--key", book.key("authority"), ok=True)
    book.cli("customer", "approve", "alibaba", "--cap", "100", "--license", "LIC-1", "--key",
             book.key("authority"), ok=True)
    book.cli("customer", "approve", "bytedance", "--cap", "5", "--license", "LIC-2", "--key",
             book.key("authority"), ok=True)
    return book


@pytest.fixture
def ledger(tmp_path: Path, runner: CliRunner, db_url: str) -> Ledger:
    """The usual ledger (`open_ledger`) on each store."""
    return open_ledger(tmp_path, db_url, runner)


@pytest.fixture
def sqlite_ledger(tmp_path: Path, runner: CliRunner) -> Ledger:
    """The same ledger on SQLite only, for tests that edit the database file directly."""
    return open_ledger(tmp_path, str(tmp_path / "custody.db"), runner)


EPCIS_SCHEMA = SHARED / "epcis" / "EPCIS-JSON-Schema.json"

# jsonschema checks "uri" and "date-time" only with optional packages; these stand-ins keep the formats
# checked whatever is installed (RFC 3986 absolute URI characters, RFC 3339 with an offset).
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]]|%[0-9A-Fa-f]{2})*")
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _DATE_TIME.fullmatch(value) is None:
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@pytest.fixture(scope="session")
def epcis_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    if not EPCIS_SCHEMA.exists():
        pytest.skip(f"no EPCIS schema at {EPCIS_SCHEMA}")
    schema = json.loads(EPCIS_SCHEMA.read_text(encoding="utf-8"))
    checker = jsonschema.FormatChecker()
    checker.checks("uri", raises=ValueError)(lambda v: not isinstance(v, str) or bool(_URI.fullmatch(v)))
    checker.checks("date-time", raises=ValueError)(_is_date_time)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=checker)


def schema_errors(validator: Any, document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
