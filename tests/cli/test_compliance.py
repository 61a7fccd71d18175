"""Every compliance code of DESIGN.md, created from the command line; the pre-check; the fold's edge cases.

One ledger per store serves the whole module (setting one up costs more than most tests here): each test
takes its own serials, customers and keys, and asserts only about those, so the tests stay independent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ledger import append, fold, keys, values, views
from ledger.policy import DEFAULT_POLICY_TEXT
from ledger.state import State
from ledger.statement import decode
from ledger.store import Store
from tests.conftest import ORIGIN, PARTICIPANTS, Ledger, _postgres_url, make_keys, new_postgres_schema

MODEL = ("--model", "H200-SXM5-141GB", "--site", "Fab 18", "--lot", "L1")
SHIP = ("--port-of-entry", "LAX", "--waybill", "W-1")
PASS = ("--result", "pass", "--site", "San Jose", "--country", "US", "--report", "R-1")
TO_ALIBABA = ("--consignee", "alibaba", "--license", "LIC-1", "--destination", "CN")
RECEIVED = ("--site", "Hangzhou")
ALLOW = "--allow-violation"
LICENSES = {"alibaba": "LIC-1", "bytedance": "LIC-2"}  # the approvals' licences (LICENSE_MISMATCH)


def duty(serials: list[str], entry: str, *, value_per_unit: int = 20_000,
         rate: float = 0.25) -> tuple[str, ...]:
    value = value_per_unit * len(serials)
    return ("--entry", entry, "--entered-value", f"{value}.00", "--duty", f"{value * rate:.2f}")


def build_ledger(directory: Path, url: str) -> Ledger:
    """What the conftest `ledger` fixture makes (participants, alibaba cap 100, bytedance cap 5), anywhere."""
    make_keys(directory / "keys", ["authority", "operator", "rogue", *PARTICIPANTS])
    made = Ledger(directory, url, CliRunner())
    made.cli("init", "--origin", ORIGIN, "--authority", made.key("authority"), "--operator",
             made.pub("operator"), ok=True)
    for name, (pid, role, country) in PARTICIPANTS.items():
        made.cli("participant", "add", pid, "--role", role, "--pubkey", made.pub(name), "--country", country,
                 "--key", made.key("authority"), ok=True)
    for customer, cap in (("alibaba", "100"), ("bytedance", "5")):
        made.cli("customer", "approve", customer, "--cap", cap, "--license", LICENSES[customer], "--key",
                 made.key("authority"), ok=True)
    return made


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def book(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         fast_cli: None) -> Ledger:
    """The conftest `ledger`, once per store for this module."""
    directory = tmp_path_factory.mktemp(f"compliance-{request.param}")
    if request.param == "sqlite":
        return build_ledger(directory, str(directory / "custody.db"))
    if not _postgres_url():
        pytest.skip("PostgreSQL tests need CUSTODY_TEST_PG (set by .ci/run)")
    return build_ledger(directory, new_postgres_schema())


def index_of(result: Any) -> int:
    """The log index a `record` (or admin) command reports."""
    assert result.exit_code == 0, (result.stdout, result.stderr)
    match = re.search(r"at index (\d+)", result.stdout)
    assert match, result.stdout
    return int(match.group(1))


def step(book: Ledger, name: str, signer: str, serials: list[str], *extra: str) -> int:
    return index_of(book.record(name, signer, serials, *extra))


def to_received(book: Ledger, serials: list[str], *, skip: str = "", at: str | None = None) -> None:
    """Take `serials` cleanly up to (not including) the step named by `skip`, in DESIGN's order."""
    plan = [("fabricated", "tsmc", MODEL), ("shipped-to-us", "kerry", SHIP), ("inspected", "uslab", PASS),
            ("duty-paid", "cbp", duty(serials, f"E-{serials[0]}")), ("re-exported", "nvidia", TO_ALIBABA),
            ("received", "alibaba", RECEIVED)]
    when = ("--at", at) if at else ()
    for name, signer, extra in plan:
        if name == skip:
            return
        step(book, name, signer, serials, *extra, *when)


def compliance(book: Ledger, *extra: str) -> dict[str, Any]:
    result = book.cli("report", "compliance", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert set(document) == {"as_of", "log_size", "findings", "counts"}
    assert document["as_of"].endswith("Z")
    for code, count in document["counts"].items():
        assert count == sum(1 for f in document["findings"] if f["code"] == code)
    return document


def codes_of(findings: list[dict[str, Any]], serials: list[str]) -> dict[str, set[str]]:
    return {s: {f["code"] for f in findings if f["serial"] == s} for s in serials}


def assert_found(book: Ledger, code: str, serials: list[str], index: int, *, alone: bool = True,
                 serial_null: bool = False) -> None:
    """`code` at `index` for each serial, in `report compliance --json` and in `verify --json` (exit 3)."""
    report = compliance(book)
    wanted = [{"code": code, "serial": None if serial_null else s, "index": index} for s in serials]
    shown = [{k: f[k] for k in ("code", "serial", "index")} for f in report["findings"]]
    for finding in wanted:
        assert finding in shown, (finding, shown)
    assert all(f["detail"] for f in report["findings"])
    if alone and not serial_null:
        assert codes_of(report["findings"], serials) == {s: {code} for s in serials}
    result = book.cli("verify", "--json")
    assert result.exit_code == 3, result.stderr
    verified = json.loads(result.stdout)
    assert verified["intact"] is True and verified["compliant"] is False
    assert verified["violations"] == len(verified["findings"])
    in_verify = [{k: f[k] for k in ("code", "serial", "index")} for f in verified["findings"]]
    for finding in wanted:
        assert finding in in_verify


# --- one test per code ----------------------------------------------------------------------------------


def test_clean_unit_has_no_findings(book: Ledger) -> None:
    to_received(book, ["C1", "C2"])  # every step passes the pre-check without --allow-violation
    report = compliance(book)
    assert codes_of(report["findings"], ["C1", "C2"]) == {"C1": set(), "C2": set()}
    history = json.loads(book.cli("history", "C1", "--json", ok=True).stdout)
    assert history["findings"] == []


def test_prohibited_model(book: Ledger) -> None:
    index = step(book, "fabricated", "tsmc", ["PM1", "PM2"], "--model", "B200-SXM6-192GB", "--site", "F",
                 "--lot", "L", ALLOW)
    assert_found(book, "PROHIBITED_MODEL", ["PM1", "PM2"], index)


def test_unapproved_fab(book: Ledger) -> None:
    book.cli("participant", "add", "smic", "--role", "fab", "--pubkey", book.pub("rogue"), "--country", "CN",
             "--key", book.key("authority"), ok=True)
    index = step(book, "fabricated", "rogue", ["UF1"], *MODEL, ALLOW)
    assert_found(book, "UNAPPROVED_FAB", ["UF1"], index)


def test_not_routed_via_us(book: Ledger) -> None:
    step(book, "fabricated", "tsmc", ["NR1"], *MODEL)
    index = step(book, "inspected", "uslab", ["NR1"], *PASS, ALLOW)
    assert_found(book, "NOT_ROUTED_VIA_US", ["NR1"], index)


def test_skipped_inspection(book: Ledger) -> None:
    to_received(book, ["SI1"], skip="inspected")
    step(book, "duty-paid", "cbp", ["SI1"], *duty(["SI1"], "E-SI1"))
    index = step(book, "re-exported", "nvidia", ["SI1"], *TO_ALIBABA, ALLOW)
    assert_found(book, "SKIPPED_INSPECTION", ["SI1"], index)


def test_failed_inspection(book: Ledger) -> None:
    to_received(book, ["FI1"], skip="inspected")
    step(book, "inspected", "uslab", ["FI1"], "--result", "fail", "--site", "S", "--country", "US",
         "--report", "R")
    step(book, "duty-paid", "cbp", ["FI1"], *duty(["FI1"], "E-FI1"))
    index = step(book, "re-exported", "nvidia", ["FI1"], *TO_ALIBABA, ALLOW)
    assert_found(book, "FAILED_INSPECTION", ["FI1"], index)


def test_latest_inspection_counts(book: Ledger) -> None:
    to_received(book, ["LI1"], skip="inspected")
    step(book, "inspected", "uslab", ["LI1"], "--result", "fail", "--site", "S", "--country", "US",
         "--report", "R")
    step(book, "inspected", "uslab", ["LI1"], *PASS)  # a re-test that passed
    step(book, "duty-paid", "cbp", ["LI1"], *duty(["LI1"], "E-LI1"))
    step(book, "re-exported", "nvidia", ["LI1"], *TO_ALIBABA)  # no --allow-violation needed
    assert codes_of(compliance(book)["findings"], ["LI1"]) == {"LI1": set()}


def test_inspection_outside_us(book: Ledger) -> None:
    to_received(book, ["IO1"], skip="inspected")
    index = step(book, "inspected", "uslab", ["IO1"], "--result", "pass", "--site", "Tijuana", "--country",
                 "MX", "--report", "R", ALLOW)
    assert_found(book, "INSPECTION_OUTSIDE_US", ["IO1"], index)


def test_skipped_duty(book: Ledger) -> None:
    to_received(book, ["SD1"], skip="duty-paid")
    index = step(book, "re-exported", "nvidia", ["SD1"], *TO_ALIBABA, ALLOW)
    assert_found(book, "SKIPPED_DUTY", ["SD1"], index)


def test_underpaid_duty(book: Ledger) -> None:
    serials = ["UD1", "UD2"]
    to_received(book, serials, skip="duty-paid")
    # due: ceil(4000000.01 × 2500 / 10000) = 1000000.0025 → 100000001 cents; paying 100000000 is a cent short
    index = step(book, "duty-paid", "cbp", serials, "--entry", "E-UD", "--entered-value", "40000.01",
                 "--duty", "10000.00", ALLOW)
    assert_found(book, "UNDERPAID_DUTY", serials, index)


def test_undervalued_entry(book: Ledger) -> None:
    serials = ["UV1", "UV2"]
    to_received(book, serials, skip="duty-paid")
    # the minimum is $20,000 a unit: $39,999.99 for two is a cent short (the duty on it is paid in full)
    index = step(book, "duty-paid", "cbp", serials, "--entry", "E-UV", "--entered-value", "39999.99",
                 "--duty", "10000.00", ALLOW)
    assert_found(book, "UNDERVALUED_ENTRY", serials, index)


def test_skipped_export(book: Ledger) -> None:
    to_received(book, ["SE1"], skip="re-exported")
    index = step(book, "received", "alibaba", ["SE1"], *RECEIVED, ALLOW)
    assert_found(book, "SKIPPED_EXPORT", ["SE1"], index)


def test_unapproved_customer(book: Ledger) -> None:
    to_received(book, ["UC1"], skip="re-exported")
    index = step(book, "re-exported", "nvidia", ["UC1"], "--consignee", "tencent", "--license", "L",
                 "--destination", "CN", ALLOW)
    assert_found(book, "UNAPPROVED_CUSTOMER", ["UC1"], index)


def test_expired_and_suspended_approvals_are_not_in_force(book: Ledger) -> None:
    book.cli("customer", "approve", "baidu", "--cap", "10", "--license", "L", "--until", "2026-01-31",
             "--key", book.key("authority"), ok=True)
    book.cli("customer", "approve", "iflytek", "--cap", "10", "--license", "L", "--key",
             book.key("authority"), ok=True)
    book.cli("customer", "suspend", "iflytek", "--key", book.key("authority"), ok=True)
    to_received(book, ["EX1", "EX2"], skip="re-exported", at="2026-01-10")
    to_received(book, ["SU1"], skip="re-exported")
    to_baidu = ("--consignee", "baidu", "--license", "L", "--destination", "CN")
    # baidu's approval holds while at < 2026-02-01T00:00Z
    step(book, "re-exported", "nvidia", ["EX1"], *to_baidu, "--at", "2026-01-31T23:59:59.999999Z")
    expired = step(book, "re-exported", "nvidia", ["EX2"], *to_baidu, "--at", "2026-02-01T00:00:00Z", ALLOW)
    assert_found(book, "UNAPPROVED_CUSTOMER", ["EX2"], expired, alone=False)  # and, by now, OVERDUE
    now = codes_of(compliance(book)["findings"], ["EX1", "EX2"])
    assert now == {"EX1": {"OVERDUE"}, "EX2": {"UNAPPROVED_CUSTOMER", "OVERDUE"}}  # waiting since February
    index = step(book, "re-exported", "nvidia", ["SU1"], "--consignee", "iflytek", "--license", "L",
                 "--destination", "CN", ALLOW)
    assert_found(book, "UNAPPROVED_CUSTOMER", ["SU1"], index)
    customers = json.loads(book.cli("report", "customers", "--json", ok=True).stdout)["customers"]
    by_id = {c["id"]: c for c in customers}
    assert by_id["iflytek"]["status"] == "suspended" and by_id["iflytek"]["consigned"] == 0
    assert by_id["baidu"]["status"] == "expired" and by_id["baidu"]["consigned"] == 1
    assert by_id["baidu"]["valid_until"] == "2026-02-01T00:00:00Z"


def test_diversion(book: Ledger) -> None:
    to_received(book, ["DV1"], skip="received")
    index = step(book, "received", "bytedance", ["DV1"], "--site", "Ulanqab", ALLOW)
    assert_found(book, "DIVERSION", ["DV1"], index)


def test_cap_exceeded(book: Ledger) -> None:
    book.cli("customer", "approve", "zhipu", "--cap", "2", "--license", "L", "--key", book.key("authority"),
             ok=True)
    serials = ["CE1", "CE2", "CE3", "CE4"]
    to_received(book, serials, skip="re-exported")
    consign = ("--consignee", "zhipu", "--license", "L", "--destination", "CN")
    step(book, "re-exported", "nvidia", serials[:1], *consign)
    index = step(book, "re-exported", "nvidia", serials[1:], *consign, ALLOW)  # units 2, 3, 4 of cap 2
    assert_found(book, "CAP_EXCEEDED", serials[2:], index)
    assert codes_of(compliance(book)["findings"], serials[:2]) == {"CE1": set(), "CE2": set()}
    # a new approval replaces the cap, not the count
    book.cli("customer", "approve", "zhipu", "--cap", "5", "--license", "L", "--key", book.key("authority"),
             ok=True)
    to_received(book, ["CE5", "CE6"], skip="re-exported")
    step(book, "re-exported", "nvidia", ["CE5"], *consign)
    late = step(book, "re-exported", "nvidia", ["CE6"], *consign, ALLOW)
    assert_found(book, "CAP_EXCEEDED", ["CE6"], late)
    zhipu = next(c for c in json.loads(book.cli("report", "customers", "--json", ok=True).stdout)["customers"]
                 if c["id"] == "zhipu")
    assert (zhipu["cap"], zhipu["consigned"], zhipu["remaining"], zhipu["over_cap"]) == (5, 6, 0, 3)


def test_out_of_order(book: Ledger) -> None:
    to_received(book, ["OO1"], skip="received")
    index = step(book, "inspected", "uslab", ["OO1"], *PASS, ALLOW)  # stage 3 after stage 4
    assert_found(book, "OUT_OF_ORDER", ["OO1"], index)


def test_anything_after_received_is_out_of_order(book: Ledger) -> None:
    to_received(book, ["OO2"])
    index = step(book, "received", "alibaba", ["OO2"], *RECEIVED, ALLOW)
    assert_found(book, "OUT_OF_ORDER", ["OO2"], index)


def test_signed_after_revocation(book: Ledger) -> None:
    make_keys(book.dir / "keys", ["carrier2"])
    book.cli("participant", "add", "dhl", "--role", "carrier", "--pubkey", book.pub("carrier2"), "--country",
             "US", "--key", book.key("authority"), ok=True)

    def days_ago(days: float) -> str:
        return values.format_time(append.now_us() - int(days * values.MICROS_PER_DAY))

    step(book, "fabricated", "tsmc", ["SR1", "SR2"], *MODEL, "--at", days_ago(3))
    before = step(book, "shipped-to-us", "carrier2", ["SR1"], *SHIP, "--at", days_ago(2))
    after = step(book, "shipped-to-us", "carrier2", ["SR2"], *SHIP, "--at", days_ago(1))
    revoked = index_of(book.cli("participant", "revoke-key", book.pub("carrier2"), "--at", days_ago(1.5),
                                "--reason", "laptop stolen", "--key", book.key("authority")))
    assert revoked > after > before
    assert_found(book, "SIGNED_AFTER_REVOCATION", ["SR2"], after)
    assert codes_of(compliance(book)["findings"], ["SR1"]) == {"SR1": set()}
    refused = book.record("inspected", "carrier2", ["SR2"], *PASS)
    assert refused.exit_code == 1 and "revo" in refused.stderr


def test_overdue(book: Ledger) -> None:
    index = step(book, "fabricated", "tsmc", ["OD1"], *MODEL, "--at", "2026-01-02T00:00:00Z")
    late = compliance(book, "--until", "2026-02-15T00:00:00Z")  # 44 days at `fabricated`: limit 30
    assert {"code": "OVERDUE", "serial": "OD1", "index": index} in [
        {k: f[k] for k in ("code", "serial", "index")} for f in late["findings"]]
    assert late["as_of"] == "2026-02-15T00:00:00Z"
    early = compliance(book, "--until", "2026-01-20T00:00:00Z")  # 18 days: not yet
    assert not [f for f in early["findings"] if f["serial"] == "OD1" and f["code"] == "OVERDUE"]
    assert_found(book, "OVERDUE", ["OD1"], index)  # as of now
    result = book.cli("verify", "--json", "--as-of", "2026-01-25")
    assert not [f for f in json.loads(result.stdout)["findings"] if f["serial"] == "OD1"]
    result = book.cli("verify", "--json", "--as-of", "2026-02-05")  # 34 days
    assert [f["code"] for f in json.loads(result.stdout)["findings"] if f["serial"] == "OD1"] == ["OVERDUE"]


# --- the pre-check ----------------------------------------------------------------------------------------


def log_size(book: Ledger) -> int:
    return int(compliance(book)["log_size"])


def test_precheck_refuses_listing_findings_and_serials(book: Ledger) -> None:
    serials = ["PC1", "PC2", "PC3"]
    to_received(book, serials, skip="inspected")
    step(book, "duty-paid", "cbp", serials, *duty(serials, "E-PC"))
    size = log_size(book)
    result = book.record("re-exported", "nvidia", serials, *TO_ALIBABA)
    assert result.exit_code == 1 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "SKIPPED_INSPECTION" in result.stderr and all(s in result.stderr for s in serials)
    assert log_size(book) == size  # nothing written
    steps = json.loads(book.cli("history", "PC1", "--json").stdout)["steps"]
    assert steps[-1]["kind"] == "duty_paid"


def test_precheck_allow_violation_records_all(book: Ledger) -> None:
    to_received(book, ["PA1", "PA2"], skip="inspected")
    size = log_size(book)
    result = book.record("duty-paid", "cbp", ["PA1", "PA2"], "--entry", "E-PA", "--entered-value", "40000.00",
                         "--duty", "1.00", ALLOW)
    assert result.exit_code == 0, result.stderr
    assert "UNDERPAID_DUTY" in result.stderr
    assert log_size(book) == size + 1
    assert codes_of(compliance(book)["findings"], ["PA1", "PA2"]) == {"PA1": {"UNDERPAID_DUTY"},
                                                                      "PA2": {"UNDERPAID_DUTY"}}


def test_precheck_skip_violating_records_clean_units_only(book: Ledger) -> None:
    serials = ["PS1", "PS2", "PS3"]
    to_received(book, serials, skip="inspected")
    step(book, "inspected", "uslab", ["PS1", "PS3"], *PASS)
    step(book, "duty-paid", "cbp", serials, *duty(serials, "E-PS"))
    size = log_size(book)
    result = book.record("re-exported", "nvidia", serials, *TO_ALIBABA, "--skip-violating")
    assert result.exit_code == 0, result.stderr
    assert "for 2 units" in result.stdout and re.search(r"skipped 1 violating unit\(s\): PS2$", result.stdout,
                                                       re.M)
    assert log_size(book) == size + 1
    kinds = {s: [x["kind"] for x in json.loads(book.cli("history", s, "--json").stdout)["steps"]][-1]
             for s in serials}
    assert kinds == {"PS1": "re_exported", "PS2": "duty_paid", "PS3": "re_exported"}
    assert codes_of(compliance(book)["findings"], serials) == {"PS1": set(), "PS2": set(), "PS3": set()}


def test_skip_violating_with_nothing_clean_refuses(book: Ledger) -> None:
    to_received(book, ["PN1"], skip="inspected")
    size = log_size(book)
    result = book.record("re-exported", "nvidia", ["PN1"], *TO_ALIBABA, "--skip-violating")
    assert result.exit_code == 1 and "PN1" in result.stderr
    assert log_size(book) == size
    # no unit is clean: skipping the violating ones would leave nothing, so that is not suggested
    assert "--allow-violation" in result.stderr and "--skip-violating" not in result.stderr
    refused = book.record("re-exported", "nvidia", ["PN1"], *TO_ALIBABA)
    assert refused.exit_code == 1 and "--skip-violating" not in refused.stderr


def test_refusal_suggests_skipping_only_when_some_units_are_clean(book: Ledger) -> None:
    to_received(book, ["PQ1", "PQ2"], skip="inspected")
    step(book, "inspected", "uslab", ["PQ1"], *PASS)
    step(book, "duty-paid", "cbp", ["PQ1", "PQ2"], *duty(["PQ1", "PQ2"], "E-PQ"))
    refused = book.record("re-exported", "nvidia", ["PQ1", "PQ2"], *TO_ALIBABA)
    assert refused.exit_code == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "--allow-violation" in refused.stderr and "--skip-violating" in refused.stderr


def test_precheck_cap_counts_within_one_statement(book: Ledger) -> None:
    """--skip-violating against a cap keeps the units within it, in the statement's order."""
    book.cli("customer", "approve", "moonshot", "--cap", "2", "--license", "L", "--key",
             book.key("authority"), ok=True)
    serials = ["PK1", "PK2", "PK3"]
    to_received(book, serials, skip="re-exported")
    result = book.record("re-exported", "nvidia", serials, "--consignee", "moonshot", "--license", "L",
                         "--destination", "CN", "--skip-violating")
    assert result.exit_code == 0 and "PK3" in result.stdout.splitlines()[-1]


# --- the fold, library level ---------------------------------------------------------------------------


class Book:
    """A ledger built through the library (in-memory keys), for fold edge cases."""

    def __init__(self, url: str) -> None:
        self.store = Store(url, create=True)
        self.keys = {name: keys.generate() for name in ("authority", "operator", *PARTICIPANTS, "extra")}
        self.at = 1_767_225_600_000_000  # 2026-01-01
        append.open_ledger(self.store, self.keys["authority"], origin=ORIGIN, co_authorities=(),
                           operator=self.keys["operator"].public, policy_text=DEFAULT_POLICY_TEXT, at=self.at)
        for name, (pid, role, country) in PARTICIPANTS.items():
            self.admin("participant_registered", {"id": pid, "name": pid, "country": country, "roles": [role],
                                                  "key": self.keys[name].public})

    def tick(self) -> int:
        self.at += 60_000_000
        return self.at

    def admin(self, kind: str, data: dict[str, Any]) -> append.Recorded:
        return append.record(self.store, self.keys["authority"], kind, data, at=self.tick())

    def step(self, signer: str, kind: str, serials: list[str], data: dict[str, Any]) -> append.Recorded:
        return append.record(self.store, self.keys[signer], kind, data, serials, at=self.tick(), mode="allow")

    def state(self) -> State:
        return views.current(self.store, append.now_us())


@pytest.fixture
def lib(db_url: str) -> Iterator[Book]:
    made = Book(db_url)
    yield made
    made.store.close()


def _through_duty(lib: Book, serials: list[str]) -> None:
    lib.step("tsmc", "fabricated", serials, {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})
    lib.step("kerry", "shipped_to_us", serials, {"port_of_entry": "LAX", "waybill": "W"})
    lib.step("uslab", "inspected", serials, {"result": "pass", "site": "S", "country": "US", "report": "R"})
    lib.step("cbp", "duty_paid", serials, {"entry": "E", "entered_value": 2_000_000 * len(serials),
                                           "duty": 500_000 * len(serials)})


def test_cap_counts_distinct_units_per_customer(lib: Book) -> None:
    """Re-exported to A, then B, then A again: the unit counts once toward each cap."""
    for customer in ("alibaba", "bytedance"):
        lib.admin("customer_approved", {"id": customer, "cap": 1, "license": "L"})
    _through_duty(lib, ["D1"])
    for consignee in ("alibaba", "bytedance", "alibaba"):
        lib.step("nvidia", "re_exported", ["D1"], {"consignee": consignee, "license": "L",
                                                   "destination": "CN"})
    state = lib.state()
    assert (state.customers["alibaba"].consigned, state.customers["bytedance"].consigned) == (1, 1)
    assert {f.code for f in state.findings} == {"OUT_OF_ORDER"}


def test_second_revocation_with_earlier_effect_flags_the_rest_once(lib: Book) -> None:
    lib.admin("participant_registered", {"id": "dhl", "name": "DHL", "country": "US", "roles": ["carrier"],
                                         "key": lib.keys["extra"].public})
    lib.step("tsmc", "fabricated", ["R1", "R2"], {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})
    first = lib.step("extra", "shipped_to_us", ["R1"], {"port_of_entry": "LAX", "waybill": "W"})
    second = lib.step("extra", "shipped_to_us", ["R2"], {"port_of_entry": "LAX", "waybill": "W"})
    extra = lib.keys["extra"].public
    lib.admin("key_revoked", {"key": extra, "effective": second.statement.at, "reason": ""})
    assert [(f.serial, f.index) for f in lib.state().findings] == [("R2", second.index)]
    lib.admin("key_revoked", {"key": extra, "effective": first.statement.at, "reason": ""})
    found = sorted((f.serial, f.index) for f in lib.state().findings if f.code == "SIGNED_AFTER_REVOCATION")
    assert found == [("R1", first.index), ("R2", second.index)]


def test_revoked_authority_flags_its_admin_statements_with_null_serial(lib: Book) -> None:
    approval = lib.admin("customer_approved", {"id": "alibaba", "cap": 1, "license": "L"})
    revocation = append.record(lib.store, lib.keys["authority"], "key_revoked",
                               {"key": lib.keys["authority"].public, "effective": approval.statement.at,
                                "reason": "compromised"}, at=lib.tick())
    found = [(f.code, f.serial, f.index) for f in lib.state().findings]
    assert found == [("SIGNED_AFTER_REVOCATION", None, approval.index)]
    assert revocation.index == approval.index + 1


def test_batch_revocation_sees_stored_and_batched_statements(lib: Book) -> None:
    """A writer's batch that signs with a key and then revokes it flags both stored and batched work."""
    lib.admin("participant_registered", {"id": "dhl", "name": "DHL", "country": "US", "roles": ["carrier"],
                                         "key": lib.keys["extra"].public})
    lib.step("tsmc", "fabricated", ["B1", "B2"], {"model": "H200-SXM5-141GB", "site": "F", "lot": "L"})
    stored = lib.step("extra", "shipped_to_us", ["B1"], {"port_of_entry": "LAX", "waybill": "W"})
    batch = append.Batch(lib.store)
    sign = append.sign_statement
    batched = sign(lib.keys["extra"], origin=ORIGIN, kind="shipped_to_us", at=lib.tick(),
                   units=batch.heads(["B2"]), data={"port_of_entry": "LAX", "waybill": "W"})
    batch.add(batched)
    batch.add(sign(lib.keys["authority"], origin=ORIGIN, kind="key_revoked", at=lib.tick(), units=(),
                   data={"key": lib.keys["extra"].public, "effective": stored.statement.at, "reason": ""}))
    batch.commit()
    found = sorted(f.serial or "" for f in lib.state().findings if f.code == "SIGNED_AFTER_REVOCATION")
    assert found == ["B1", "B2"]


def test_fold_is_deterministic_and_views_agree(lib: Book) -> None:
    """Folding the stored log from scratch gives exactly the views' state."""
    lib.admin("customer_approved", {"id": "alibaba", "cap": 1, "license": "L"})
    _through_duty(lib, ["F1", "F2"])
    lib.step("nvidia", "re_exported", ["F1", "F2"], {"consignee": "alibaba", "license": "L",
                                                     "destination": "CN"})
    again = fold.fold((e.index, decode(e.wire)) for e in lib.store.log(0))
    stored = views.load_full(lib.store)
    assert again.units == stored.units and again.customers == stored.customers and again.duty == stored.duty
    assert sorted(again.findings, key=repr) == sorted(stored.findings, key=repr)
    assert again.authority_row() == stored.authority_row()


def test_module_ledger_is_intact(book: Ledger, tmp_path: Path) -> None:
    """Whatever the tests above recorded, the ledger stays intact: findings are never failures."""
    result = book.cli("verify", "--json")
    assert result.exit_code in (0, 3)
    assert json.loads(result.stdout)["intact"] is True
