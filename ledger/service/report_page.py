"""`report html --ledger URL`: the visual report of a served ledger, made by the client from the service's JSON
routes and its log (DESIGN.md "Command line": over `--ledger`, `report` is built from the JSON routes).

The numbers are the service's own report documents, `GET /v1/reports/{name}[?until=TIME]`: what
`report NAME --json --ledger URL` prints. What no report carries comes from the log, followed by its tiles
as `verify --ledger` follows it (`follow.verify_log`): the banner's verdict (every hard rule, the served
checkpoint, every hash tile), each statement's time for the findings per week, every unit's chain of steps
for its timeline, and the fold as of the report time for the signers' names and the policy. So the page
is the one `report html` writes from a database holding the same log, but for the banner's checks (those
of a served log, as `verify --ledger` lists them) and, with `--until`, its checkpoint: a service serves its
latest only, which the banner names when it covers no more than the statements the reports fold.

The log followed is the one the reports folded: its size is read after them (the reports' own as of now;
with `--until`, that of the `units` report as of now), and with `--until` the statements dated up to then
must be as many as the reports folded. When the log grew between two reads in a way that changes what
they fold, everything is read again, up to `ATTEMPTS` times. Where the log verifies intact, the units it
holds must be the `units` report's total: a service whose reports its own log does not bear out is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger import checkpoint as notes
from ledger import reports, visual, visual_html
from ledger import verify as verification
from ledger.errors import LedgerError, NotFound, StoreError
from ledger.service import follow
from ledger.service.client import LedgerClient, report

ATTEMPTS = 5  # reads of the reports and the log, while the service keeps logging statements that change them


class _Moved(Exception):
    """The log grew between two reads in a way that changes what the reports fold: read again."""


def build(client: LedgerClient, *, until: int | None, now_us: int, workers: int | None = None) -> visual.Page:
    """The page's data for the ledger `client` serves, as of `until` (default: the service's now)."""
    for _ in range(ATTEMPTS):
        try:
            return _read(client, until, now_us, workers)
        except _Moved:
            continue
    raise StoreError(f"the ledger service at {client.url} kept logging statements that change its reports while "
                     f"the page was read ({ATTEMPTS} attempts); try again" +
                     (" later" if until is not None else ", or give --until a time already past"))


def page_html(client: LedgerClient, *, until: int | None, now_us: int) -> tuple[visual.Page, bytes]:
    """The page's data and the page itself. A served report the page cannot show (a field missing or of the
    wrong type) is the service's fault, said in one line."""
    page = build(client, until=until, now_us=now_us)
    try:
        return page, visual_html.render(page).encode()
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise StoreError(f"the ledger service at {client.url} served a report the page cannot show "
                         f"({type(e).__name__}: {str(e)[:120]})") from e


def _read(client: LedgerClient, until: int | None, now_us: int, workers: int | None) -> visual.Page:
    note = client.checkpoint()
    if note is None:
        raise NotFound(f"the ledger service at {client.url} holds no ledger yet: no page to make")
    try:
        origin = notes.parse_note(note).checkpoint.origin
    except LedgerError as e:
        raise StoreError(f"the ledger service at {client.url} serves something that is not a checkpoint: "
                         f"{e.detail}") from e
    served = {name: report(client, name, until) for name in reports.REPORTS}
    sizes = {r.log_size for r in served.values()}
    if len(sizes) != 1:
        raise _Moved  # a statement was logged between two reports (or, with --until, one dated before it)
    folded = sizes.pop()
    size = folded if until is None else report(client, "units", None).log_size
    documents: dict[str, Mapping[str, Any]] = {name: r.document for name, r in served.items()}

    # the same reader `visual.build` gives `verify`: with --until it folds the statements dated up to then, as
    # `replay --until` folds them
    log = visual._LogReader(until, origin)
    options = verification.Options(as_of=now_us, now=now_us, workers=workers, folded=log.statement)
    checked = follow.verify_log(client, note, size, options)
    state = checked.state if until is None else log.until_state
    units = int(documents["units"]["total"])
    if checked.intact:
        if until is not None and log.folded != folded:
            raise _Moved  # statements dated before --until were logged after the reports were made
        if len(state.units) != units:
            raise StoreError(f"the ledger service at {client.url} serves reports its log does not bear out: "
                             f"the units report counts {units:,} units, the log's first {size:,} statements "
                             f"hold {len(state.units):,}")
    findings = documents["compliance"]["findings"]
    info = visual.checkpoint_info(note, origin, state.operator)
    return visual.Page(
        origin=origin, as_of=until if until is not None else served["compliance"].as_of, until=until, made=now_us,
        log_size=folded, ledger_size=size, policy=state.policy.name, reports=documents,
        verification=visual.Verification(intact=checked.intact, log_size=checked.log_size, checks=checked.checks,
                                         failures=tuple(checked.failures), warnings=checked.warnings),
        checkpoint=info if info is not None and info.size <= folded else None,
        weeks=visual._weeks(findings, log.times), timelines=log.timelines(state.participant_of, units))
