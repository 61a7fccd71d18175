"""The ledger service (issue 16): submissions through HTTP, and tiles served.

- Accepted one-unit statements per second through `custody serve` on loopback with 1, 8 and 64 concurrent
  clients (each a kept-alive connection submitting one statement after another, each answered once a
  checkpoint covers it), signed before the clock starts; p50 and p99 latency. Goals on this 2-core
  machine: ≥ 1,000 statements/s at 64 clients on SQLite; p99 < the checkpoint interval + 250 ms.
- The same statements through the library's direct path (`append.append_signed`, one statement per
  transaction, no HTTP, no checkpoint wait) in the same run, as the ratio.
- Full tiles served per second (`wrk`, Debian's package: `apt-get install -y wrk`): goal ≥ 5,000.

The clients run in separate processes (threads in each), so that they do not share the server's core.
Also: the server's CPU per accepted statement, and the checkpoints stored during each run (one per writer
cycle under load: the rows the checkpoints table gains).
Run: .venv/bin/python tests/bench/bench_service.py [--quick] [--every 1.0 0.05] [--clients 1 8 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import common
import ledgers

from ledger import append
from ledger.statement import ZERO_HASH
from ledger.store import Store

STATEMENT = {"Content-Type": "application/vnd.custody.statement"}
PROCESSES = 4  # client processes at most


def presign(built: ledgers.Built, count: int, tag: str) -> list[bytes]:
    fab = built.keys["tsmc"]
    now = append.now_us()
    return [append.sign_statement(fab, origin=ledgers.ORIGIN, kind="fabricated", at=now,
                                  units=[(f"{tag}{i:07d}", ZERO_HASH)],
                                  data={"model": "H200-SXM5-141GB", "site": "Fab 18", "lot": "L"}).wire
            for i in range(count)]


def serve(db: str, operator: Path, every: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([common.CUSTODY, "--db", db, "serve", "--operator-key", str(operator), "--port", "0",
                             "--checkpoint-every", str(every)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r"on (http://[\d.]+:\d+)", line)
    if not found:
        proc.kill()
        raise SystemExit(f"custody serve did not start: {line}{proc.stderr.read()}")
    return proc, found.group(1)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _client_process(url: str, lists: list[list[bytes]], start_at: float, until: float, out: Any) -> None:
    import httpx

    results: list[tuple[int, list[float]]] = []
    lock = threading.Lock()

    def one(wires: list[bytes]) -> None:
        latencies: list[float] = []
        failed = 0
        with httpx.Client(base_url=url, timeout=60) as http:
            while time.time() < start_at:
                time.sleep(0.001)
            for wire in wires:
                if time.time() >= until:
                    break
                began = time.perf_counter()
                r = http.post("/v1/statements", content=wire, headers=STATEMENT)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    failed += 1
        with lock:
            results.append((failed, latencies))

    threads = [threading.Thread(target=one, args=(w,)) for w in lists]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(results)


def cpu_seconds(pid: int) -> float:
    """The user + system CPU seconds process `pid` (all its threads) has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(url: str, wires: list[bytes], clients: int, seconds: float, server: int | None = None) -> dict[str, float]:
    """`clients` concurrent submitters for `seconds`: accepted/s, p50, p99 (seconds), failures, and with
    `server` (its pid) the server's CPU milliseconds per accepted statement, which other work on a shared
    machine moves far less than the rate."""
    per = len(wires) // clients
    lists = [wires[i * per:(i + 1) * per] for i in range(clients)]
    processes = min(PROCESSES, clients)
    start_at = time.time() + 1.0
    until = start_at + seconds
    queue: Any = mp.Queue()
    procs = [mp.Process(target=_client_process, args=(url, lists[p::processes], start_at, until, queue))
             for p in range(processes)]
    for p in procs:
        p.start()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu_before = cpu_seconds(server) if server is not None else 0.0
    gathered = [queue.get() for _ in procs]
    ended = time.time()
    cpu = cpu_seconds(server) - cpu_before if server is not None else float("nan")
    for p in procs:
        p.join()
    latencies = sorted(x for results in gathered for _, lat in results for x in lat)
    failed = sum(f for results in gathered for f, _ in results)
    wall = min(ended, until + 5) - start_at
    return {"accepted": len(latencies), "rate": len(latencies) / wall, "failed": failed,
            "cpu_ms": cpu * 1000 / len(latencies) if latencies else float("nan"),
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": latencies[int(len(latencies) * 0.99) - 1] if len(latencies) >= 100 else
            (latencies[-1] if latencies else float("nan"))}


def direct(db: str, wires: list[bytes]) -> float:
    """Statements/s through the library's direct path: one `append_signed` transaction per statement."""
    from ledger.statement import decode

    statements = [decode(w) for w in wires]
    with Store(db) as store:
        began = time.perf_counter()
        for statement in statements:
            outcome = append.append_signed(store, [(statement, "refuse")])
            assert isinstance(outcome[0], append.Recorded), outcome[0]
        return len(statements) / (time.perf_counter() - began)


def tiles(url: str, seconds: int) -> float | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("tiles: wrk is not installed (apt-get install -y wrk); skipped")
        return None
    out = subprocess.run([wrk, "-t2", "-c64", f"-d{seconds}s", f"{url}/tile/0/000"], capture_output=True, text=True,
                         check=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"tiles: {non2xx.group(1)} responses were not 200")
    return float(found.group(1)) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--every", type=float, nargs="+", default=[1.0, 0.05], help="checkpoint intervals (s)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=None, help="length of each load run")
    args = parser.parse_args()
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        db = str(Path(tmp) / "custody.db")
        built = ledgers.open_bench_ledger(db)
        operator = built.keys_dir / "operator"
        budget = int(2500 * seconds)  # statements signed per run: more than the fastest run can take
        for every in args.every:
            proc, url = serve(db, operator, every)
            try:
                for clients in args.clients:
                    wires = presign(built, max(budget, clients), f"E{every}C{clients}-")
                    with Store(db) as store:
                        before = len(store.checkpoints())
                    result = load(url, wires, clients, seconds, proc.pid)
                    with Store(db) as store:
                        stored = store.checkpoints()[before:]
                    result["checkpoints"] = len(stored)
                    result["note_bytes"] = statistics.mean(len(n.encode()) for _, _, n in stored) if stored else 0.0
                    rows.append((every, clients, result))
                    print(f"checkpoint every {every:g} s, {clients:>2} client(s): {result['rate']:8.1f} accepted/s, "
                          f"p50 {result['p50'] * 1000:7.1f} ms, p99 {result['p99'] * 1000:7.1f} ms "
                          f"(goal < {every * 1000 + 250:.0f} ms), {result['failed']} refused, "
                          f"server CPU {result['cpu_ms']:.2f} ms/statement", flush=True)
                    print(f"  {result['checkpoints']} checkpoints stored ({result['checkpoints'] / seconds:.1f}/s, "
                          f"one per {result['accepted'] / max(result['checkpoints'], 1):.0f} statements, "
                          f"notes of {result['note_bytes']:.0f} bytes)", flush=True)
                tiles_rate = tiles(url, 5 if args.quick else 10) if every == args.every[-1] else None
            finally:
                stop(proc)
        count = 500 if args.quick else 2000
        rate = direct(db, presign(built, count, "DIRECT-"))
    print(f"direct path (append_signed, one statement per transaction): {rate:8.1f} statements/s")
    for every, clients, result in rows:
        print(f"  every {every:g} s, {clients:>2} clients: HTTP ÷ direct = {result['rate'] / rate:5.2f}")
    best = max((r["rate"] for e, c, r in rows if c == 64), default=0.0)
    print(f"goal 1: ≥ 1,000 statements/s at 64 clients: {best:.0f}/s -> {'met' if best >= 1000 else 'NOT met'}")
    late = [(e, c) for e, c, r in rows if r["p99"] >= e + 0.25]
    print(f"goal 2: p99 < interval + 250 ms: {'met' if not late else 'NOT met at ' + str(late)}")
    if tiles_rate is not None:
        print(f"goal 3: full tiles ≥ 5,000 req/s: {tiles_rate:.0f}/s -> {'met' if tiles_rate >= 5000 else 'NOT met'}")


if __name__ == "__main__":
    main()
