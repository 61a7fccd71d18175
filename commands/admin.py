"""Administrative statements: `init`, `participant`, `customer`, `policy issue`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from commands import render
from commands._common import (
    DbOption,
    KeyOption,
    LedgerOption,
    PassphraseOption,
    ledger_url,
    load_key,
    open_store,
)
from ledger import append, approvals, directory, keys, limits, policy, values
from ledger.errors import BadInput
from ledger.statement import ROLES

participant_app = typer.Typer(help="Register participants and revoke their keys.", no_args_is_help=True)
customer_app = typer.Typer(help="Approve and suspend customers.", no_args_is_help=True)
policy_app = typer.Typer(help="Issue a new policy version.", no_args_is_help=True)


def _append(db: str | None, key: Path, passphrase_file: Path | None, kind: str, data: Mapping[str, object],
            what: str, ledger: str | None = None) -> None:
    """Sign one administrative statement with `key` and append it (or submit it); say where it went."""
    url = ledger_url(db, ledger)
    signer = load_key(key, passphrase_file)
    if url is not None:
        from ledger.service import client

        with client.connect(url) as service:
            result = client.record(service, signer, kind, data)
    else:
        with open_store(db) as store:
            result = append.record(store, signer, kind, data)
    render.out(f"recorded {what} at index {result.index} ({result.statement.hash.hex()})")


def init(origin: Annotated[str, typer.Option("--origin", help="The ledger's name, e.g. custody.example/h200-cn.")],
         authority: Annotated[Path, typer.Option("--authority", help="The first authority's private key.")],
         operator: Annotated[Path, typer.Option("--operator", help="The log operator's public key.")],
         co_authority: Annotated[list[Path] | None, typer.Option("--co-authority",
                                                                 help="Another authority's public key.")] = None,
         policy_file: Annotated[Path | None, typer.Option("--policy", help="Policy TOML (default: shipped).")] = None,
         passphrase_file: PassphraseOption = None,
         db: DbOption = None,
         ledger: LedgerOption = None) -> None:
    """Open a new ledger: the genesis statement."""
    text = policy.DEFAULT_POLICY_TEXT
    if policy_file is not None:
        text = policy.load_policy_file(policy_file).source
    operator_key = keys.load_public(operator)
    co = [keys.load_public(p) for p in co_authority or []]
    url = ledger_url(db, ledger)
    key = load_key(authority, passphrase_file)
    # every input checked before anything is created or submitted: a failed init leaves nothing behind
    append.genesis(key, origin=origin, co_authorities=co, operator=operator_key, policy_text=text,
                   at=append.now_us())
    if url is not None:
        from ledger.service import client

        with client.connect(url) as service:
            result = client.open_ledger(service, key, origin=origin, co_authorities=co, operator=operator_key,
                                        policy_text=text)
        render.out(f"opened ledger {origin} at {url} ({result.statement.hash.hex()})")
        return
    with open_store(db, create=True) as store:
        result = append.open_ledger(store, key, origin=origin, co_authorities=co, operator=operator_key,
                                    policy_text=text)
        render.out(f"opened ledger {origin} in {store.url} ({result.statement.hash.hex()})")


@participant_app.command("add")
def participant_add(
    participant_id: Annotated[str, typer.Argument(metavar="ID", help="Participant id, e.g. tsmc.")],
    role: Annotated[list[str], typer.Option("--role", help=f"One of {', '.join(ROLES)}; repeatable.")],
    pubkey: Annotated[Path, typer.Option("--pubkey", help="The participant's public key file.")],
    country: Annotated[str, typer.Option("--country", help="ISO 3166 alpha-2.")],
    key: KeyOption,
    name: Annotated[str | None, typer.Option("--name", help="Display name (default: the id).")] = None,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Register a participant, or add a key to one (roles are replaced by the latest)."""
    pid = values.parse_id(participant_id, "participant id")
    bad = [r for r in role if r not in ROLES]
    if bad:
        raise typer.BadParameter(f"unknown role {bad[0]!r}: use {', '.join(ROLES)}", param_hint="--role")
    data = {"id": pid, "name": name or pid, "country": values.parse_country(country),
            "roles": list(dict.fromkeys(role)), "key": keys.load_public(pubkey)}
    _append(db, key, passphrase_file, "participant_registered", data, f"participant {pid}", ledger=ledger)


@participant_app.command("revoke-key")
def revoke_key(
    target: Annotated[str, typer.Argument(metavar="PUBFILE|KEYID", help="The key to revoke.")],
    key: KeyOption,
    at: Annotated[str | None, typer.Option("--at", help="When the revocation takes effect (default: now).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why.")] = "",
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Revoke a key: refused from now on; earlier statements signed at or after --at are flagged."""
    effective = values.parse_time(at) if at else append.now_us()
    if ledger_url(db, ledger) is not None:
        if not Path(target).exists():
            raise BadInput(f"no public key file {target!r}: with --ledger, name the key by its public key file")
        public = keys.load_public(Path(target))
    else:
        with open_store(db, readonly=True) as store:
            public = directory.resolve_key(store, target, append.now_us())
    _append(db, key, passphrase_file, "key_revoked", {"key": public, "effective": effective, "reason": reason},
            "key revocation", ledger=ledger)


@customer_app.command("approve")
def customer_approve(
    customer_id: Annotated[str, typer.Argument(metavar="ID")],
    cap: Annotated[int, typer.Option("--cap", min=0, max=limits.MAX_COUNT, help="Units it may receive.")],
    license_: Annotated[str, typer.Option("--license", help="The export licence.")],
    key: KeyOption,
    until: Annotated[str | None, typer.Option("--until", help="Last day of the approval (UTC).")] = None,
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Approve a customer with a cap (a new approval replaces the cap, not the count)."""
    cid = values.parse_id(customer_id, "customer id")
    valid_until = values.next_midnight(values.parse_time(until)) if until else None
    now = append.now_us()
    warnings = approvals.check_approval(cid, license_, valid_until, now)
    if ledger_url(db, ledger) is None:  # a service is not asked: its registrations are its own
        with open_store(db, readonly=True) as store:
            warnings += approvals.registration_warnings(store, cid, now)
    data: dict[str, object] = {"id": cid, "cap": cap, "license": license_}
    if valid_until is not None:
        data["valid_until"] = valid_until
    _append(db, key, passphrase_file, "customer_approved", data, f"approval of {cid}", ledger=ledger)
    for warning in warnings:  # once recorded: a refusal stays one line
        render.warn(warning)


@customer_app.command("suspend")
def customer_suspend(
    customer_id: Annotated[str, typer.Argument(metavar="ID")],
    key: KeyOption,
    reason: Annotated[str, typer.Option("--reason")] = "",
    passphrase_file: PassphraseOption = None,
    db: DbOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Suspend a customer's approval."""
    data = {"id": values.parse_id(customer_id, "customer id"), "reason": reason}
    _append(db, key, passphrase_file, "customer_suspended", data, f"suspension of {customer_id}", ledger=ledger)


@policy_app.command("issue")
def policy_issue(file: Annotated[Path, typer.Argument(help="Policy TOML.")], key: KeyOption,
                 passphrase_file: PassphraseOption = None, db: DbOption = None,
                 ledger: LedgerOption = None) -> None:
    """Record a new policy version; it acts on the statements logged after it."""
    text = policy.load_policy_file(file).source
    _append(db, key, passphrase_file, "policy_issued", {"policy": text}, "policy", ledger=ledger)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(participant_app, name="participant")
    app.add_typer(customer_app, name="customer")
    app.add_typer(policy_app, name="policy")
