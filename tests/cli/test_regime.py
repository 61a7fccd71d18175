"""Issue 17: terminal steps, location attestations, licence and destination checks, tariff lines and the
50 % volume rule, from the command line, each code at its exact statement and unit, on both stores.

One ledger per store serves the module (as in test_compliance.py): each test takes its own serials and
asserts only about them. Volume tests use their own model and a period of their own in 2021, so that no
other test's re-exports fall in it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger import values
from tests.cli.test_compliance import (
    ALLOW,
    PASS,
    RECEIVED,
    SHIP,
    TO_ALIBABA,
    assert_found,
    build_ledger,
    codes_of,
    compliance,
    duty,
    index_of,
    step,
    to_received,
)
from tests.conftest import Ledger, _postgres_url, new_postgres_schema

LOCATED_CN = ("--site", "Hangzhou DC-3", "--country", "CN", "--method", "network-latency")
SCRAP = ("--method", "shredded", "--site", "San Jose", "--certificate", "COD-1")
WITHDRAW_US = ("--reason", "sold in the U.S.", "--destination", "US")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def book(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         fast_cli: None) -> Ledger:
    directory = tmp_path_factory.mktemp(f"regime-{request.param}")
    if request.param == "sqlite":
        return build_ledger(directory, str(directory / "custody.db"))
    if not _postgres_url():
        pytest.skip("PostgreSQL tests need CUSTODY_TEST_PG (set by .ci/run)")
    return build_ledger(directory, new_postgres_schema())


def verify_json(book: Ledger, *extra: str) -> dict[str, Any]:
    result = book.cli("verify", "--json", *extra)
    assert result.exit_code in (0, 3), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def history(book: Ledger, serial: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(book.cli("history", serial, "--json", ok=True).stdout)
    return document


# --- location attestations (stage 6) ------------------------------------------------------------------


def test_located_after_received_is_clean(book: Ledger) -> None:
    to_received(book, ["LC1", "LC2"])
    index = step(book, "located", "alibaba", ["LC1", "LC2"], *LOCATED_CN)
    again = step(book, "located", "alibaba", ["LC1"], *LOCATED_CN)  # attestations repeat
    assert codes_of(compliance(book)["findings"], ["LC1", "LC2"]) == {"LC1": set(), "LC2": set()}
    steps = history(book, "LC1")["steps"]
    assert [s["kind"] for s in steps][-2:] == ["located", "located"]
    assert [s["index"] for s in steps][-2:] == [index, again]
    assert steps[-1]["data"] == {"site": "Hangzhou DC-3", "country": "CN", "method": "network-latency"}


def test_location_mismatch(book: Ledger) -> None:
    to_received(book, ["LM1", "LM2"])
    refused = book.record("located", "alibaba", ["LM1"], "--site", "Johor", "--country", "MY",
                          "--method", "on-site-audit")
    assert refused.exit_code == 1 and "LOCATION_MISMATCH" in refused.stderr  # the pre-check
    index = step(book, "located", "alibaba", ["LM1"], "--site", "Johor", "--country", "MY",
                 "--method", "on-site-audit", ALLOW)
    step(book, "located", "alibaba", ["LM2"], *LOCATED_CN)
    assert_found(book, "LOCATION_MISMATCH", ["LM1"], index)
    assert codes_of(compliance(book)["findings"], ["LM2"]) == {"LM2": set()}


def test_located_before_received_is_out_of_order(book: Ledger) -> None:
    to_received(book, ["LO1"], skip="received")
    index = step(book, "located", "alibaba", ["LO1"], *LOCATED_CN, ALLOW)
    assert_found(book, "OUT_OF_ORDER", ["LO1"], index)


def test_received_after_located_is_out_of_order(book: Ledger) -> None:
    to_received(book, ["LR1"])
    step(book, "located", "alibaba", ["LR1"], *LOCATED_CN)
    index = step(book, "received", "alibaba", ["LR1"], *RECEIVED, ALLOW)
    assert_found(book, "OUT_OF_ORDER", ["LR1"], index)


def test_located_by_another_customer_is_diversion(book: Ledger) -> None:
    to_received(book, ["LD1", "LD2"])
    index = step(book, "located", "bytedance", ["LD1"], "--site", "Ulanqab", "--country", "CN",
                 "--method", "network-latency", ALLOW)
    assert_found(book, "DIVERSION", ["LD1"], index)
    assert codes_of(compliance(book)["findings"], ["LD2"]) == {"LD2": set()}


def test_located_only_by_a_customer(book: Ledger) -> None:
    to_received(book, ["LX1"])
    result = book.record("located", "nvidia", ["LX1"], *LOCATED_CN)
    assert result.exit_code == 1 and "'customer'" in result.stderr


# --- terminal steps ---------------------------------------------------------------------------------


def test_scrapped_after_failed_inspection_is_clean_and_never_overdue(book: Ledger) -> None:
    step(book, "fabricated", "tsmc", ["SC1", "SC2"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L",
         "--at", "2022-01-01")
    step(book, "shipped-to-us", "kerry", ["SC1", "SC2"], *SHIP, "--at", "2022-01-02")
    step(book, "inspected", "uslab", ["SC1", "SC2"], "--result", "fail", "--site", "Lab", "--country", "US",
         "--report", "R-F", "--at", "2022-01-03")
    index = step(book, "destroyed", "uslab", ["SC1"], *SCRAP, "--at", "2022-01-04")
    report = compliance(book)
    codes = codes_of(report["findings"], ["SC1", "SC2"])
    assert codes["SC1"] == set()  # ended: never OVERDUE
    assert codes["SC2"] == {"OVERDUE"}  # the other unit of the board still waits at inspected
    steps = history(book, "SC1")["steps"]
    assert steps[-1]["index"] == index and steps[-1]["kind"] == "destroyed"
    units = json.loads(book.cli("report", "units", "--json", ok=True).stdout)
    assert units["steps"]["destroyed"] >= 1
    assert "SC1" not in {o["serial"] for o in units["overdue"]}
    assert "SC2" in {o["serial"] for o in units["overdue"]}


def test_after_terminal_once_per_unit_and_not_out_of_order(book: Ledger) -> None:
    to_received(book, ["AT1", "AT2"], skip="re-exported")
    ended = step(book, "destroyed", "uslab", ["AT1", "AT2"], *SCRAP)
    first = step(book, "re-exported", "nvidia", ["AT1"], *TO_ALIBABA, ALLOW)
    step(book, "shipped-to-us", "kerry", ["AT1"], *SHIP, ALLOW)  # a lower stage, yet AFTER_TERMINAL only
    step(book, "withdrawn", "nvidia", ["AT2"], *WITHDRAW_US, ALLOW)  # a terminal step after a terminal one
    report = compliance(book)
    assert_found(book, "AFTER_TERMINAL", ["AT1"], first)
    after = [f for f in report["findings"] if f["serial"] in ("AT1", "AT2")]
    assert sorted((f["serial"], f["code"]) for f in after) == [("AT1", "AFTER_TERMINAL"), ("AT2", "AFTER_TERMINAL")]
    assert ended < first
    units = json.loads(book.cli("report", "units", "--json", ok=True).stdout)
    assert units["steps"]["destroyed"] >= 2  # counted under the first terminal step, whatever follows


def test_withdrawn_to_the_us_market_is_clean(book: Ledger) -> None:
    to_received(book, ["WD1", "WD2"], skip="re-exported")
    index = step(book, "withdrawn", "nvidia", ["WD1", "WD2"], *WITHDRAW_US)
    assert codes_of(compliance(book)["findings"], ["WD1", "WD2"]) == {"WD1": set(), "WD2": set()}
    far = verify_json(book, "--as-of", "2099-01-01")
    assert not [f for f in far["findings"] if f["serial"] in ("WD1", "WD2")]
    assert history(book, "WD1")["steps"][-1] == {**history(book, "WD1")["steps"][-1], "index": index,
                                                  "kind": "withdrawn"}


def test_withdrawn_after_re_export_not_received_is_diversion(book: Ledger) -> None:
    to_received(book, ["WV1"], skip="received")
    index = step(book, "withdrawn", "nvidia", ["WV1"], "--reason", "back to the maker", "--destination", "TW",
                 ALLOW)
    assert_found(book, "DIVERSION", ["WV1"], index)


def test_withdrawn_only_by_an_exporter(book: Ledger) -> None:
    to_received(book, ["WR1"], skip="re-exported")
    result = book.record("withdrawn", "cbp", ["WR1"], *WITHDRAW_US)
    assert result.exit_code == 1 and "'exporter'" in result.stderr


def test_destroyed_by_the_receiver_is_clean_by_another_customer_diversion(book: Ledger) -> None:
    to_received(book, ["DC1", "DC2"])
    step(book, "destroyed", "alibaba", ["DC1"], *SCRAP)
    index = step(book, "destroyed", "bytedance", ["DC2"], *SCRAP, ALLOW)
    assert codes_of(compliance(book)["findings"], ["DC1"]) == {"DC1": set()}
    assert_found(book, "DIVERSION", ["DC2"], index)


def test_destroyed_signers(book: Ledger) -> None:
    for signer in ("tsmc", "uslab", "nvidia"):
        serial = f"DS-{signer}"
        step(book, "fabricated", "tsmc", [serial], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L")
        step(book, "destroyed", signer, [serial], *SCRAP)
        assert codes_of(compliance(book)["findings"], [serial]) == {serial: set()}
    step(book, "fabricated", "tsmc", ["DS-cbp"], "--model", "H200-SXM5-141GB", "--site", "F", "--lot", "L")
    result = book.record("destroyed", "cbp", ["DS-cbp"], *SCRAP)
    assert result.exit_code == 1 and "lacks the role" in result.stderr


# --- consignee checks ------------------------------------------------------------------------------


def test_license_mismatch(book: Ledger) -> None:
    to_received(book, ["LI1", "LI2"], skip="re-exported")
    index = step(book, "re-exported", "nvidia", ["LI1"], "--consignee", "alibaba", "--license", "LIC-2",
                 "--destination", "CN", ALLOW)
    step(book, "re-exported", "nvidia", ["LI2"], *TO_ALIBABA)
    assert_found(book, "LICENSE_MISMATCH", ["LI1"], index)
    assert codes_of(compliance(book)["findings"], ["LI2"]) == {"LI2": set()}


def test_destination_mismatch(book: Ledger) -> None:
    to_received(book, ["DM1"], skip="re-exported")
    index = step(book, "re-exported", "nvidia", ["DM1"], "--consignee", "alibaba", "--license", "LIC-1",
                 "--destination", "SG", ALLOW)
    assert_found(book, "DESTINATION_MISMATCH", ["DM1"], index)


def test_no_licence_check_without_an_approval_in_force(book: Ledger) -> None:
    to_received(book, ["NA1"], skip="re-exported")
    index = step(book, "re-exported", "nvidia", ["NA1"], "--consignee", "unknown-co", "--license", "X",
                 "--destination", "CN", ALLOW)
    assert_found(book, "UNAPPROVED_CUSTOMER", ["NA1"], index)  # alone: no licence or destination finding


# --- tariff lines ------------------------------------------------------------------------------------


def test_wrong_tariff_line(book: Ledger) -> None:
    to_received(book, ["TL1"], skip="duty-paid")
    to_received(book, ["TL2"], skip="duty-paid")
    to_received(book, ["TL3"], skip="duty-paid")
    index = step(book, "duty-paid", "cbp", ["TL1"], *duty(["TL1"], "E-TL1"), "--hts", "9903.88.15",
                 "--importer", "NVIDIA Corporation", "--origin-country", "TW", ALLOW)
    step(book, "duty-paid", "cbp", ["TL2"], *duty(["TL2"], "E-TL2"), "--hts", "9903.79.01")
    step(book, "duty-paid", "cbp", ["TL3"], *duty(["TL3"], "E-TL3"))  # no hts: not checked
    assert_found(book, "WRONG_TARIFF_LINE", ["TL1"], index)
    assert codes_of(compliance(book)["findings"], ["TL2", "TL3"]) == {"TL2": set(), "TL3": set()}
    data = history(book, "TL1")["steps"][-1]["data"]
    assert data["hts"] == "9903.88.15" and data["importer"] == "NVIDIA Corporation"
    assert data["origin_country"] == "TW"


def test_optional_duty_options_only_on_duty_paid(book: Ledger) -> None:
    result = book.record("received", "alibaba", ["X"], *RECEIVED, "--hts", "9903.79.01")
    assert result.exit_code == 2 and "--hts does not apply to received" in result.stderr


# --- the 50 % volume rule -----------------------------------------------------------------------------

NVL = "H200-NVL-141GB"


def _to_export(book: Ledger, serials: list[str], at: str) -> None:
    when = ("--at", at)
    step(book, "fabricated", "tsmc", serials, "--model", NVL, "--site", "F", "--lot", "L", *when)
    step(book, "shipped-to-us", "kerry", serials, *SHIP, *when)
    step(book, "inspected", "uslab", serials, *PASS, *when)
    step(book, "duty-paid", "cbp", serials, *duty(serials, f"E-{serials[0]}"), *when)


def volume(book: Ledger, *extra: str) -> list[dict[str, Any]]:
    document = json.loads(book.cli("report", "volume", "--json", *extra, ok=True).stdout)
    assert set(document) == {"as_of", "log_size", "periods"}
    periods: list[dict[str, Any]] = document["periods"]
    return periods


def test_volume_ratio_exceeded_on_units_and_on_a_declaration(book: Ledger) -> None:
    declared = index_of(book.cli("declare", "us-volume", "--model", NVL, "--from", "2021-03-01", "--until",
                                 "2021-03-31", "--units", "5", "--key", book.key("nvidia")))  # limit 2
    [period] = [p for p in volume(book) if p["from"] == "2021-03-01T00:00:00Z"]
    assert period == {"model": NVL, "from": "2021-03-01T00:00:00Z", "until": "2021-04-01T00:00:00Z",
                      "us_units": 5, "limit": 2, "exported": 0, "over": 0, "index": declared}
    _to_export(book, ["VR1", "VR2", "VR3", "VR4"], "2021-03-10")
    first = step(book, "re-exported", "nvidia", ["VR1", "VR2"], *TO_ALIBABA, "--at", "2021-03-10")
    refused = book.record("re-exported", "nvidia", ["VR3", "VR4"], *TO_ALIBABA, "--at", "2021-03-11")
    assert refused.exit_code == 1 and "VOLUME_RATIO_EXCEEDED" in refused.stderr
    over = step(book, "re-exported", "nvidia", ["VR3", "VR4"], *TO_ALIBABA, "--at", "2021-03-11", ALLOW)
    again = step(book, "re-exported", "nvidia", ["VR3"], *TO_ALIBABA, "--at", "2021-03-12", ALLOW)
    report = compliance(book)
    flagged = [(f["serial"], f["index"]) for f in report["findings"] if f["code"] == "VOLUME_RATIO_EXCEEDED"
               and f["serial"] in ("VR1", "VR2", "VR3", "VR4")]
    assert sorted(flagged) == [("VR3", over), ("VR4", over)]  # distinct units: VR3's second export no more
    assert first < over < again
    [period] = [p for p in volume(book) if p["from"] == "2021-03-01T00:00:00Z"]
    assert (period["exported"], period["limit"], period["over"]) == (4, 2, 2)
    # a revised declaration replaces the first; logged while the period is exceeded: flagged, serial null
    revised = index_of(book.cli("declare", "us-volume", "--model", NVL, "--from", "2021-03-01", "--until",
                                "2021-03-31", "--units", "6", "--key", book.key("nvidia")))
    assert_found(book, "VOLUME_RATIO_EXCEEDED", ["-"], revised, alone=False, serial_null=True)
    [period] = [p for p in volume(book) if p["from"] == "2021-03-01T00:00:00Z"]
    assert (period["us_units"], period["limit"], period["exported"], period["over"], period["index"]) == (
        6, 3, 4, 1, revised)
    # enough U.S. volume: a declaration that is not exceeded adds nothing
    clean = index_of(book.cli("declare", "us-volume", "--model", NVL, "--from", "2021-03-01", "--until",
                              "2021-03-31", "--units", "8", "--key", book.key("nvidia")))
    assert not [f for f in compliance(book)["findings"] if f["index"] == clean]
    csv_rows = book.cli("report", "volume", "--csv", ok=True).stdout.splitlines()
    assert csv_rows[0] == "model,from,until,us_units,limit,exported,over,index"
    assert f"{NVL},2021-03-01T00:00:00Z,2021-04-01T00:00:00Z,8,4,4,0,{clean}" in csv_rows


def test_volume_declared_after_the_exports_counts_them(book: Ledger) -> None:
    _to_export(book, ["VA1", "VA2", "VA3"], "2021-05-05")
    step(book, "re-exported", "nvidia", ["VA1", "VA2"], *TO_ALIBABA, "--at", "2021-05-05")
    step(book, "re-exported", "nvidia", ["VA3"], "--consignee", "alibaba", "--license", "LIC-1",
         "--destination", "SG", "--at", "2021-05-06", ALLOW)  # not a volume destination: not counted
    index = index_of(book.cli("declare", "us-volume", "--model", NVL, "--from", "2021-05-01", "--until",
                              "2021-05-31", "--units", "2", "--key", book.key("nvidia")))
    [period] = [p for p in volume(book) if p["from"] == "2021-05-01T00:00:00Z"]
    assert (period["exported"], period["limit"], period["over"]) == (2, 1, 1)
    assert_found(book, "VOLUME_RATIO_EXCEEDED", ["-"], index, alone=False, serial_null=True)
    # as of a time before the declaration, there is no period
    assert not [p for p in volume(book, "--until", "2021-05-07") if p["from"] == "2021-05-01T00:00:00Z"]


def test_a_replayed_declaration_is_refused(book: Ledger, tmp_path: Path) -> None:
    from ledger import append
    from ledger.keys import load_private
    from ledger.store import Store

    key = load_private(Path(book.key("nvidia")), lambda: None)
    with Store(book.db) as store:
        done = append.record(store, key, "us_volume_reported",
                             append.us_volume_data(NVL, 10**15, 10**15 + 1, 1))
        batch = append.Batch(store)
        with pytest.raises(Exception, match="replayed") as caught:
            batch.check(done.statement)
    assert getattr(caught.value, "check", None) == "chain"


def test_declare_refuses_an_empty_period_and_wrong_roles(book: Ledger) -> None:
    result = book.cli("declare", "us-volume", "--model", NVL, "--from", "2021-06-02", "--until",
                      "2021-06-02T00:00:00Z", "--units", "1", "--key", book.key("nvidia"))
    assert result.exit_code == 2 and "--until must be after --from" in result.stderr
    result = book.cli("declare", "us-volume", "--model", NVL, "--from", "2021-06-01", "--until", "2021-06-30",
                      "--units", "1", "--key", book.key("alibaba"))
    assert result.exit_code == 1 and "'exporter'" in result.stderr


def test_until_date_means_the_next_midnight() -> None:
    assert values.parse_period_end("2021-06-30") == values.parse_time("2021-07-01")
    assert values.parse_period_end("2021-06-30T12:00:00Z") == values.parse_time("2021-06-30T12:00:00Z")


# --- attestations overdue ------------------------------------------------------------------------------


def test_attestation_overdue_as_of_the_report_time(book: Ledger) -> None:
    to_received(book, ["AO1", "AO2", "AO3"], at="2023-01-01")
    step(book, "located", "alibaba", ["AO2"], *LOCATED_CN, "--at", "2023-03-01")
    step(book, "destroyed", "alibaba", ["AO3"], *SCRAP, "--at", "2023-01-02")
    received = history(book, "AO1")["steps"][-1]["index"]
    located = history(book, "AO2")["steps"][-1]["index"]
    late = verify_json(book, "--as-of", "2023-05-01")  # AO1: 120 days; AO2: 61 days since its attestation
    found = {(f["serial"], f["index"]) for f in late["findings"] if f["code"] == "ATTESTATION_OVERDUE"}
    assert ("AO1", received) in found and "AO2" not in {s for s, _ in found} and "AO3" not in {s for s, _ in found}
    later = verify_json(book, "--as-of", "2023-06-01")  # AO2: 92 days
    found = {(f["serial"], f["index"]) for f in later["findings"] if f["code"] == "ATTESTATION_OVERDUE"}
    assert ("AO2", located) in found and "AO3" not in {s for s, _ in found}
    now = compliance(book)  # as of now, years later: both overdue, the destroyed unit never
    assert {"AO1": {"ATTESTATION_OVERDUE"}, "AO2": {"ATTESTATION_OVERDUE"}, "AO3": set()} == codes_of(
        now["findings"], ["AO1", "AO2", "AO3"])
    assert {(f["serial"], f["index"]) for f in now["findings"] if f["serial"] in ("AO1", "AO2")} == {
        ("AO1", received), ("AO2", located)}
