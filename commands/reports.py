"""`custody replay` and `custody report`: what regulators run. Presentation only; see ledger/reports.py."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from commands._common import DbOption, JsonOption, handle_errors, open_store, print_json, progress
from ledger import append, reports, values, views
from ledger import replay as replaying
from ledger.errors import BadInput
from ledger.policy import load_policy_file
from ledger.state import State

UntilOption = Annotated[str | None, typer.Option(
    "--until", metavar="TIME", help="Fold the statements with at ≤ TIME (ISO 8601) and report as of TIME.")]


def dollars(cents: int) -> str:
    whole, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}${whole:,}.{rest:02d}"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    # text left-aligned, numbers right-aligned
    numeric = [all(r[i].lstrip("-$").replace(",", "").replace(".", "").isdigit() for r in cells[1:] if r[i])
               and len(cells) > 1 for i in range(len(header))]
    return ["  " + "  ".join(c.rjust(w) if n else c.ljust(w)
                             for c, w, n in zip(r, widths, numeric, strict=True)).rstrip() for r in cells]


def text_lines(report: reports.Report) -> list[str]:
    """A report as a person reads it."""
    doc = report.document
    head = f"{report.name} report as of {doc['as_of']} (log size {doc['log_size']})"
    if report.name == "compliance":
        found = doc["findings"]
        if not found:
            return [head, "no findings: compliant"]
        lines = [head, f"{len(found)} finding(s):"]
        for code, count in doc["counts"].items():
            lines.append(f"{code} ({count})")
            lines += [f"  {f['serial'] or '-':24} index {f['index']:<7} {f['detail']}"
                      for f in found if f["code"] == code]
        return lines
    if report.name == "duty":
        rows: list[tuple[Any, ...]] = [
            (e["entry"], e["units"], dollars(e["entered_value_cents"]), dollars(e["duty_due_cents"]),
             dollars(e["paid_cents"]), dollars(e["shortfall_cents"])) for e in doc["entries"]]
        t = doc["total"]
        rows.append((f"total ({t['entries']} entries)", t["units"], dollars(t["entered_value_cents"]),
                     dollars(t["duty_due_cents"]), dollars(t["paid_cents"]), dollars(t["shortfall_cents"])))
        return [head, *_table(("entry", "units", "entered value", "duty due", "paid", "shortfall"), rows)]
    if report.name == "customers":
        rows = [(c["id"], c["status"], c["cap"], c["consigned"], c["received"], c["remaining"], c["over_cap"])
                for c in doc["customers"]]
        if not rows:
            return [head, "no customers"]
        return [head, *_table(("customer", "status", "cap", "consigned", "received", "remaining", "over cap"),
                              rows)]
    lines = [head, f"{doc['total']} unit(s) by current step:"]
    lines += _table(("step", "units"), list(doc["steps"].items()))
    if doc["overdue"]:
        lines.append(f"{len(doc['overdue'])} overdue (oldest first):")
        lines += _table(("serial", "step", "index", "since", "days waiting"),
                        [(o["serial"], o["step"], o["index"], o["since"], o["days_waiting"])
                         for o in doc["overdue"]])
    else:
        lines.append("none overdue")
    return lines


def emit(report: reports.Report, *, json_out: bool = False, csv_out: bool = False) -> None:
    """Print a report: one JSON document, a CSV table, or text."""
    if json_out:
        print_json(report.document)
    elif csv_out:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(report.columns)
        writer.writerows(report.rows)
        sys.stdout.flush()
    else:
        for line in text_lines(report):
            typer.echo(line)


def _summary_lines(summary: dict[str, Any], *, rebuilt: bool) -> list[str]:
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
    lines.append(f"duty: {d['entries']} entries, {d['units']} units, "
                 f"entered {dollars(d['entered_value_cents'])}, due {dollars(d['duty_due_cents'])}, "
                 f"paid {dollars(d['paid_cents'])}, "
                 f"shortfall {dollars(d['shortfall_cents'])}")
    if summary["customers"]:
        lines.append("customers:")
        lines += _table(("customer", "status", "cap", "consigned", "received", "remaining", "over cap"),
                        [(c["id"], c["status"], c["cap"], c["consigned"], c["received"], c["remaining"],
                          c["over_cap"]) for c in summary["customers"]])
    return lines


@handle_errors
def replay(
    until: UntilOption = None,
    upto: Annotated[int | None, typer.Option("--upto", min=0, metavar="INDEX",
                                                      help="Fold the log prefix 0…INDEX.")] = None,
    policy_file: Annotated[Path | None, typer.Option(
        "--policy", metavar="FILE", help="What-if: this policy replaces every recorded one.")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild",
                                          help="Rebuild the stored views from the log.")] = False,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Processes verifying signatures (default: all cores).")] = None,
    json_out: JsonOption = False,
    db: DbOption = None,
) -> None:
    """Fold the log (or a prefix of it) again, in memory, and summarise; stores nothing unless --rebuild."""
    if until is not None and upto is not None:
        raise BadInput("give --until or --upto, not both")
    if rebuild and (until is not None or upto is not None or policy_file is not None):
        raise BadInput("--rebuild rebuilds the views from the whole log under the recorded policies; "
                       "it takes no --until, --upto or --policy")
    when = values.parse_time(until) if until is not None else None
    what_if = load_policy_file(policy_file) if policy_file is not None else None
    now = append.now_us()
    if rebuild:
        with open_store(db) as store, progress("rebuilding views", store.size()) as advance:
            state = views.rebuild(store, now, advance, workers)
            size = store.size()
        summary = reports.summary(state, now, log_size=size, folded=state.size,
                                  last_index=state.size - 1 if state.size else None,
                                  policy_name=state.policy.name, what_if=False)
    else:
        with open_store(db, readonly=True) as store, progress("replaying", store.size()) as advance:
            result = replaying.replay(store, now_us=now, until=when, upto=upto, policy=what_if,
                                      progress=advance, workers=workers)
        summary = reports.summary(result.state, result.as_of, log_size=result.log_size, folded=result.folded,
                                  last_index=result.last_index, policy_name=result.state.policy.name,
                                  what_if=what_if is not None)
    if json_out:
        print_json(summary)
    else:
        for line in _summary_lines(summary, rebuilt=rebuild):
            typer.echo(line)


def report_state(db: str | None, until: int | None, now: int) -> tuple[State, int, int]:
    """The state a report reads, its report time and log size: the views and tail, or a replay by time."""
    with open_store(db, readonly=True) as store:
        if until is None:
            state = views.current(store, now)
            return state, now, state.size
        result = replaying.replay(store, now_us=now, until=until)
        return result.state, until, result.folded


@handle_errors
def report(
    name: Annotated[str, typer.Argument(metavar="NAME", help="compliance, duty, customers or units.")],
    until: UntilOption = None,
    json_out: JsonOption = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="A CSV table on stdout.")] = False,
    db: DbOption = None,
) -> None:
    """A compliance, duty, customers or units report, now or as of --until."""
    reports.check_name(name)
    if json_out and csv_out:
        raise BadInput("give --json or --csv, not both")
    when = values.parse_time(until) if until is not None else None
    state, as_of, size = report_state(db, when, append.now_us())
    emit(reports.build(name, state, as_of, size), json_out=json_out, csv_out=csv_out)


def register(app: typer.Typer) -> None:
    app.command("replay")(replay)
    app.command("report")(report)
