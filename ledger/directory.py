"""The ledger's key directory: which key a key id names, and whose key it is."""

from __future__ import annotations

from pathlib import Path

from ledger import keys, views
from ledger.errors import LedgerError, NotFound
from ledger.store import Store


def resolve_key(store: Store, target: str, now_us: int) -> bytes:
    """The public key that `target` names: a public-key file, else a key id the ledger knows."""
    path = Path(target)
    if path.exists():
        return keys.load_public(path)
    info = views.current(store, now_us).keys.get(target.lower())
    if info is None:
        raise NotFound(f"{target!r} is neither a public key file nor a key id known to the ledger")
    return info.public


def owner(store: Store, kid: str) -> str | None:
    """`authority` for a genesis authority's key, the participant id for a registered key, else None."""
    info = views.load_full(store).keys.get(kid)
    if info is None:
        return None
    return "authority" if info.authority else info.participant


def owner_in(url: str, kid: str) -> str | None:
    """`owner` in the ledger at `url`, or None when there is no readable ledger there to ask."""
    try:
        store = Store(url, readonly=True)
    except LedgerError:
        return None
    try:
        return owner(store, kid)
    except LedgerError:
        return None
    finally:
        store.close()
