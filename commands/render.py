"""Everything `custody` prints: stdout written once, JSON, statement steps, findings, report tables and CSV.

Data goes to stdout through `out` (text, a line at a time) or `out_raw` (JSON, CSV, a signed note),
diagnostics to stderr through `say` and `warn`. A reader that closes the pipe early (`custody verify |
head`) silences stdout for the rest of the command, which goes on to its own exit status (DESIGN.md: the
status is the command's, not the pipe's).

Signed statements carry free text from every participant, so text output never passes a control
character through: C0 and C1 controls, DEL, the line and paragraph separators and the bidirectional
overrides are shown escaped (`\\x1b`, `\\n`, `\\u202e`), so no value can forge a line, move the cursor or
colour a terminal. CSV cells are escaped the same way and, per OWASP's CSV-injection guidance, a text cell
that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`) gets a leading `'`. JSON is exact: its
own escaping already keeps a document one value.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import typer

from ledger import history, reports
from ledger.history import Step
from ledger.state import Finding

FINDINGS_SHOWN = 50  # findings `verify` lists in text; the compliance report lists them all


# --- the two streams ---------------------------------------------------------------------------------

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ESCAPES: dict[int, str] = {c: _NAMED.get(chr(c), f"\\x{c:02x}") for c in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES |= {c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F),
                                         *range(0x2066, 0x206A))}
FORMULA_PREFIXES = ("=", "+", "-", "@")  # OWASP CSV injection: a cell a spreadsheet would evaluate


def clean(value: object) -> str:
    """`value` as text with every control character escaped: one line that only shows what it holds."""
    return str(value).translate(_ESCAPES)


def csv_cell(value: object) -> object:
    """A CSV cell: numbers as they are; text escaped, and a leading `'` where it would start a formula."""
    if not isinstance(value, str):
        return value
    text = clean(value)
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


def silence_stdout() -> None:
    """After a closed pipe: send the rest of stdout (and what is still buffered) to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (a test runner's buffer)
        pass
    finally:
        os.close(devnull)


def out_raw(text: str, *, nl: bool = True) -> None:
    """Data on stdout as it is (JSON, CSV, a signed note); a closed pipe makes this and every later write
    a quiet no-op."""
    try:
        typer.echo(text, nl=nl)
    except BrokenPipeError:
        silence_stdout()


def out(line: str = "") -> None:
    """One line of text on stdout, control characters escaped."""
    out_raw(clean(line))


def out_lines(lines: Iterable[str]) -> None:
    for line in lines:
        out(line)


def say(text: str) -> None:
    """One diagnostic line on stderr, `custody: …`, whitespace folded so that it stays one line."""
    typer.echo(f"custody: {clean(' '.join(text.split()))}", err=True)


def warn(text: str) -> None:
    say(f"warning: {text}")


# --- JSON ---------------------------------------------------------------------------------------------


def json_text(document: Any) -> str:
    """`json.dumps(document, indent=2, ensure_ascii=False)`, in C where msgspec can: the same text ten times
    faster (a verification's findings run to megabytes). What msgspec refuses (an integer beyond 64 bits, a
    lone surrogate) takes the standard library's way."""
    try:
        return msgspec.json.format(msgspec.json.encode(document), indent=2).decode()
    except (TypeError, ValueError, OverflowError, UnicodeError, msgspec.MsgspecError):
        return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False)


def print_json(document: Any) -> None:
    out_raw(json_text(document))


finding_json = reports.finding_json


def step_json(step: Step) -> dict[str, Any]:
    """One step of a unit's history as `history --json` gives it (and `verify-proof --json`)."""
    return history.step_json(step)


# --- a unit's steps and findings, as text ----------------------------------------------------------


def step_lines(steps: Sequence[Step]) -> list[str]:
    """One line per step: index, time, kind, signer, then the data as key=value; columns aligned."""
    return step_json_lines([step_json(step) for step in steps])


def step_json_lines(docs: Sequence[dict[str, Any]]) -> list[str]:
    """`step_lines` of steps as `history --json` gives them (read from the service, say)."""
    rows = [(f"#{doc['index']}", clean(doc["at"]), clean(doc["kind"]), clean(doc["participant"] or "?"),
             clean(", ".join(f"{k}={v}" for k, v in doc["data"].items()))) for doc in docs]
    widths = [max([minimum, *(len(r[i]) for r in rows)]) for i, minimum in enumerate((7, 24, 14, 12))]
    return [f"  {r[0]:<{widths[0]}} {r[1]:<{widths[1]}} {r[2]:<{widths[2]}} by {r[3]:<{widths[3]}} {r[4]}"
            for r in rows]


def unit_finding_lines(findings: Iterable[Finding]) -> list[str]:
    return [f"  ! {f.code} at index {f.index}: {f.detail}" for f in findings]


def finding_lines(findings: Sequence[Finding], total: int) -> list[str]:
    """The first findings of a verification, one a line, and how many more there are."""
    lines = [f"  {f.code:24} {f.serial or '-':20} index {f.index}: {f.detail}" for f in findings[:FINDINGS_SHOWN]]
    if total > FINDINGS_SHOWN:
        lines.append(f"  … and {total - FINDINGS_SHOWN} more (see `custody report compliance`)")
    return lines


# --- reports ------------------------------------------------------------------------------------------


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 unit`, `2 units`, `1 entry`, `3 entries`."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def dollars(cents: int) -> str:
    whole, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}${whole:,}.{rest:02d}"


def table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]]) -> list[str]:
    """Columns padded to their widest cell; text left-aligned, numbers right-aligned."""
    cells = [tuple(clean(c) for c in header)] + [tuple(clean(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(r[i].lstrip("-$").replace(",", "").replace(".", "").isdigit() for r in cells[1:] if r[i])
               and len(cells) > 1 for i in range(len(header))]
    return ["  " + "  ".join(c.rjust(w) if n else c.ljust(w)
                             for c, w, n in zip(r, widths, numeric, strict=True)).rstrip() for r in cells]


_CUSTOMER_COLUMNS = ("customer", "status", "cap", "consigned", "received", "remaining", "over cap")


def _customer_rows(customers: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["id"], c["status"], c["cap"], c["consigned"], c["received"], c["remaining"], c["over_cap"])
            for c in customers]


def report_lines(report: reports.Report) -> list[str]:
    """A report as a person reads it."""
    doc = report.document
    head = f"{report.name} report as of {doc['as_of']} (log size {doc['log_size']})"
    if report.name == "compliance":
        found = doc["findings"]
        if not found:
            return [head, "no findings: compliant"]
        lines = [head, f"{len(found)} finding(s):"]
        for code, n in doc["counts"].items():
            lines.append(f"{code} ({n})")
            lines += [f"  {f['serial'] or '-':24} index {f['index']:<7} {f['detail']}"
                      for f in found if f["code"] == code]
        return lines
    if report.name == "duty":
        rows: list[tuple[Any, ...]] = [
            (e["entry"], e["units"], dollars(e["entered_value_cents"]), dollars(e["duty_due_cents"]),
             dollars(e["paid_cents"]), dollars(e["shortfall_cents"])) for e in doc["entries"]]
        t = doc["total"]
        rows.append((f"total ({count(t['entries'], 'entry', 'entries')})", t["units"],
                     dollars(t["entered_value_cents"]), dollars(t["duty_due_cents"]), dollars(t["paid_cents"]),
                     dollars(t["shortfall_cents"])))
        return [head, *table(("entry", "units", "entered value", "duty due", "paid", "shortfall"), rows)]
    if report.name == "customers":
        if not doc["customers"]:
            return [head, "no customers"]
        return [head, *table(_CUSTOMER_COLUMNS, _customer_rows(doc["customers"]))]
    if report.name == "volume":
        if not doc["periods"]:
            return [head, "no U.S. volume declared"]
        over = sum(1 for p in doc["periods"] if p["over"])
        blank = "-"
        rows = [(p["model"], p["from"], p["until"], p["us_units"],
                 blank if p["limit"] is None else p["limit"], p["exported"],
                 blank if p["over"] is None else p["over"], p["index"]) for p in doc["periods"]]
        note = ("the policy has no volume rule: no limits" if all(p["limit"] is None for p in doc["periods"])
                else f"{over} period(s) over the limit")
        return [head, *table(("model", "from", "until", "U.S. units", "limit", "exported", "over", "index"),
                             rows), note]
    lines = [head, f"{count(doc['total'], 'unit')} by current step (a terminal step counts as the last):"]
    lines += table(("step", "units"), list(doc["steps"].items()))
    if doc["overdue"]:
        lines.append(f"{len(doc['overdue'])} overdue (oldest first):")
        lines += table(("serial", "step", "index", "since", "days waiting"),
                       [(o["serial"], o["step"], o["index"], o["since"], o["days_waiting"])
                        for o in doc["overdue"]])
    else:
        lines.append("none overdue")
    return lines


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(c) for c in columns])
    writer.writerows([csv_cell(c) for c in row] for row in rows)
    return buffer.getvalue()


def emit(report: reports.Report, *, json_out: bool = False, csv_out: bool = False) -> None:
    """Print a report: one JSON document, a CSV table, or text."""
    if json_out:
        print_json(report.document)
    elif csv_out:
        out_raw(csv_text(report.columns, report.rows), nl=False)
    else:
        out_lines(report_lines(report))


def summary_lines(summary: dict[str, Any], *, rebuilt: bool) -> list[str]:
    """`replay`'s summary as text."""
    what = "rebuilt the views from" if rebuilt else "replayed"
    policy = summary["policy"]
    under = f"under the what-if policy {policy['name']}" if policy["what_if"] else \
        f"under the recorded policies (latest: {policy['name']})"
    through = f", through index {summary['last_index']}" if summary["last_index"] is not None else ""
    lines = [f"{what} {summary['folded']} of {summary['log_size']} statements{through}, {under}, "
             f"as of {summary['as_of']}"]
    units = summary["units"]
    steps = ", ".join(f"{step} {n}" for step, n in units["steps"].items())
    lines.append(f"units: {units['total']} ({steps})")
    found = summary["findings"]
    codes = ", ".join(f"{code} {n}" for code, n in found["counts"].items())
    lines.append(f"findings: {found['total']}" + (f" ({codes})" if codes else ""))
    d = summary["duty"]
    lines.append(f"duty: {count(d['entries'], 'entry', 'entries')}, {count(d['units'], 'unit')}, "
                 f"entered {dollars(d['entered_value_cents'])}, due {dollars(d['duty_due_cents'])}, "
                 f"paid {dollars(d['paid_cents'])}, "
                 f"shortfall {dollars(d['shortfall_cents'])}")
    if summary["customers"]:
        lines.append("customers:")
        lines += table(_CUSTOMER_COLUMNS, _customer_rows(summary["customers"]))
    return lines
