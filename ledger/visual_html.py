"""The visual report as one self-contained HTML page (DESIGN.md "The visual report").

Charts are Vega-Lite specifications rendered to static SVG by `vl-convert` (Vega's own renderer) when the page
is written: the charts show aggregates (units per step, findings per code and week, customers, volume
periods), so each is a few kilobytes whatever the ledger's size, draws without any script, and prints as it
shows. A small script of our own (`visual_assets/report.js`) filters and pages the long tables and draws a
unit's timeline from the data embedded in the page. Nothing is loaded from the network: the page's Content
Security Policy allows no source at all but its own inline style and its one script, by hash.

Every number is text in the page, never only drawn: each chart is followed by its table, and money shows as
dollars with two decimals (the `_cents` value ÷ 100).
"""

from __future__ import annotations

import base64
import hashlib
import html
import operator
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import msgspec

from ledger.values import format_time
from ledger.visual import Page, Timelines, WeekCount, dollars

VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"  # a name only: vl-convert bundles v5
PAGE_ROWS = 100  # rows per page of the findings and duty tables
_OK, _OVER = "#1f5f99", "#b3261e"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
_SVG_ROOT = re.compile(r"<svg\b")


def render(page: Page) -> str:
    """The whole page, as text."""
    script = _asset("report.js")
    style = _asset("report.css")
    csp = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; "
           f"script-src 'sha256-{_sha256(script)}'")
    origin = page.origin or "(empty ledger)"
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">\n',
        '<meta name="referrer" content="no-referrer">\n',
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        f'<meta name="generator" content="custody report html">\n<title>Custody report: {_e(origin)} as of '
        f"{_e(format_time(page.as_of))}</title>\n<style>{style}</style>\n</head>\n<body>\n",
        '<a class="skip" href="#main">Skip to the report</a>\n',
        _banner(page),
        _nav(page),
        '<main id="main" tabindex="-1">\n',
        _glance(page),
        _flow(page),
        _findings(page),
        _duty(page),
        _customers(page),
        _volume(page),
        _timeline(page),
        "</main>\n",
        _footer(page),
        f'<script type="application/json" id="report-data">{_data(page)}</script>\n',
        f"<script>{script}</script>\n</body>\n</html>\n",
    ]
    return "".join(parts)


# --- sections ------------------------------------------------------------------------------------------


def _banner(page: Page) -> str:
    v = page.verification
    if v.intact:
        verdict = (f'<p class="verdict ok" id="verdict"><strong>Ledger verified intact</strong>: all '
                   f"{v.log_size:,} statements passed {len(v.checks)} checks when this report was made.</p>")
    else:
        first = v.failures[0] if v.failures else None
        where = f" at index {first.index}" if first is not None and first.index is not None else ""
        what = f" First: {_e(first.check)}{where}: {_e(first.detail)}" if first is not None else ""
        verdict = (f'<p class="verdict bad" id="verdict"><strong>Ledger NOT intact</strong>: '
                   f"{len(v.failures)} failure(s) listed by verify.{what}</p>")
    rows = [("Origin", f"<code>{_e(page.origin or '')}</code>"),
            ("As of", _time(page.as_of) + (" (--until)" if page.until is not None else " (when made)")),
            ("Log size", f'<span id="log-size">{page.log_size:,}</span> statements'
             + (f" folded (of {page.ledger_size:,} in the ledger)" if page.log_size != page.ledger_size else "")),
            ("Latest checkpoint", _checkpoint(page)),
            ("Verification", f"{'intact' if v.intact else 'NOT intact'}; checks: "
             + ", ".join(f"<code>{_e(c)}</code>" for c in v.checks)
             + "".join(f'<br><span class="note">{_e(w)}</span>' for w in v.warnings)),
            ("Policy", f"<code>{_e(page.policy)}</code>"),
            ("Report made", _time(page.made))]
    items = "".join(f"<div><dt>{k}</dt><dd>{val}</dd></div>" for k, val in rows)
    return (f"<header class=\"banner\">\n<h1>Custody audit report <span class=\"origin\">{_e(page.origin or '')}"
            f'</span></h1>\n{verdict}\n<dl class="facts">{items}</dl>\n</header>\n')


def _checkpoint(page: Page) -> str:
    cp = page.checkpoint
    if cp is None:
        return "none stored that covers this log size"
    root = base64.b64encode(cp.root).decode()
    signed = "signature verified" if cp.operator_verified else "signature NOT verified"
    cosigned = ", ".join(_e(c.name) + (f" at {_time(c.seconds * 1_000_000)}" if c.seconds is not None else "")
                         for c in cp.cosigners) or "no witness"
    return (f'size <span id="checkpoint-size">{cp.size:,}</span>, root <code class="hash">{cp.root.hex()}</code> '
            f"(<code>{root}</code>)<br>signed by the operator <code>{_e(cp.operator)}</code> ({signed}); "
            f"cosigned by {cosigned}")


def _nav(page: Page) -> str:
    links = [("glance", "At a glance"), ("flow", "Flow"), ("findings", "Findings"), ("duty", "Duty"),
             ("customers", "Customers")]
    if _volume_periods(page):
        links.append(("volume", "Volume"))
    links.append(("unit", "Unit timeline"))
    return ('<nav aria-label="Sections"><ul>' + "".join(f'<li><a href="#{i}">{t}</a></li>' for i, t in links)
            + "</ul></nav>\n")


def _glance(page: Page) -> str:
    compliance = page.reports["compliance"]
    counts: Mapping[str, int] = compliance["counts"]
    total = len(compliance["findings"])
    duty = page.reports["duty"]["total"]
    over = [c for c in page.reports["customers"]["customers"] if c["over_cap"] > 0]
    units = page.reports["units"]["total"]
    codes = "".join(f"<li>{_e(c)} {n:,}</li>" for c, n in counts.items())
    cards = [
        ("Findings", f'<span class="big" id="glance-findings">{total:,}</span> finding(s)'
         + (f" in {len(counts)} code(s):" if counts else ": compliant"), total > 0,
         f'<ul class="glance-codes">{codes}</ul>' if counts else ""),
        ("Duty shortfall", f"<span class=\"big\" id=\"glance-shortfall\">{dollars(duty['shortfall_cents'])}</span>"
         f" owed on {sum(1 for e in page.reports['duty']['entries'] if e['shortfall_cents'] > 0):,} of "
         f"{duty['entries']:,} customs entries", duty["shortfall_cents"] > 0, ""),
        ("Customers over cap", f'<span class="big" id="glance-over">{len(over):,}</span> '
         + ("over cap: " + ", ".join(f"{_e(c['id'])} (OVER CAP by {c['over_cap']:,}: {c['consigned']:,} "
                                     f"consigned, cap {c['cap']:,})" for c in over) if over else "none over cap"),
         bool(over), ""),
        ("Units", f'<span class="big" id="glance-units">{units:,}</span> unit(s) in the ledger', False, ""),
    ]
    body = "".join(f"<li class=\"card{' alert' if bad else ''}\"><h3>{t}</h3><p>{text}"
                   f"{' <strong class=flag>Attention</strong>' if bad else ''}</p>{extra}</li>"
                   for t, text, bad, extra in cards)
    return _section("glance", "At a glance", f'<ul class="cards">{body}</ul>')


def _flow(page: Page) -> str:
    doc = page.reports["units"]
    steps: Mapping[str, int] = doc["steps"]
    rows = [{"step": s, "units": n} for s, n in steps.items()]
    chart = _figure("flow-chart", "Units by their latest step, in the order of the flow (terminal steps last)",
                    _bar_chart(rows, "step", "units", list(steps)))
    body = "".join(f'<tr data-step="{_e(s)}"><th scope="row">{_e(s)}</th><td class="num">{n:,}</td></tr>'
                   for s, n in steps.items())
    late = doc.get("overdue") or []
    table = (f'<table id="flow-table"><caption>Units per step (report units)</caption><thead><tr>'
             f'<th scope="col">step</th><th scope="col" class="num">units</th></tr></thead><tbody>{body}</tbody>'
             f"<tfoot><tr><th scope=\"row\">total</th><td class=\"num\" id=\"flow-total\">{doc['total']:,}</td>"
             f"</tr></tfoot></table>")
    overdue = (f"<p><strong>{len(late):,}</strong> unit(s) overdue: waiting at a step longer than the policy allows "
               f"(code OVERDUE among the findings).</p>") if late else "<p>No unit is overdue.</p>"
    return _section("flow", "Flow of units", chart + table + overdue)


def _findings(page: Page) -> str:
    doc = page.reports["compliance"]
    counts: Mapping[str, int] = doc["counts"]
    total = len(doc["findings"])
    if not total:
        return _section("findings", "Findings", '<p id="no-findings">No findings: compliant as of this time.</p>'
                        + _findings_table(page))
    rows = [{"code": c, "findings": n} for c, n in counts.items()]
    by_code = _figure("codes-chart", "Findings by code", _bar_chart(rows, "code", "findings", list(counts)))
    count_rows = "".join(
        f'<tr data-code="{_e(c)}"><th scope="row">{_e(c)}</th><td class="num">{n:,}</td><td class="control">'
        f'<button type="button" class="show-code" data-code="{_e(c)}">List the {n:,} {_e(c)}</button></td></tr>'
        for c, n in counts.items())
    count_table = (f'<table id="codes-table"><caption>Findings by code</caption><thead><tr><th scope="col">code'
                   f'</th><th scope="col" class="num">findings</th><th scope="col" class="control">list</th>'
                   f'</tr></thead><tbody>{count_rows}</tbody><tfoot><tr><th scope="row">total</th>'
                   f'<td class="num" id="findings-total">{total:,}</td><td class="control"></td></tr></tfoot>'
                   f"</table>")
    weekly = _weeks(page.weeks, list(counts))
    return _section("findings", "Findings", by_code + count_table + weekly + _findings_table(page))


def _weeks(weeks: Sequence[WeekCount], codes: list[str]) -> str:
    if not weeks:
        return ""
    chart = _figure("weeks-chart", "Findings by week (of the statement that shows them) and code; each cell "
                    "gives its count", _week_chart(weeks, codes))
    by_week: dict[str, dict[str, int]] = {}
    for w in weeks:
        by_week.setdefault(w.week, {})[w.code] = w.count
    head = "".join(f'<th scope="col" class="num">{_e(c)}</th>' for c in codes)
    body = "".join(f'<tr><th scope="row">{_e(week)}</th>'
                   + "".join(f'<td class="num">{n.get(c, 0):,}</td>' for c in codes)
                   + f'<td class="num">{sum(n.values()):,}</td></tr>' for week, n in by_week.items())
    return (f'{chart}<div class="scroll" tabindex="0" role="region" aria-label="Findings by week, table">'
            f'<table id="weeks-table"><caption>Findings by week (starting Monday, UTC) and code</caption>'
            f'<thead><tr><th scope="col">week of</th>{head}<th scope="col" class="num">all</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _findings_table(page: Page) -> str:
    counts: Mapping[str, int] = page.reports["compliance"]["counts"]
    options = "".join(f'<option value="{_e(c)}">{_e(c)} ({n:,})</option>' for c, n in counts.items())
    total = len(page.reports["compliance"]["findings"])
    return (f'<h3 id="findings-list-h">Every finding</h3>\n'
            f'<form class="controls" id="findings-form" role="search" aria-label="Filter the findings">'
            f'<label for="f-code">Code</label> <select id="f-code"><option value="">all codes ({total:,})'
            f'</option>{options}</select> <label for="f-serial">Serial contains</label> '
            f'<input id="f-serial" type="search" autocomplete="off" spellcheck="false"> '
            f'<button type="submit">Filter</button> <button type="reset">Clear</button></form>\n'
            f'<p id="f-status" class="status" role="status" aria-live="polite"></p>\n'
            f'<table id="findings-table" aria-labelledby="findings-list-h"><thead><tr><th scope="col">code</th>'
            f'<th scope="col">serial</th><th scope="col" class="num">index</th><th scope="col">detail</th>'
            f"</tr></thead><tbody></tbody></table>\n"
            f'<div class="pager" id="f-pager"><button type="button" data-move="-1">Previous page</button> '
            f'<button type="button" data-move="1">Next page</button></div>\n'
            f"<noscript><p>The list of findings needs JavaScript; the counts above and "
            f"<code>custody report compliance</code> give them without it.</p></noscript>\n")


def _duty(page: Page) -> str:
    doc = page.reports["duty"]
    t = doc["total"]
    foot = (f"<tr id=\"duty-total\"><th scope=\"row\">total ({t['entries']:,} entries)</th>"
            f"<td class=\"num\">{sum(e['statements'] for e in doc['entries']):,}</td>"
            f"<td class=\"num\">{t['units']:,}</td>"
            + "".join(f'<td class="num" data-col="{k}">{dollars(t[k])}</td>' for k in _MONEY)
            + f"<td>{'SHORTFALL' if t['shortfall_cents'] > 0 else 'paid in full'}</td></tr>")
    head = "".join(f'<th scope="col" class="num">{label}</th>' for label in
                   ("statements", "units", "entered value", "duty due", "paid", "shortfall"))
    return _section("duty", "Duty per customs entry", (
        "<p>Section 232 duty due on each entry's entered value, what was paid, and what is still owed.</p>"
        '<form class="controls" id="duty-form" role="search" aria-label="Filter the customs entries">'
        '<label for="d-entry">Entry contains</label> <input id="d-entry" type="search" autocomplete="off" '
        'spellcheck="false"> <label><input id="d-short" type="checkbox"> only entries with a shortfall'
        '</label> <button type="submit">Filter</button> <button type="reset">Clear</button></form>\n'
        '<p id="d-status" class="status" role="status" aria-live="polite"></p>\n'
        f'<table id="duty-table"><caption>Duty per customs entry, in dollars</caption><thead><tr>'
        f'<th scope="col">entry</th>{head}<th scope="col">status</th></tr></thead><tbody></tbody>'
        f"<tfoot>{foot}</tfoot></table>\n"
        '<div class="pager" id="d-pager"><button type="button" data-move="-1">Previous page</button> '
        '<button type="button" data-move="1">Next page</button></div>\n'))


_MONEY = ("entered_value_cents", "duty_due_cents", "paid_cents", "shortfall_cents")


def _customers(page: Page) -> str:
    listed: Sequence[Mapping[str, Any]] = page.reports["customers"]["customers"]
    if not listed:
        return _section("customers", "Customers against their caps", "<p>No customer has been approved.</p>")
    rows = [{"id": c["id"], "consigned": c["consigned"], "cap": c["cap"], "over": c["over_cap"],
             "end": max(c["consigned"], c["cap"]),
             "label": (f"{c['consigned']:,} of cap {c['cap']:,}"
                       + (f": OVER CAP by {c['over_cap']:,}" if c["over_cap"] > 0 else ""))} for c in listed]
    chart = _figure("customers-chart", "Units consigned to each customer (bars) against its cap (black tick); "
                    "a customer over its cap is labelled OVER CAP", _limit_chart(rows, "id", "consigned", "cap"))
    columns = ("status", "license", "valid_until", "cap", "consigned", "received", "remaining", "over_cap")
    body = "".join(
        f"<tr data-customer=\"{_e(c['id'])}\"{' class=over' if c['over_cap'] > 0 else ''}>"
        f"<th scope=\"row\">{_e(c['id'])}</th>"
        + "".join(f"<td data-col=\"{k}\"{' class=num' if isinstance(c[k], int) else ''}>{_cell(c[k])}</td>"
                  for k in columns)
        + f"<td data-col=\"mark\">{_over_text(c['over_cap'], 'cap')}</td></tr>" for c in listed)
    head = "".join(f"<th scope=\"col\">{k.replace('_', ' ')}</th>" for k in columns)
    table = (f'<table id="customers-table"><caption>Customers against their caps</caption><thead><tr>'
             f'<th scope="col">customer</th>{head}<th scope="col">cap check</th></tr></thead>'
             f"<tbody>{body}</tbody></table>")
    return _section("customers", "Customers against their caps", chart + table)


def _volume_periods(page: Page) -> Sequence[Mapping[str, Any]]:
    doc = page.reports.get("volume")
    return list(doc.get("periods") or []) if doc else []


def _volume(page: Page) -> str:
    periods = _volume_periods(page)
    if not periods:
        return ""
    rows = [{"period": f"{p['model']} {str(p['from'])[:10]} to {str(p['until'])[:10]}",
             "exported": p["exported"], "limit": p["limit"], "over": p["over"] or 0,
             "end": max(p["exported"], p["limit"] or 0),
             "label": f"{p['exported']:,}" + (f" of limit {p['limit']:,}" if p["limit"] is not None else "")
             + (f": OVER LIMIT by {p['over']:,}" if p["over"] else "")} for p in periods]
    chart = _figure("volume-chart", "Units exported in each declared period (bars) against its limit (black tick); "
                    "a period over its limit is labelled OVER LIMIT",
                    _limit_chart(rows, "period", "exported", "limit"))
    columns = ("model", "from", "until", "us_units", "limit", "exported", "over", "index")
    body = "".join(
        f"<tr data-period=\"{n}\"{' class=over' if p['over'] else ''}>"
        + "".join(f"<td data-col=\"{k}\"{' class=num' if isinstance(p[k], int) else ''}>{_cell(p[k])}</td>"
                  for k in columns)
        + f"<td data-col=\"mark\">{_over_text(p['over'] or 0, 'limit', p['limit'] is None)}</td></tr>"
        for n, p in enumerate(periods))
    head = "".join(f"<th scope=\"col\">{k.replace('_', ' ')}</th>" for k in columns)
    table = (f'<table id="volume-table"><caption>Declared U.S. volume periods against their export limits'
             f'</caption><thead><tr>{head}<th scope="col">limit check</th></tr></thead><tbody>{body}</tbody>'
             f"</table>")
    return _section("volume", "Volume periods against their limits", chart + table)


def _timeline(page: Page) -> str:
    t = page.timelines
    if t.omitted:
        inner = (f"<p>This ledger holds {t.units:,} units, more than a page carries timelines for; "
                 f"<code>custody history SERIAL</code> gives any unit's.</p>")
    else:
        inner = ('<form class="controls" id="unit-form" role="search" aria-label="Find a unit">'
                 '<label for="u-serial">Serial</label> <input id="u-serial" type="search" autocomplete="off" '
                 'spellcheck="false"> <button type="submit">Show its timeline</button></form>\n'
                 '<p class="hint">Or choose a serial in the list of findings.</p>\n'
                 '<div id="unit-result" role="status" aria-live="polite"></div>\n')
    return _section("unit", "One unit's timeline", inner)


def _footer(page: Page) -> str:
    return ("<footer><p>Made by <code>custody report html</code>"
            + (f" with <code>--until {_e(format_time(page.until))}</code>" if page.until is not None else "")
            + f" at {_time(page.made)}. The numbers are those of <code>custody report compliance|duty|customers|"
            "units --json</code> for the same time. To check this ledger yourself: <code>custody verify "
            "--checkpoint CHECKPOINT</code> with the checkpoint named above.</p></footer>\n")


# --- charts --------------------------------------------------------------------------------------------


def _figure(ident: str, caption: str, svg: str) -> str:
    return (f'<figure id="{ident}" class="chart"><div class="svg" role="img" aria-label="{_e(caption)}; '
            f'the table below gives the numbers">{svg}</div><figcaption>{_e(caption)}</figcaption></figure>\n')


def _config() -> dict[str, Any]:
    return {"font": _FONT, "view": {"stroke": None},
            "axis": {"labelColor": "#1a1a1a", "titleColor": "#1a1a1a", "labelFontSize": 12, "titleFontSize": 12,
                     "domainColor": "#555", "tickColor": "#555", "gridColor": "#ddd"},
            "text": {"fontSize": 12, "color": "#1a1a1a"}}


def _bar_chart(rows: list[dict[str, Any]], label: str, value: str, order: list[str]) -> str:
    y = {"field": label, "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 260}}
    x = {"field": value, "type": "quantitative", "title": value, "axis": {"tickMinStep": 1, "format": "~s"}}
    return _svg({"data": {"values": rows}, "width": 460, "height": {"step": 24}, "encoding": {"x": x, "y": y},
                 "layer": [{"mark": {"type": "bar", "color": _OK}},
                           {"mark": {"type": "text", "align": "left", "dx": 4},
                            "encoding": {"text": {"field": value, "type": "quantitative", "format": ","}}}]})


def _week_chart(weeks: Sequence[WeekCount], codes: list[str]) -> str:
    rows = [{"week": w.week, "code": w.code, "count": w.count} for w in weeks]
    x = {"field": "week", "type": "ordinal", "title": "week starting (Monday, UTC)", "axis": {"labelAngle": -45}}
    y = {"field": "code", "type": "nominal", "sort": codes, "title": None, "axis": {"labelLimit": 260}}
    colour = {"field": "count", "type": "quantitative", "legend": None, "scale": {"range": ["#e3edf9", "#8fb3e0"]}}
    return _svg({"data": {"values": rows}, "width": {"step": 84}, "height": {"step": 24},
                 "encoding": {"x": x, "y": y},
                 "layer": [{"mark": {"type": "rect", "stroke": "#fff"}, "encoding": {"color": colour}},
                           {"mark": "text",
                            "encoding": {"text": {"field": "count", "type": "quantitative", "format": ","}}}]})


def _limit_chart(rows: list[dict[str, Any]], label: str, value: str, limit: str) -> str:
    """Bars of `value` against a tick at `limit`; a row whose `over` > 0 is drawn in another colour and its
    label says so in words (`label`), so that colour is never the only mark."""
    y = {"field": label, "type": "nominal", "sort": None, "title": None, "axis": {"labelLimit": 260}}
    units = {"type": "quantitative", "title": "units"}
    colour = {"condition": {"test": "datum.over > 0", "value": _OVER}, "value": _OK}
    return _svg({"data": {"values": rows}, "width": 460, "height": {"step": 28}, "encoding": {"y": y},
                 "padding": {"left": 5, "top": 5, "bottom": 5, "right": 240},  # room for the labels
                 "layer": [{"mark": "bar", "encoding": {"x": {"field": value, **units}, "color": colour}},
                           {"mark": {"type": "tick", "color": "#000", "thickness": 3, "size": 22},
                            "encoding": {"x": {"field": limit, **units}}},
                           {"mark": {"type": "text", "align": "left", "dx": 8},
                            "encoding": {"x": {"field": "end", **units},
                                         "text": {"field": "label", "type": "nominal"}}}]})


def _svg(spec: dict[str, Any]) -> str:
    """Render a Vega-Lite specification to SVG, hidden from assistive technology (its figure is labelled
    and its table follows). vl-convert runs V8 in threads of this process: charts come after `verify`,
    which forks its workers, never before."""
    import vl_convert

    spec = {"$schema": VEGA_LITE_SCHEMA, **spec, "config": _config(), "background": "white"}
    svg: str = vl_convert.vegalite_to_svg(spec)
    return _SVG_ROOT.sub('<svg aria-hidden="true" focusable="false"', svg, count=1)


# --- the data the script reads -------------------------------------------------------------------------


def _data(page: Page) -> str:
    compliance: Sequence[Mapping[str, Any]] = page.reports["compliance"]["findings"]
    # a finding is [code number, serial, index, detail number]: codes and details are few, findings many,
    # so each column is taken whole (map, zip) rather than finding by finding
    codes = {code: n for n, code in enumerate(dict.fromkeys(map(_CODE, compliance)))}
    details = {detail: n for n, detail in enumerate(dict.fromkeys(map(_DETAIL, compliance)))}
    findings = zip(map(codes.__getitem__, map(_CODE, compliance)), map(_SERIAL, compliance),
                   map(_INDEX, compliance), map(details.__getitem__, map(_DETAIL, compliance)), strict=True)
    entries = [[e["entry"], e["statements"], e["units"], *(dollars(e[k]) for k in _MONEY), e["shortfall_cents"] > 0]
               for e in page.reports["duty"]["entries"]]
    document: dict[str, Any] = {"pageRows": PAGE_ROWS, "codes": list(codes), "details": list(details),
                                "findings": list(findings), "entries": entries}
    document.update(_timeline_data(page.timelines))
    text = _ENCODE(document).decode()
    # inside <script>: no "</script" or "<!--" can appear once every "<" is escaped (JSON allows \u003c)
    return text.replace("<", "\\u003c")


_CODE, _SERIAL, _INDEX, _DETAIL = (operator.itemgetter(k) for k in ("code", "serial", "index", "detail"))
_ENCODE = msgspec.json.Encoder().encode  # tuples as arrays, int keys as strings


def _timeline_data(t: Timelines) -> dict[str, Any]:
    if t.omitted:
        return {"omitted": True}
    signers: dict[tuple[str, str | None], int] = {}
    kinds: dict[str, int] = {}
    times: dict[int, str] = {}  # a shipment's statements often share their time
    steps: dict[int, tuple[Any, ...]] = {}
    for i, s in t.steps.items():
        when = times.get(s.at) or times.setdefault(s.at, format_time(s.at))
        steps[i] = (kinds.setdefault(s.kind, len(kinds)), when,
                    signers.setdefault((s.signer, s.participant), len(signers)), s.hash.hex(), s.place, s.details)
    return {"omitted": False, "kinds": list(kinds), "signers": list(signers), "steps": steps,
            "chains": t.chains, "serials": t.serials, "chainOf": t.chain_of}


# --- small helpers -------------------------------------------------------------------------------------


def _asset(name: str) -> str:
    return (resources.files("ledger") / "visual_assets" / name).read_text(encoding="utf-8")


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _time(micros: int) -> str:
    text = format_time(micros)
    return f'<time datetime="{text}">{text}</time>'


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return _e(value)


def _over_text(over: int, what: str, unchecked: bool = False) -> str:
    if unchecked:
        return f"no {what} under this policy"
    return f"<strong>OVER {what.upper()} by {over:,}</strong>" if over > 0 else f"within {what}"


def _section(ident: str, title: str, body: str) -> str:
    return (f'<section id="{ident}" aria-labelledby="{ident}-h">\n<h2 id="{ident}-h">{_e(title)}</h2>\n'
            f"{body}</section>\n")
