"""The one seam to the database: `eventsourcing` recorders for events, plain SQL for the views.

`Store(url)` opens a ledger: an SQLite file (`ledger.store.sqlite`, the embedded default) or a
PostgreSQL schema (`ledger.store.postgres`, for multi-party deployments), each a subclass of
`ledger.store.base.Store` over that database's `eventsourcing` recorder. `protocol.LedgerStore` is
what the rest of the library may use; `codec` is the stored form of the events, shared by both;
`application` reads them back as aggregates through the library's own repository.
"""

from ledger.store.address import PostgresTarget, is_postgres, parse_postgres_url, redact
from ledger.store.base import DEFAULT_DB, LogEvent, Store, lock_timeout
from ledger.store.codec import blob, unblob

__all__ = ["DEFAULT_DB", "LogEvent", "PostgresTarget", "Store", "blob", "is_postgres", "lock_timeout",
           "parse_postgres_url", "redact", "unblob"]
