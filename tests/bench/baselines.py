"""The baselines the targets are ratios against, computed in the same run as the figures they judge.

- `nacl_verify_seconds`: a bare loop verifying Ed25519 signatures with PyNaCl (`VerifyKey.verify`, the
  reference verifier) in as many worker processes as `custody verify` uses: the data is made and the
  processes started before the clock starts, so it is the fastest these signatures can be verified here.
- `eventsourcing_save_rate`: a bare `eventsourcing` application saving one msgpack-transcoded event per
  unit-step through `Application.save`, 1,000 new aggregates per call, to the same kind of store.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Transcoder

from ledger.store.codec import MsgpackTranscoder


def _signatures(seed: int, count: int, size: int) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """`count` signatures on distinct messages of `size` bytes (the hash inside Ed25519 grows with it)."""
    from nacl.signing import SigningKey

    key = SigningKey(seed.to_bytes(32, "big"))
    body = (b"custody-ledger/v1\n" + bytes(range(256)) * (size // 256 + 1))[:max(0, size - 8)]
    pairs = []
    for i in range(count):
        signed = key.sign(body + i.to_bytes(8, "big"))
        pairs.append((signed.message, signed.signature))
    return bytes(key.verify_key), pairs


def _verify_loop(public: bytes, pairs: list[tuple[bytes, bytes]], start: Any, done: Any) -> None:
    from nacl.signing import VerifyKey

    start.wait()
    for message, signature in pairs:
        VerifyKey(public).verify(message, signature)
    done.put(len(pairs))


def nacl_verify_seconds(count: int, workers: int, size: int) -> float:
    """Seconds for `workers` processes to verify `count` signatures between them (prepared beforehand),
    each on a message of `size` bytes: pass the mean length of the messages the ledger's signers signed."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    done = context.Queue()
    procs = []
    share = -(-count // workers)
    for w in range(workers):
        public, pairs = _signatures(w + 1, min(share, count - w * share), size)
        procs.append(context.Process(target=_verify_loop, args=(public, pairs, start, done)))
    for p in procs:
        p.start()
    time.sleep(0.2)  # every worker is waiting on the event
    began = time.perf_counter()
    start.set()
    verified = sum(done.get() for _ in procs)
    seconds = time.perf_counter() - began
    for p in procs:
        p.join()
    assert verified == count
    return seconds


class _Link(Aggregate):
    """One unit-step, as a bare application would store it."""

    @event("Linked")
    def __init__(self, serial: str, index: int, hash: bytes, at: int) -> None:
        self.serial = serial


class _Bare(Application[Any]):
    name = "bare"

    def construct_transcoder(self) -> Transcoder:
        return MsgpackTranscoder()


def _env(url: str | None, directory: Path) -> dict[str, str]:
    if url is None:
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(directory / "bare.db"),
                "CREATE_TABLE": "true"}
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    schema = parse_qs(parts.query).get("schema", ["public"])[0]
    return {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": parts.path.lstrip("/"),
            "POSTGRES_HOST": parts.hostname or "127.0.0.1", "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres", "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_SCHEMA": schema, "CREATE_TABLE": "true"}


def eventsourcing_save_rate(unit_steps: int, postgres_url: str | None = None, per_call: int = 1000) -> float:
    """Events per second saved by a bare application, `per_call` new aggregates per `save` (on PostgreSQL,
    into a fresh schema that is dropped afterwards)."""
    schema_url = None
    if postgres_url is not None:
        import conftest_pg

        schema_url = conftest_pg.fresh_schema(postgres_url)
    try:
        return _save_rate(unit_steps, schema_url, per_call)
    finally:
        if schema_url is not None:
            import conftest_pg

            conftest_pg.drop_schema(schema_url)


def _save_rate(unit_steps: int, postgres_url: str | None, per_call: int) -> float:
    with tempfile.TemporaryDirectory(dir=os.environ.get("CUSTODY_BENCH_TMP")) as tmp:
        app = _Bare(env=_env(postgres_url, Path(tmp)))
        digest = bytes(32)
        began = time.perf_counter()
        done = 0
        while done < unit_steps:
            batch = [_Link(f"SN{done + i:09d}", done + i, digest, 1_700_000_000_000_000)
                     for i in range(min(per_call, unit_steps - done))]
            app.save(*batch)
            done += len(batch)
        seconds = time.perf_counter() - began
        app.close()
    return unit_steps / seconds
