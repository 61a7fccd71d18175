"""Limits: every amount, file and count handed to the ledger is bounded before the work (STYLE.md 13).

SECURITY.md "Limits" lists them for users. Money: a `duty_paid` carries at most `MAX_STATEMENT_CENTS` in
`entered_value` and in `duty`, and a writer refuses a statement that would take a customs entry's running
totals beyond `MAX_TOTAL_CENTS`. Neither is a hard rule (DESIGN.md bounds no amount, so `verify` accepts
what an independent verifier accepts); they keep what honest writers log far inside every encoder's range,
and the fold, the views and the reports stay exact for any amount a statement can carry anyway (Python
integers; `state.DutyEntry` stores sums beyond 64 bits as text). Files: each is read through `read_file`,
which refuses a device, a directory or a socket and reads at most its limit, so `/dev/zero` or a huge
file is refused, not read until memory runs out.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ledger.errors import BadInput, NotFound

# --- money and counts ---------------------------------------------------------------------------------

# $10 trillion, in cents: a third of the U.S. economy's yearly output, three times its yearly goods imports.
MAX_STATEMENT_CENTS = 10**15
# About $90 trillion: 2^53 - 1, the largest integer every JSON reader (IEEE doubles) holds exactly.
MAX_TOTAL_CENTS = 2**53 - 1
# Counts typed on the command line (`customer approve --cap`), likewise exact in every JSON reader.
MAX_COUNT = 2**53 - 1
MONEY_FIELDS = ("entered_value", "duty")

# --- files --------------------------------------------------------------------------------------------

KIB, MIB = 1 << 10, 1 << 20
MAX_SERIALS_FILE_BYTES = 64 * MIB  # some 4.5 million serials of 13 characters
MAX_POLICY_FILE_BYTES = 64 * KIB  # a policy is logged inside one statement, itself at most 65,535 bytes
MAX_NOTE_FILE_BYTES = 1 * MIB  # a checkpoint note (`--checkpoint`, `cosign`), or a witness state file
MAX_PROOF_FILE_BYTES = 64 * MIB  # a `custody-proof/1` file: a unit's statements and their registrations
# (key files: `keys.MAX_KEY_FILE_BYTES`; bundles are streamed, one object at a time: `bundle.MAX_OBJECT_SIZE`)


def check_amounts(kind: str, data: Mapping[str, Any]) -> None:
    """Refuse (`BadInput`) a `duty_paid` whose `entered_value` or `duty` exceeds `MAX_STATEMENT_CENTS`."""
    if kind != "duty_paid":
        return
    for name in MONEY_FIELDS:
        value = data.get(name)
        if isinstance(value, int) and value > MAX_STATEMENT_CENTS:
            raise BadInput(f"{name} {value} cents is more than one statement may carry "
                           f"({MAX_STATEMENT_CENTS} cents, ${MAX_STATEMENT_CENTS // 100:,})")


def check_totals(entry: str, totals: Mapping[str, int]) -> None:
    """Refuse (`BadInput`) a statement that would take a customs entry's running `totals` (name → cents
    after the statement) beyond `MAX_TOTAL_CENTS`."""
    for name, total in totals.items():
        if total > MAX_TOTAL_CENTS:
            raise BadInput(f"entry {entry}: its {name} would reach {total} cents, more than an entry may "
                           f"total ({MAX_TOTAL_CENTS} cents)")


def check_count(value: int, what: str) -> int:
    """`value` if it is a count from 0 to `MAX_COUNT`; else `BadInput` naming `what`."""
    if not 0 <= value <= MAX_COUNT:
        raise BadInput(f"{what} {value} is out of range (0 to {MAX_COUNT})")
    return value


def read_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, at most `limit` of them, or `BadInput` (`NotFound` if it does not exist).

    A regular file is refused by its size before it is read; a pipe (`<(…)`, `/dev/stdin` piped) is read
    up to the limit and refused beyond it; anything else (a device such as `/dev/zero`, a directory, a
    socket) is refused unread.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as e:
        raise NotFound(f"{what} {path}: no such file") from e
    except IsADirectoryError as e:
        raise BadInput(f"{what} {path} is a directory, not a file") from e
    except OSError as e:
        raise BadInput(f"cannot read {what} {path}: {e.strerror or e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise BadInput(f"{what} {path} is a directory, not a file")
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise BadInput(f"{what} {path} is not a regular file")
        if stat.S_ISREG(mode) and os.fstat(fd).st_size > limit:
            raise BadInput(f"{what} {path} is larger than {limit:,} bytes")
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, min(1 * MIB, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise BadInput(f"{what} {path} is larger than {limit:,} bytes")
        return b"".join(chunks)
    except OSError as e:
        raise BadInput(f"cannot read {what} {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)
