"""Hostile values: amounts no money reaches, on both stores.

A customs participant may sign any amount a statement can carry (msgpack's integers stop at 2^64 - 1). The
writers refuse amounts beyond `limits.MAX_STATEMENT_CENTS` and entry totals beyond `limits.MAX_TOTAL_CENTS`
(exit 2, nothing logged); a log that holds larger ones anyway (signed by another client, imported, written
out of band) must never stop a writer's catch-up, `replay --rebuild`, a report or `verify`.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from ledger import append, keys, limits
from ledger.store import Store
from tests.cli.test_bad_input import fingerprint, one_line
from tests.conftest import Ledger, open_ledger

FAB = ["--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1"]
MAX_DOLLARS = f"{limits.MAX_STATEMENT_CENTS // 100}.00"


def _shipped(ledger: Ledger, serials: list[str]) -> None:
    ledger.record("fabricated", "tsmc", serials, *FAB, ok=True)
    ledger.record("shipped-to-us", "kerry", serials, "--port-of-entry", "DFW", "--waybill", "W1", ok=True)


def _duty(ledger: Ledger, serial: str, value: str, duty: str, entry: str = "E1"):  # type: ignore[no-untyped-def]
    return ledger.record("duty-paid", "cbp", [serial], "--entry", entry, "--entered-value", value,
                         "--duty", duty)


def test_an_amount_beyond_one_statement_is_refused(ledger: Ledger) -> None:
    _shipped(ledger, ["U1"])
    before = fingerprint(ledger.db)
    over = f"{limits.MAX_STATEMENT_CENTS // 100}.01"
    one_line(_duty(ledger, "U1", over, "1.00"), 2, "too large")
    one_line(_duty(ledger, "U1", "100.00", over), 2, "too large")
    one_line(_duty(ledger, "U1", str(2**63), "1.00"), 2, "too large")
    assert fingerprint(ledger.db) == before
    result = _duty(ledger, "U1", MAX_DOLLARS, f"{limits.MAX_STATEMENT_CENTS // 400}.00")
    assert result.exit_code == 0, result.stderr


def test_an_entry_total_beyond_the_bound_is_refused(ledger: Ledger) -> None:
    """Nine statements of the largest amount fit an entry's total; the tenth would pass it: exit 2."""
    _shipped(ledger, ["U1"])
    quarter = f"{limits.MAX_STATEMENT_CENTS // 400}.00"
    for _ in range(limits.MAX_TOTAL_CENTS // limits.MAX_STATEMENT_CENTS):
        result = _duty(ledger, "U1", MAX_DOLLARS, quarter)
        assert result.exit_code == 0, result.stderr
    before = fingerprint(ledger.db)
    one_line(_duty(ledger, "U1", MAX_DOLLARS, quarter), 2, "entry E1", "entered value", "more than")
    assert fingerprint(ledger.db) == before
    assert _duty(ledger, "U1", MAX_DOLLARS, quarter, entry="E2").exit_code == 0  # another entry starts at 0


def _sign_outside_the_cli(ledger: Ledger, serial: str, amounts: list[int]) -> None:
    """What a customs participant's own client can log: any amount the hard rules allow, past the CLI."""
    signer = keys.load_private(Path(ledger.key("cbp")), lambda: None)
    with Store(ledger.db) as store:
        for amount in amounts:
            batch = append.Batch(store)
            assert store.origin is not None
            statement = append.sign_statement(signer, origin=store.origin, kind="duty_paid", at=append.now_us(),
                                              units=batch.heads([serial]),
                                              data={"entry": "HUGE", "entered_value": amount, "duty": amount})
            batch.add(statement)
            batch.commit()


def test_hostile_sums_never_stop_a_writer_or_a_rebuild(ledger: Ledger) -> None:
    """Three statements of 2^64 - 1 cents: their sums pass every 64-bit encoder, yet the ledger stays
    writable, rebuildable and reportable, and the sums stay exact."""
    _shipped(ledger, ["U1", "U2"])
    biggest = 2**64 - 1
    _sign_outside_the_cli(ledger, "U1", [biggest] * 3)
    # the next honest writer catches the views up over them
    ledger.record("inspected", "uslab", ["U2"], "--result", "pass", "--site", "Lab", "--country", "US",
                  "--report", "R1", ok=True)
    expected = {"entry": "HUGE", "statements": 3, "units": 3, "entered_value_cents": 3 * biggest,
                "paid_cents": 3 * biggest, "duty_due_cents": 3 * -(-biggest * 2500 // 10_000)}
    for _ in range(2):  # from the views the writers kept, then from views rebuilt from the log
        duty = ledger.cli("report", "duty", "--json", ok=True)
        (entry,) = [e for e in json.loads(duty.stdout)["entries"] if e["entry"] == "HUGE"]
        assert {k: entry[k] for k in expected} == expected
        csv = ledger.cli("report", "duty", "--csv", ok=True).stdout
        assert csv.count(str(3 * biggest)) == 4  # entered value and paid, in the entry's row and the total
        ledger.cli("replay", "--rebuild", ok=True)
    assert ledger.cli("replay", "--json", ok=True).exit_code == 0
    assert ledger.cli("verify", "--json").exit_code in (0, 3)


# --- hostile files: every file argument is bounded before it is read ------------------------------------

CUSTODY = str(Path(sys.executable).parent / "custody")
MEMORY_LIMIT = 2 << 30  # a command that reads /dev/zero whole dies here (MemoryError), not the machine


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _run(ledger: Ledger, *args: str) -> subprocess.CompletedProcess[str]:
    """The real executable, with its memory capped, so that an unbounded read fails fast and safely."""
    return subprocess.run([CUSTODY, "--db", ledger.db, *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory, env={**os.environ, "CUSTODY_PASSPHRASE": ""})


def _sparse(tmp_path: Path, size: int) -> Path:
    """A regular file of `size` bytes that takes no disk space: refused by its size, never read."""
    path = tmp_path / f"sparse-{size}"
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def files_ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("files")
    book = open_ledger(root, str(root / "custody.db"), CliRunner())
    book.record("fabricated", "tsmc", ["F1"], *FAB, ok=True)
    book.cli("checkpoint", "--key", book.key("operator"), "--out", str(root / "cp.txt"), ok=True)
    book.cli("prove", "F1", "--out", str(root / "F1.proof"), ok=True)
    return book


def _file_cases(book: Ledger, hostile: str) -> dict[str, list[str]]:
    root = book.dir
    return {
        "serials file": ["record", "fabricated", "--key", book.key("tsmc"), "--serials-file", hostile, *FAB],
        "policy file (issue)": ["policy", "issue", hostile, "--key", book.key("authority")],
        "policy file (replay)": ["replay", "--policy", hostile],
        "--checkpoint": ["verify", "--checkpoint", hostile],
        "cosign checkpoint": ["cosign", hostile, "--name", "w.example/w", "--key", book.key("rogue")],
        "cosign state": ["cosign", str(root / "cp.txt"), "--name", "w.example/w", "--key", book.key("rogue"),
                         "--state", hostile],
        "proof file": ["verify-proof", hostile, "--trust", book.pub("authority")],
        "private key": ["record", "fabricated", "--key", hostile, "--serial", "F2", *FAB],
        "public key": ["verify", "--trust", hostile],
        "bundle (verify)": ["verify", hostile],
        "bundle (import)": ["import", hostile],
    }


@pytest.mark.parametrize("name", list(_file_cases(Ledger(Path("."), "", None), "-")))  # type: ignore[arg-type]
def test_dev_zero_as_any_file_argument_is_refused(files_ledger: Ledger, name: str) -> None:
    before = fingerprint(files_ledger.db)
    result = _run(files_ledger, *_file_cases(files_ledger, "/dev/zero")[name])
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr[-500:]
    assert "Traceback" not in result.stderr
    assert fingerprint(files_ledger.db) == before


@pytest.mark.parametrize("name", ["serials file", "policy file (issue)", "--checkpoint", "cosign checkpoint",
                                  "cosign state", "proof file", "private key", "public key"])
def test_a_huge_regular_file_is_refused_by_its_size(files_ledger: Ledger, tmp_path: Path, name: str) -> None:
    huge = _sparse(tmp_path, 4 << 30)  # 4 GiB: more than the memory the command may use
    result = _run(files_ledger, *_file_cases(files_ledger, str(huge))[name])
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    assert "larger than" in result.stderr or "too large" in result.stderr, result.stderr


def test_a_named_pipe_is_read_up_to_its_limit(files_ledger: Ledger, tmp_path: Path) -> None:
    """`--serials-file <(…)`: a pipe is read, bounded by the serials file's limit."""
    result = subprocess.run(["bash", "-c", f'"{CUSTODY}" --db "{files_ledger.db}" record shipped-to-us '
                             f'--key "{files_ledger.key("kerry")}" --serials-file <(echo F1) '
                             "--port-of-entry DFW --waybill W1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    over = subprocess.run(["bash", "-c", f'"{CUSTODY}" --db "{files_ledger.db}" record shipped-to-us '
                           f'--key "{files_ledger.key("kerry")}" --serials-file <(head -c {65 << 20} /dev/zero) '
                           "--port-of-entry DFW --waybill W1"], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory)
    assert over.returncode == 2 and "larger than" in over.stderr, over.stderr


# --- hostile key files: a PKCS#8 key asking for endless key derivation ---------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x80 | ((size.bit_length() + 7) // 8)]) + size.to_bytes(
        (size.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _pkcs8_asking(iterations: int) -> str:
    """An EncryptedPrivateKeyInfo (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC) asking `iterations`."""
    def oid(text: str) -> bytes:
        return _tlv(0x06, bytes.fromhex(text))

    count = iterations.to_bytes((iterations.bit_length() + 8) // 8, "big")
    prf = _tlv(0x30, oid("2a864886f70d0209") + b"\x05\x00")  # hmacWithSHA256
    pbkdf2 = _tlv(0x30, oid("2a864886f70d01050c") + _tlv(0x30, _tlv(0x04, bytes(16)) + _tlv(0x02, count) + prf))
    cipher = _tlv(0x30, oid("60864801650304012a") + _tlv(0x04, bytes(16)))  # aes256-CBC, its IV
    algorithm = _tlv(0x30, oid("2a864886f70d01050d") + _tlv(0x30, pbkdf2 + cipher))  # PBES2
    der = _tlv(0x30, algorithm + _tlv(0x04, bytes(48)))
    body = base64.b64encode(der).decode()
    return f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n-----END ENCRYPTED PRIVATE KEY-----\n"


def test_a_pkcs8_key_asking_endless_iterations_is_refused_before_the_passphrase(files_ledger: Ledger,
                                                                                tmp_path: Path) -> None:
    """2^31 - 1 PBKDF2 iterations would take many minutes; refused at once (exit 2), as bcrypt's rounds are."""
    key = tmp_path / "slow.pem"
    key.write_text(_pkcs8_asking(2**31 - 1))
    key.chmod(0o600)
    assert keys._kdf_iterations(base64.b64decode("".join(key.read_text().splitlines()[1:-1]))) == 2**31 - 1
    try:
        result = subprocess.run([CUSTODY, "--db", files_ledger.db, "record", "fabricated", "--key", str(key),
                                 "--serial", "F3", *FAB], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "CUSTODY_PASSPHRASE": "guess"})
    except subprocess.TimeoutExpired:
        pytest.fail("the key's iteration count was tried: still deriving after 60 s")
    assert result.returncode == 2, result.stderr
    assert "iterations" in result.stderr and "slow.pem" in result.stderr, result.stderr
    key.write_text(_pkcs8_asking(2048))  # an ordinary count goes on to the passphrase (wrong here: zeros)
    result = subprocess.run([CUSTODY, "--db", files_ledger.db, "record", "fabricated", "--key", str(key),
                             "--serial", "F3", *FAB], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "CUSTODY_PASSPHRASE": "guess"})
    assert result.returncode == 2 and "wrong passphrase" in result.stderr, result.stderr
