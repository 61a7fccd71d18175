"""Where a ledger lives: a file path (SQLite) or `postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]`.

On PostgreSQL a missing password is left to libpq (`PGPASSWORD`, `PGPASSFILE`, `~/.pgpass`); libpq
parameters may follow in the query. Messages show a URL only through `redact`, never its password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from ledger.errors import StoreError

_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_LIBPQ_PARAMETERS = frozenset({  # passed through to libpq from the URL's query
    "host", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "channel_binding", "gssencmode",
    "application_name", "connect_timeout", "passfile", "target_session_attrs",
})
_URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]"


@dataclass(frozen=True)
class PostgresTarget:
    """A parsed PostgreSQL URL. `None` leaves the value to libpq (PGUSER, PGPORT, PGPASSWORD, ~/.pgpass)."""

    host: str
    dbname: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    schema: str = "public"
    parameters: tuple[tuple[str, str], ...] = ()

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq connection parameters; absent ones are not passed, so libpq's own defaults apply."""
        kwargs: dict[str, Any] = {"host": self.host, "dbname": self.dbname}
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.port is not None:
            kwargs["port"] = self.port
        kwargs.update(self.parameters)
        # the views are plain tables in the ledger's schema: name it once per connection, not per query
        kwargs["options"] = f'-c search_path="{self.schema}"'
        return kwargs


def is_postgres(url: str) -> bool:
    """Whether `url` names a PostgreSQL database (anything else is an SQLite file path)."""
    return url.startswith(("postgresql://", "postgres://"))


def parse_postgres_url(url: str) -> PostgresTarget:
    """Parse `postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME[?schema=NAME]` (libpq parameters may follow)."""
    shown = redact(url)

    def bad(why: str) -> StoreError:
        return StoreError(f"bad database URL {shown}: {why}")

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise bad(str(e)) from e
    if parts.scheme not in ("postgresql", "postgres"):
        raise bad(f"use {_URL_FORM}")
    host = unquote(parts.hostname or "")
    dbname = unquote(parts.path[1:])
    schema = "public"
    parameters: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "schema":
            if not _SCHEMA.fullmatch(value):
                raise bad(f"schema must match {_SCHEMA.pattern}")
            schema = value
        elif key == "password":
            raise bad("give the password before the @, in PGPASSWORD or in ~/.pgpass, not in the query")
        elif key in _LIBPQ_PARAMETERS:
            parameters[key] = value
        else:
            raise bad(f"unknown parameter {key!r} (known: schema, {', '.join(sorted(_LIBPQ_PARAMETERS))})")
    host = parameters.pop("host", host)
    if not host or not dbname or "/" in dbname or parts.fragment:
        raise bad(f"use {_URL_FORM}")
    return PostgresTarget(host=host, dbname=dbname, user=unquote(parts.username) if parts.username else None,
                          password=unquote(parts.password) if parts.password else None, port=port,
                          schema=schema, parameters=tuple(sorted(parameters.items())))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if not is_postgres(url):
        return url
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return url.split("@", 1)[-1] if "@" in url else url
    if has_password:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:***@{hostport}")
    query = "&".join("password=***" if item.split("=", 1)[0] == "password" else item
                     for item in parts.query.split("&"))
    return urlunsplit(parts._replace(query=query))
