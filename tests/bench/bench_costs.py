"""Where the time goes: the CPU cost of each stage of verification and replay, per statement and per unit.

Each stage is timed alone with `time.process_time` (CPU seconds of this process, so a busy machine
distorts it less than wall time), best of five, on a one-unit-per-statement ledger and on a boards-and-
shipments ledger. A stage that runs in worker processes divides by the number of cores; one that runs in
the folding process does not.

Run: .venv/bin/python tests/bench/bench_costs.py [--quick] [--dir DIR]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import ledgers
from nacl.signing import VerifyKey

from ledger import links, merkle, parallel, verify
from ledger.statement import SIGNATURE_PREFIX, decode
from ledger.store import Store

SCRIPT = "bench_costs.py"


def cpu(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.process_time()
        fn()
        best = min(best, time.process_time() - began)
    return best


def stages(url: str, per: str, divisor: int, command: str) -> None:
    store = Store(url, readonly=True)
    states = [state for _, state in store.log_states(0)]
    wires = [parallel.stored_wire(s) or b"" for s in states]
    statements = [decode(w) for w in wires]
    known: dict[str, bytes] = {}
    items, leaves = parallel.decode_chunk(0, states, True, known)
    keys = [known.get(s.signer) for s in statements]
    jobs = [(s.body, s.signature, k) for s, k in zip(statements, keys, strict=True) if k]

    def fold(compare_links: bool) -> None:
        verifier = verify.Verifier(store.origin, verify.Options(now=2**62))
        if compare_links:
            verifier.links = links.StoredLinks(store, store.origin or "")
        verifier.chunk(items, leaves)
        if compare_links:
            assert verifier.links is not None and verifier.links.finish()

    costs = {
        "read the log (raw rows)": cpu(lambda: list(store.log_states(0))),
        "unpack stored events": cpu(lambda: [parallel.stored_wire(s) for s in states]),
        "Merkle leaf hashes": cpu(lambda: [merkle.leaf_hash(w) for w in wires]),
        "decode statements (canonical checks)": cpu(lambda: [decode(w) for w in wires]),
        "verify signatures (libsodium, in workers)": cpu(lambda: parallel._verify_task(jobs)),
        "  bare: VerifyKey(key).verify(message, signature)": cpu(
            lambda: [VerifyKey(k).verify(SIGNATURE_PREFIX + b, g) for b, g, k in jobs]),
        "send signatures to workers (pickle)": cpu(lambda: pickle.dumps(jobs, pickle.HIGHEST_PROTOCOL)),
        "rules and fold (signatures done)": cpu(lambda: fold(False)),
        "unit links, read and compared in row order": cpu(lambda: fold(True)) - cpu(lambda: fold(False)),
    }
    store.close()
    for name, seconds in costs.items():
        common.report(name, seconds / divisor * 1e6, f"µs CPU per {per}", command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args(argv)
    command = common.reproduce(SCRIPT, *(["--quick"] if args.quick else []))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        built = ledgers.open_bench_ledger(Path(tmp) / "single" / "custody.db")
        ledgers.grow(built, 400 if args.quick else 1000, board=1, shipment=1, steps=5)
        print(f"one unit per statement: {built.statements:,} statements")
        stages(built.url, "statement", built.statements, command)
        built = ledgers.open_bench_ledger(Path(tmp) / "boards" / "custody.db")
        ledgers.grow(built, 4000 if args.quick else 16_000)
        print(f"boards of 8 and shipments of 1,000: {built.unit_steps:,} unit-steps, {built.statements:,} "
              "statements")
        stages(built.url, "unit-step", built.unit_steps, command)


if __name__ == "__main__":
    print(common.machine())
    main()
