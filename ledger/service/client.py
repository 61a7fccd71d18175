"""The client of a `custody serve`: sign locally, submit, retry; read and follow the log over HTTP.

DESIGN.md "Command line", `--ledger URL`: the client takes the origin from `/checkpoint` and the units'
heads from `/v1/heads`, stamps `at` = the later of its clock and the units' latest `at`, signs and
submits; on 409 it re-reads the heads and signs again (bounded, with backoff), with `--skip-violating` it
resubmits without the serials a 422 `compliance` names. The key never leaves the machine. Each answer's
inclusion proof is checked against the checkpoint it comes with before it is believed.

Errors, as the library's: the service unreachable or answering 503 is `StoreError` naming the URL (exit 2);
a refusal (409 after the retries, 422, 400, 413) is the `IntegrityError` of its check, `ViolationsFound`
or `Refused` (exit 1); a 404 on a read is `NotFound` (exit 2).
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from ledger import checkpoint as notes
from ledger import errors, limits, merkle, reports
from ledger.append import BACKOFF_CAP_S, BACKOFF_FIRST_S, Recorded, now_us, runs_of, sign_statement
from ledger.errors import (
    BadInput,
    Conflict,
    IntegrityError,
    LedgerError,
    NotFound,
    ProofInvalid,
    Refused,
    StoreError,
    ViolationsFound,
)
from ledger.keys import PrivateKey
from ledger.state import Finding
from ledger.statement import ZERO_HASH, Statement
from ledger.values import format_time, parse_time

STATEMENT_TYPE = "application/vnd.custody.statement"
SUBMIT_ATTEMPTS = 10  # tries when other writers keep moving the units (409)
MAX_HEADS = 10_000  # per heads request (DESIGN.md)
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # a submission waits for a checkpoint; a report may fold a large log
ENV = "CUSTODY_LEDGER"

_CHECKS: dict[str, type[IntegrityError]] = {
    cls.check: cls for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, IntegrityError) and cls is not IntegrityError}


class Moved(Refused):
    """409: some unit moved on since the heads were read."""

    def __init__(self, detail: str, heads: Mapping[str, str | None]) -> None:
        super().__init__(detail)
        self.heads = heads


class LedgerClient:
    """HTTP access to one service; use as a context manager (it holds a connection pool)."""

    def __init__(self, url: str, *, transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"bad --ledger URL {url[:80]!r}: use http://HOST:PORT or https://…")
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, transport=transport, follow_redirects=False,
                                  timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- transport ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:
            raise StoreError(f"the ledger service at {self.url} did not answer in time ({type(e).__name__})") \
                from e
        except httpx.HTTPError as e:
            raise StoreError(f"cannot reach the ledger service at {self.url}: {_reason(e)}") from e
        if response.status_code == 503:
            raise StoreError(f"the ledger service at {self.url} is unavailable: {_detail(response)}; "
                             f"try again in {response.headers.get('retry-after', 'a few')} s")
        if response.status_code >= 500:
            raise StoreError(f"the ledger service at {self.url} failed ({response.status_code}): "
                             f"{_detail(response)}")
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise StoreError(f"the ledger service at {self.url} answered {response.request.url.path} with "
                             "something that is not JSON") from None

    def _read(self, path: str, **params: Any) -> httpx.Response:
        response = self.request("GET", path, params={k: v for k, v in params.items() if v is not None})
        if response.status_code == 404:
            raise NotFound(f"{_detail(response)} (at {self.url})")
        if response.status_code != 200:
            raise _refusal(response, self.url)
        return response

    # --- the API --------------------------------------------------------------------------------------

    def checkpoint(self) -> str | None:
        """The served checkpoint note, or None while the log is empty."""
        response = self.request("GET", "/checkpoint")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _refusal(response, self.url)
        return response.text

    def origin(self) -> str:
        """The ledger's origin, from the served checkpoint."""
        text = self.checkpoint()
        if text is None:
            raise NotFound(f"the ledger service at {self.url} holds no ledger yet (run `custody init --ledger`)")
        try:
            return notes.parse_note(text).checkpoint.origin
        except LedgerError as e:
            raise StoreError(f"the ledger service at {self.url} serves a bad checkpoint: {e.detail}") from e

    def heads(self, serials: Sequence[str]) -> tuple[dict[str, bytes | None], dict[str, int | None]]:
        """The units' chain heads and latest `at` (None: no chain yet)."""
        heads: dict[str, bytes | None] = {}
        ats: dict[str, int | None] = {}
        for start in range(0, len(serials), MAX_HEADS):
            chunk = list(serials[start:start + MAX_HEADS])
            response = self.request("POST", "/v1/heads", json={"serials": chunk})
            if response.status_code != 200:
                raise _refusal(response, self.url)
            document = self._json(response)
            try:
                for s in chunk:
                    h, a = document["heads"][s], document["at"][s]
                    heads[s] = bytes.fromhex(h) if h is not None else None
                    ats[s] = parse_time(a) if a is not None else None
            except (KeyError, TypeError, ValueError, BadInput) as e:
                raise StoreError(f"the ledger service at {self.url} answered /v1/heads badly ({e})") from e
        return heads, ats

    def submit(self, statement: Statement, findings: str = "refuse") -> dict[str, Any]:
        """Submit one signed statement; the answer once a checkpoint covers it, its proof checked."""
        response = self.request("POST", "/v1/statements", params={"findings": findings},
                                content=statement.wire, headers={"Content-Type": STATEMENT_TYPE})
        if response.status_code != 200:
            document = _error_document(response)
            if response.status_code == 409:
                raise Moved(str(document.get("detail", "")), document.get("heads") or {})
            raise _refusal(response, self.url)
        answer = self._json(response)
        _check_answer(answer, statement, self.url)
        return dict(answer)

    def unit(self, serial: str, at: str | None = None) -> dict[str, Any]:
        return dict(self._json(self._read(f"/v1/units/{serial}", at=at)))

    def unit_proof(self, serial: str) -> bytes:
        return self._read(f"/v1/units/{serial}/proof").content

    def report_document(self, name: str, until: str | None = None) -> dict[str, Any]:
        return dict(self._json(self._read(f"/v1/reports/{name}", until=until)))

    def consistency(self, old: int, new: int) -> list[bytes]:
        document = self._json(self._read("/v1/proofs/consistency", **{"from": old, "to": new}))
        return [bytes.fromhex(h) for h in document["proof"]]

    def tile(self, path: str) -> bytes:
        """A hash tile or entry bundle (`tile/…`, as c2sp.org/tlog-tiles spells it)."""
        return self._read(f"/{path}").content


@contextmanager
def connect(url: str) -> Iterator[LedgerClient]:
    client = LedgerClient(url)
    try:
        yield client
    finally:
        client.close()


def report(client: LedgerClient, name: str, until: int | None) -> reports.Report:
    """Report `name` as the service builds it (`report NAME --json`), with its table for `--csv`."""
    reports.check_name(name)
    document = client.report_document(name, format_time(until) if until is not None else None)
    try:
        return reports.from_document(name, parse_time(str(document["as_of"])), document)
    except (KeyError, TypeError, ValueError, BadInput) as e:
        raise StoreError(f"the ledger service at {client.url} served a malformed {name} report ({e})") from e


# --- writing ------------------------------------------------------------------------------------------


def record(client: LedgerClient, key: PrivateKey, kind: str, data: Mapping[str, Any], serials: Sequence[str] = (),
           *, at: int | None = None, mode: str = "refuse", clock: Callable[[], int] = now_us,
           attempts: int = SUBMIT_ATTEMPTS) -> Recorded:
    """Sign and submit as `record` appends: `mode` is "refuse", "allow" or "skip".

    Units that do not fit in one statement go in several with the same data (`duty_paid` is refused), in
    order, each answered before the next is sent; a failure names the statements already logged.
    """
    limits.check_amounts(kind, data)
    origin = client.origin()
    runs = runs_of(origin, key, kind, data, serials)
    done: list[Recorded] = []
    for run in runs:
        try:
            done.append(_submit_one(client, key, origin, kind, data, run, at=at, mode=mode, clock=clock,
                                    attempts=attempts))
        except LedgerError as e:
            if done:
                logged = ", ".join(f"index {r.index} ({r.statement.hash.hex()[:16]}…)" for r in done)
                e.detail = f"{e.detail} (statements already logged for the first units: {logged})"
            raise
    first = done[0]
    return Recorded(index=first.index, statement=first.statement, findings=(),
                    skipped=tuple(s for r in done for s in r.skipped), attempts=max(r.attempts for r in done),
                    statements=tuple(r.statement for r in done))


def _submit_one(client: LedgerClient, key: PrivateKey, origin: str, kind: str, data: Mapping[str, Any],
                serials: Sequence[str], *, at: int | None, mode: str, clock: Callable[[], int],
                attempts: int) -> Recorded:
    chosen = list(serials)
    skipped: list[str] = []
    delay = BACKOFF_FIRST_S
    last: Moved | None = None
    attempt = 0
    while attempt < attempts:
        attempt += 1
        heads, ats = client.heads(chosen) if chosen else ({}, {})
        latest = [a for a in ats.values() if a is not None]
        when = at if at is not None else max([clock(), *latest])
        units = [(s, heads[s] or ZERO_HASH) for s in chosen]
        statement = sign_statement(key, origin=origin, kind=kind, at=when, units=units, data=data)
        try:
            answer = client.submit(statement, "allow" if mode == "allow" else "refuse")
        except Moved as e:
            last = e
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, BACKOFF_CAP_S)
            continue
        except ViolationsFound as e:
            bad = {f.serial for f in e.findings if isinstance(f, Finding)}
            rest = [s for s in chosen if s not in bad]
            if mode != "skip" or not rest or len(rest) == len(chosen):
                raise ViolationsFound(e.detail, e.findings, some_clean=bool(rest)) from None
            skipped += [s for s in chosen if s in bad]
            chosen = rest
            attempt -= 1  # a smaller statement, not a lost race
            continue
        return Recorded(index=int(answer["index"]), statement=statement, findings=(), skipped=tuple(skipped),
                        attempts=attempt)
    raise Conflict(f"gave up after {attempts} attempts: other writers kept moving the units first "
                   f"({last.detail if last else 'conflict'}); try again")


def open_ledger(client: LedgerClient, key: PrivateKey, *, origin: str, co_authorities: Sequence[bytes],
                operator: bytes, policy_text: str, at: int | None = None,
                clock: Callable[[], int] = now_us) -> Recorded:
    """Sign the genesis `ledger_opened` and submit it to a service that holds no ledger yet."""
    if client.checkpoint() is not None:
        raise Refused(f"the ledger service at {client.url} already holds a ledger")
    authorities = [key.public, *[k for k in co_authorities if k != key.public]]
    statement = sign_statement(key, origin=origin, kind="ledger_opened", at=at if at is not None else clock(),
                               units=(), data={"authorities": authorities, "operator": operator,
                                               "policy": policy_text})
    answer = client.submit(statement, "refuse")
    return Recorded(index=int(answer["index"]), statement=statement, findings=(), skipped=(), attempts=1)


# --- answers ------------------------------------------------------------------------------------------


def _check_answer(answer: Any, statement: Statement, url: str) -> None:
    """An accepted submission's inclusion proof must put this very wire form in the checkpoint given."""
    try:
        index, proof = int(answer["index"]), [bytes.fromhex(h) for h in answer["inclusion"]]
        checkpoint = notes.parse_note(answer["checkpoint"]).checkpoint
        if answer["hash"] != statement.hash.hex():
            raise ProofInvalid("the answer names another statement hash", index)
        merkle.verify_inclusion(index, checkpoint.size, merkle.leaf_hash(statement.wire), proof, checkpoint.root)
    except ProofInvalid as e:
        raise ProofInvalid(f"the ledger service at {url} answered with a bad inclusion proof: {e.detail}",
                           e.index) from e
    except (KeyError, TypeError, ValueError, LedgerError) as e:
        raise StoreError(f"the ledger service at {url} answered a submission badly ({e})") from e


def _error_document(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _detail(response: httpx.Response) -> str:
    document = _error_document(response)
    detail = document.get("detail")
    return str(detail)[:300] if detail else f"HTTP {response.status_code}"


def _refusal(response: httpx.Response, url: str) -> LedgerError:
    """A 4xx answer as the library's error (exit 1 for refusals, 2 for a 404)."""
    document = _error_document(response)
    check, detail = str(document.get("error", "")), _detail(response)
    if response.status_code == 404:
        return NotFound(f"{detail} (at {url})")
    if check == "compliance":
        found = tuple(Finding(str(f.get("code")), f.get("serial"), int(f.get("index", -1)), str(f.get("detail")))
                      for f in document.get("findings") or [] if isinstance(f, dict))
        return ViolationsFound(detail, found)
    cls = _CHECKS.get(check)
    if cls is not None:
        return cls(f"refused by {url}: {detail.removeprefix(check + ': ')}")
    return Refused(f"refused by {url} ({response.status_code} {check or 'error'}): {detail}")


def _reason(e: httpx.HTTPError) -> str:
    cause: BaseException | None = e
    while cause is not None and cause.__cause__ is not None and not str(cause):
        cause = cause.__cause__
    return " ".join(str(cause or e).split()) or type(e).__name__


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
