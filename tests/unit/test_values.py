"""User-facing values: ISO 8601 in, RFC 3339 out, dollars to cents, serials files, ids and countries."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import BadInput, NotFound
from ledger.values import (
    CENTS_LIMIT,
    MICROS_PER_DAY,
    TIME_LIMIT,
    check_serial,
    format_cents,
    format_time,
    next_midnight,
    parse_country,
    parse_id,
    parse_money,
    parse_serials,
    parse_time,
    quoted,
    read_serials_file,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICRO = timedelta(microseconds=1)


def micros_of(dt: datetime) -> int:
    """The oracle: the standard library's own arithmetic, in integers."""
    return (dt - EPOCH) // MICRO


def refused(parse: object, text: str, *args: str) -> str:
    assert callable(parse)
    with pytest.raises(BadInput) as caught:
        parse(text, *args)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- parse_time -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-15", datetime(2026, 1, 15, tzinfo=UTC)),
    ("2026-01-15T10:30:00Z", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15T10:30:00", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15T10:30", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15T10:30Z", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15 10:30:00Z", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15t10:30:00z", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15T10:30:00+01:00", datetime(2026, 1, 15, 9, 30, tzinfo=UTC)),
    ("2026-01-15T10:30:00-05:30", datetime(2026, 1, 15, 16, 0, tzinfo=UTC)),
    ("2026-01-15T00:30:00+01:00", datetime(2026, 1, 14, 23, 30, tzinfo=UTC)),
    ("2026-01-15T10:30:00-00:00", datetime(2026, 1, 15, 10, 30, tzinfo=UTC)),
    ("2026-01-15T10:30:00.5Z", datetime(2026, 1, 15, 10, 30, 0, 500_000, tzinfo=UTC)),
    ("2026-01-15T10:30:00,25Z", datetime(2026, 1, 15, 10, 30, 0, 250_000, tzinfo=UTC)),
    ("2026-01-15T10:30:00.123456+02:00", datetime(2026, 1, 15, 8, 30, 0, 123_456, tzinfo=UTC)),
    ("2026-01-15T10:30:00.000001", datetime(2026, 1, 15, 10, 30, 0, 1, tzinfo=UTC)),
    ("2024-02-29", datetime(2024, 2, 29, tzinfo=UTC)),
    ("2000-02-29T23:59:59Z", datetime(2000, 2, 29, 23, 59, 59, tzinfo=UTC)),
    ("1970-01-01T00:00:00Z", EPOCH),
    ("1970-01-01T01:00:00+01:00", EPOCH),
    ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)),
])
def test_parse_time(text: str, expected: datetime) -> None:
    assert parse_time(text) == micros_of(expected)


def test_parse_time_known_answer() -> None:
    assert parse_time("2026-01-15") == 1_768_435_200_000_000
    assert parse_time("2026-01-15T10:30:00Z") == 1_768_473_000_000_000


def test_parse_time_expanded_years() -> None:
    last_day = micros_of(datetime(9999, 12, 31, tzinfo=UTC))
    assert parse_time("+10000-01-01T00:00:00Z") == last_day + MICROS_PER_DAY
    # 100000 is divisible by 400, so a leap year
    assert parse_time("+100000-03-01") == parse_time("+100000-02-29") + MICROS_PER_DAY


@pytest.mark.parametrize("text", [
    "", " ", "now", "today", "1768435200", "2026", "2026-01", "2026-1-15", "2026-01-5", "26-01-15",
    "2026/01/15", "20260115", "20260115T103000Z", "15.01.2026", "2026-01-15T", "2026-01-15T10",
    "2026-01-15T1030", "2026-01-15T10:30:00ZZ", "2026-01-15T10:30:00 Z", "2026-01-15T10:30:00+0100",
    "2026-01-15T10:30:00+01", "2026-01-15T10:30:00+1:00", "2026-01-15T10:30:00.Z", "2026-01-15T10:30:00.",
    "2026-01-15T10:30.5", "2026-01-15Z", "2026-01-15+01:00", " 2026-01-15", "2026-01-15 ", "2026-01-15\n",
    "2026-01-15\x00", "２０２６-01-15", "2026-01-15T10:30:00EST", "2026-W03-4", "2026-015", "-2026-01-15",
    "10000-01-01", "+9999-01-01", "+1000000-01-01", "2026-01-15T10:30:00.1234567Z",
])
def test_parse_time_refuses(text: str) -> None:
    message = refused(parse_time, text)
    assert message.startswith(f"bad time {quoted(text)}: ")
    assert message.endswith("use ISO 8601, e.g. 2026-01-15 or 2026-01-15T10:30:00Z")


@pytest.mark.parametrize(("text", "reason"), [
    ("2026-13-01", "no month 13"),
    ("2026-00-01", "no month 0"),
    ("2026-02-30", "no day 30 in 2026-02"),
    ("2025-02-29", "no day 29 in 2025-02"),
    ("1900-02-29", "no day 29 in 1900-02"),
    ("2026-04-31", "no day 31 in 2026-04"),
    ("2026-01-00", "no day 0 in 2026-01"),
    ("2026-01-15T24:00:00Z", "no such time of day"),
    ("2026-01-15T10:60:00Z", "no such time of day"),
    ("2016-12-31T23:59:60Z", "no such time of day"),
    ("2026-01-15T10:30:00+24:00", "no such UTC offset"),
    ("2026-01-15T10:30:00+01:60", "no such UTC offset"),
    ("2026-01-15T10:30:00.1234567Z", "at most 6 fractional digits"),
    ("1969-12-31T23:59:59.999999Z", "before 1970"),
    ("1970-01-01T00:30:00+01:00", "before 1970"),
    ("0001-01-01", "before 1970"),
    ("+300000-01-01", "too far in the future"),
])
def test_parse_time_range_errors(text: str, reason: str) -> None:
    assert reason in refused(parse_time, text)


def test_parse_time_limit() -> None:
    assert parse_time(format_time(TIME_LIMIT - 1)) == TIME_LIMIT - 1
    assert "too far" in refused(parse_time, format_time(TIME_LIMIT))


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets))
def test_parse_time_agrees_with_the_standard_library(dt: datetime) -> None:
    assert parse_time(dt.isoformat()) == micros_of(dt)


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)))
def test_naive_times_are_utc(dt: datetime) -> None:
    assert parse_time(dt.isoformat()) == micros_of(dt.replace(tzinfo=UTC))


# --- format_time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("micros", "text"), [
    (0, "1970-01-01T00:00:00Z"),
    (1, "1970-01-01T00:00:00.000001Z"),
    (1_500_000, "1970-01-01T00:00:01.5Z"),
    (120_000, "1970-01-01T00:00:00.12Z"),
    (123_456, "1970-01-01T00:00:00.123456Z"),
    (1_768_473_000_000_000, "2026-01-15T10:30:00Z"),
    (1_768_435_200_000_000, "2026-01-15T00:00:00Z"),
    (micros_of(datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)), "2024-02-29T23:59:59.999999Z"),
    (micros_of(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)), "9999-12-31T23:59:59Z"),
    (micros_of(datetime(9999, 12, 31, tzinfo=UTC)) + MICROS_PER_DAY, "+10000-01-01T00:00:00Z"),
])
def test_format_time(micros: int, text: str) -> None:
    assert format_time(micros) == text


def test_format_time_refuses_negative() -> None:
    with pytest.raises(ValueError):
        format_time(-1)


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31)))
def test_format_time_agrees_with_the_standard_library(dt: datetime) -> None:
    text = format_time(micros_of(dt.replace(tzinfo=UTC)))
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == dt.replace(tzinfo=UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", text, re.ASCII)


@given(st.integers(0, 2**62 - 1))
def test_time_round_trip(micros: int) -> None:
    assert parse_time(format_time(micros)) == micros


@given(st.integers(0, TIME_LIMIT - 1))
def test_time_round_trip_up_to_the_limit(micros: int) -> None:
    assert parse_time(format_time(micros)) == micros


# --- next_midnight --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "midnight"), [
    ("2026-01-15", "2026-01-16T00:00:00Z"),
    ("2026-01-15T00:00:00.000001Z", "2026-01-16T00:00:00Z"),
    ("2026-01-15T23:59:59.999999Z", "2026-01-16T00:00:00Z"),
    ("2026-01-31", "2026-02-01T00:00:00Z"),
    ("2024-02-28", "2024-02-29T00:00:00Z"),
    ("2026-12-31", "2027-01-01T00:00:00Z"),
    ("1970-01-01", "1970-01-02T00:00:00Z"),
])
def test_next_midnight(text: str, midnight: str) -> None:
    assert format_time(next_midnight(parse_time(text))) == midnight


@given(st.integers(0, 2**62))
def test_next_midnight_is_the_end_of_the_day(micros: int) -> None:
    end = next_midnight(micros)
    assert end % MICROS_PER_DAY == 0
    assert micros < end <= micros + MICROS_PER_DAY


# --- money ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "cents"), [
    ("216000.00", 21_600_000), ("216000", 21_600_000), ("0.5", 50), ("0.05", 5), ("0", 0), ("0.00", 0),
    ("1.1", 110), ("007.10", 710), ("10000000000000.00", CENTS_LIMIT - 1),
    ("0" * 5000 + "1", 100),
])
def test_parse_money(text: str, cents: int) -> None:
    assert parse_money(text) == cents


@pytest.mark.parametrize("text", [
    "", " ", "-1", "-0.5", "-0", "1.234", "0.001", "abc", "NaN", "nan", "inf", "-inf", "Infinity", "1,000",
    "1,000.00", "216 000", "1e5", "1E5", "1.5e2", "0x10", " 1", "1 ", "+1", ".5", "5.", "1.2.3", "１",
    "$5", "5$", "USD 5", "1_000", "1/2", "١٢", "1." + "0" * 5000, "1" * 5000, "92233720368547758.08",
    "100000000000000000000", "5\n",
])
def test_parse_money_refuses(text: str) -> None:
    message = refused(parse_money, text)
    assert message.startswith(f"bad amount {quoted(text)}: ")
    assert message.endswith("use decimal dollars, e.g. 216000.00")


@pytest.mark.parametrize(("text", "reason"), [
    ("-5", "must not be negative"), ("-5.25", "must not be negative"), ("1.234", "at most 2 decimal places"),
    ("92233720368547758.08", "too large"), ("9" * 30, "too large"),
    ("10000000000000.01", "one statement carries at most 10000000000000.00"),
])
def test_parse_money_reasons(text: str, reason: str) -> None:
    assert reason in refused(parse_money, text)


@pytest.mark.parametrize(("cents", "text"), [
    (0, "0.00"), (5, "0.05"), (50, "0.50"), (100, "1.00"), (1_234_567, "12345.67"),
    (21_600_000, "216000.00"), (-5, "-0.05"), (-1_234_567, "-12345.67"),
])
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text


@given(st.integers(0, CENTS_LIMIT - 1))
def test_money_round_trip(cents: int) -> None:
    assert parse_money(format_cents(cents)) == cents


@given(st.integers(0, 10**13), st.sampled_from(["", "0", "00"]))
def test_whole_dollars(dollars: int, zeros: str) -> None:
    text = str(dollars) + ("." + zeros if zeros else "")
    assert parse_money(text) == dollars * 100


# --- serials --------------------------------------------------------------------------------------------


def test_parse_serials() -> None:
    text = ("# shipment 7\n"
            "\n"
            "SN-0001\n"
            "  SN-0002  \n"
            "\tSN.0003\t# the damaged one\n"
            "   # indented comment\n"
            "sn_0004 #\n"
            "SN-0005\r\n"
            "   \n")
    assert parse_serials(text, "f.txt") == ["SN-0001", "SN-0002", "SN.0003", "sn_0004", "SN-0005"]


def test_parse_serials_keeps_order_and_longest() -> None:
    assert parse_serials(f"b\na\n{'Z' * 64}", "x") == ["b", "a", "Z" * 64]


@pytest.mark.parametrize(("text", "line"), [
    ("SN1\nSN 2\n", 2),
    ("SN1\nSN#2\n", 2),
    ("SN1\n\n\nSN/3\n", 4),
    ("SN1\n" + "A" * 65 + "\n", 2),
    ("SN1,SN2\n", 1),
    ("SN1;\n", 1),
    ("SNé\n", 1),
    ("SN1\x0cSN2\n", 1),
    ("SN1\u2028SN2\n", 1),
    ("\x00\n", 1),
])
def test_parse_serials_bad_serial(text: str, line: int) -> None:
    message = refused(parse_serials, text, "batch.txt")
    assert message.startswith(f"batch.txt:{line}: bad serial ")


def test_parse_serials_duplicate() -> None:
    message = refused(parse_serials, "A\nB\n# c\nA # again\n", "batch.txt")
    assert message == "batch.txt:4: serial A repeated (first on line 1)"


@pytest.mark.parametrize("text", ["", "\n", "  \n\t\n", "# only\n  # comments\n", "\r\n"])
def test_parse_serials_empty(text: str) -> None:
    assert refused(parse_serials, text, "batch.txt") == "no serials in batch.txt"


def test_read_serials_file(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbfSN1\r\nSN2\r\n")
    assert read_serials_file(path) == ["SN1", "SN2"]


def test_read_serials_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("SN1\nbad one\n", encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        read_serials_file(path)
    assert str(caught.value).startswith(f"{path}:2: bad serial")


def test_read_serials_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(NotFound, match=re.escape(str(path))):
        read_serials_file(path)


def test_read_serials_file_directory(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=re.escape(str(tmp_path))):
        read_serials_file(tmp_path)


def test_read_serials_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_bytes(b"SN1\n\xff\xfe\n")
    with pytest.raises(BadInput, match=re.escape(str(path)) + r".*not UTF-8 \(byte 4\)"):
        read_serials_file(path)


@given(st.lists(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), min_size=1, unique=True))
def test_serials_round_trip(serials: list[str]) -> None:
    assert parse_serials("\n".join(serials), "s") == serials
    assert parse_serials("\r\n".join(f"  {s} # note" for s in serials) + "\n", "s") == serials


# --- single values --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["SN-1", "a", "A.b_c-9", "x" * 64])
def test_check_serial(text: str) -> None:
    assert check_serial(text) == text


@pytest.mark.parametrize("text", ["", " SN1", "SN1 ", "SN 1", "x" * 65, "SN/1", "SN1\n", "Ｓ", "SN#1"])
def test_check_serial_refuses(text: str) -> None:
    assert refused(check_serial, text).startswith(f"bad serial {quoted(text)}: ")


@pytest.mark.parametrize("text", ["tsmc", "alibaba-cloud", "u.s_lab-1", "A" * 64])
def test_parse_id(text: str) -> None:
    assert parse_id(text, "consignee") == text


@pytest.mark.parametrize("text", ["", "ts mc", "A" * 65, "tsmc\n", "tšmc", "a:b"])
def test_parse_id_refuses(text: str) -> None:
    assert refused(parse_id, text, "consignee").startswith(f"bad consignee {quoted(text)}: ")


@pytest.mark.parametrize("text", ["US", "CN", "NL"])
def test_parse_country(text: str) -> None:
    assert parse_country(text) == text


@pytest.mark.parametrize("text", ["", "us", "Us", "USA", "U", "U1", "ÜS", "ＵＳ", "US\n", " US"])
def test_parse_country_refuses(text: str) -> None:
    assert refused(parse_country, text).startswith(f"bad country {quoted(text)}: ")


def test_quoted_is_one_short_line() -> None:
    assert quoted("a\nb") == "'a\\nb'"
    assert quoted("x" * 1000) == "'" + "x" * 60 + "'…"


# --- arbitrary input ------------------------------------------------------------------------------------


def only_bad_input(parse: object, text: str, *args: str) -> None:
    assert callable(parse)
    try:
        parse(text, *args)
    except BadInput as e:
        assert "\n" not in str(e)


TIME_ALPHABET = "0123456789-:+.,TtZz W"
MONEY_ALPHABET = "0123456789.,-+eE_ $naif"
SERIAL_ALPHABET = "abAB09._-# \t\r\n\x0c\u2028/é"


@given(st.text())
def test_arbitrary_text_is_only_bad_input(text: str) -> None:
    for parse in (parse_time, parse_money, check_serial, parse_country):
        only_bad_input(parse, text)
    only_bad_input(parse_serials, text, "s")
    only_bad_input(parse_id, text, "id")


@given(st.text(alphabet=TIME_ALPHABET, max_size=40))
def test_time_like_text_is_only_bad_input(text: str) -> None:
    only_bad_input(parse_time, text)


@given(st.from_regex(r"\+?[0-9]{4,7}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,8})?)?"
                     r"([Zz]|[+-][0-9]{2}:[0-9]{2})?)?", fullmatch=True))
def test_almost_times_are_only_bad_input(text: str) -> None:
    only_bad_input(parse_time, text)


@given(st.text(alphabet=MONEY_ALPHABET, max_size=40))
def test_money_like_text_is_only_bad_input(text: str) -> None:
    only_bad_input(parse_money, text)


@given(st.text(alphabet=SERIAL_ALPHABET, max_size=200))
def test_serials_like_text_is_only_bad_input(text: str) -> None:
    only_bad_input(parse_serials, text, "s")
