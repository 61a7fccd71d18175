"""User-facing values: times, money, serials, countries and ids as typed on the command line or in files.

DESIGN.md "Command line": times given are ISO 8601 (UTC without an offset, a bare date is 00:00 UTC);
times shown are RFC 3339 UTC ending in `Z`, fractional seconds only when non-zero; money is typed as
decimal dollars and kept as integer cents; a serials file holds one serial per line, with blank lines and
`#` comments ignored. Serials and participant ids match `[A-Za-z0-9._-]{1,64}`, countries are ISO 3166
alpha-2. Every parser raises `BadInput` with one line that names the offending text; none uses floats.
"""

from __future__ import annotations

import re
from pathlib import Path

from ledger.errors import BadInput
from ledger.limits import MAX_SERIALS_FILE_BYTES, MAX_STATEMENT_CENTS, read_file
from ledger.statement import COUNTRY_PATTERN, valid_id

MICROS_PER_SECOND = 1_000_000
SECONDS_PER_DAY = 86_400
MICROS_PER_DAY = SECONDS_PER_DAY * MICROS_PER_SECOND
# Times are stored as integers in SQLite and PostgreSQL (signed 64-bit) and msgpack; the epoch is the floor.
TIME_LIMIT = 2**63
# Amounts typed: at most what one statement may carry (`limits.MAX_STATEMENT_CENTS`); this is one past it.
CENTS_LIMIT = MAX_STATEMENT_CENTS + 1
FRACTION_DIGITS = 6  # microseconds

_TIME_HINT = "use ISO 8601, e.g. 2026-01-15 or 2026-01-15T10:30:00Z"
_MONEY_HINT = "use decimal dollars, e.g. 216000.00"
_ID_HINT = "use 1 to 64 characters from A-Z a-z 0-9 . _ -"

# ISO 8601 extended format, calendar dates. Years past 9999 use the expanded form (`+` and 5 or 6 digits),
# which is what `format_time` writes for them. re.ASCII: `[0-9]` only, never other scripts' digits.
_TIME = re.compile(
    r"(?P<year>[0-9]{4}|\+[0-9]{5,6})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt ](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]+))?)?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-9]{2}))?)?",
    re.ASCII,
)
_MONEY = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<cents>[0-9]+))?", re.ASCII)
_TRAILING_COMMENT = re.compile(r"\s#")


def quoted(text: str, limit: int = 60) -> str:
    """`text` as a one-line quoted literal (escapes shown, long text cut) for naming it in a message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


# --- times --------------------------------------------------------------------------------------------


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if _is_leap(year) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """The date `days` after 1970-01-01 (H. Hinnant's `civil_from_days`); no limit at year 9999."""
    days += 719_468
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def _bad_time(text: str, reason: str = "") -> BadInput:
    return BadInput(f"bad time {quoted(text)}: {reason + '; ' if reason else ''}{_TIME_HINT}")


def parse_time(text: str) -> int:
    """ISO 8601 date or date-time → integer microseconds since the Unix epoch (UTC unless an offset says)."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise _bad_time(text)
    year, month, day = int(match["year"]), int(match["month"]), int(match["day"])
    hour, minute = int(match["hour"] or 0), int(match["minute"] or 0)
    second = int(match["second"] or 0)
    fraction = match["fraction"] or ""
    if not 1 <= month <= 12:
        raise _bad_time(text, f"no month {month}")
    if not 1 <= day <= _days_in_month(year, month):
        raise _bad_time(text, f"no day {day} in {year:04d}-{month:02d}")
    if hour > 23 or minute > 59 or second > 59:  # no 24:00 and no leap second: POSIX time has neither
        raise _bad_time(text, "no such time of day")
    if len(fraction) > FRACTION_DIGITS:
        raise _bad_time(text, f"at most {FRACTION_DIGITS} fractional digits (microseconds)")
    offset = 0
    if match["sign"]:
        off_hour, off_minute = int(match["off_hour"]), int(match["off_minute"])
        if off_hour > 23 or off_minute > 59:
            raise _bad_time(text, "no such UTC offset")
        offset = (off_hour * 60 + off_minute) * 60 * (1 if match["sign"] == "+" else -1)
    seconds = (_days_from_civil(year, month, day) * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second
               - offset)
    micros = seconds * MICROS_PER_SECOND + int(fraction.ljust(FRACTION_DIGITS, "0"))
    if micros < 0:
        raise _bad_time(text, "before 1970-01-01T00:00:00Z")
    if micros >= TIME_LIMIT:
        raise _bad_time(text, "too far in the future")
    return micros


def format_time(micros: int) -> str:
    """RFC 3339 UTC ending in `Z`; fractional seconds only when non-zero, without trailing zeros.

    Years past 9999, which RFC 3339 cannot write, use ISO 8601's expanded form (`+10000-01-01T…`), which
    `parse_time` reads back.
    """
    if micros < 0:
        raise ValueError(f"time {micros} is before the Unix epoch")
    days, micros_of_day = divmod(micros, MICROS_PER_DAY)
    year, month, day = _civil_from_days(days)
    seconds_of_day, fraction = divmod(micros_of_day, MICROS_PER_SECOND)
    hour, rest = divmod(seconds_of_day, 3600)
    minute, second = divmod(rest, 60)
    year_text = f"{year:04d}" if year <= 9999 else f"+{year:05d}"
    fraction_text = f".{fraction:06d}".rstrip("0") if fraction else ""
    return f"{year_text}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction_text}Z"


def next_midnight(micros: int) -> int:
    """The midnight UTC that starts the day after the one containing `micros` (`--until DATE`'s end)."""
    return (micros // MICROS_PER_DAY + 1) * MICROS_PER_DAY


def parse_period_end(text: str) -> int:
    """The end of a period given on the command line: a bare date means the next midnight UTC (the whole
    day is in), a date and time means that time (DESIGN.md `declare us-volume --until`)."""
    micros = parse_time(text)
    match = _TIME.fullmatch(text)
    return next_midnight(micros) if match is not None and match["hour"] is None else micros


# --- money --------------------------------------------------------------------------------------------


def _bad_amount(text: str, reason: str = "") -> BadInput:
    return BadInput(f"bad amount {quoted(text)}: {reason + '; ' if reason else ''}{_MONEY_HINT}")


def parse_money(text: str) -> int:
    """Decimal dollars (`216000.00`, `216000`, `0.5`) → integer cents, exactly."""
    match = _MONEY.fullmatch(text)
    if match is None:
        if text.startswith("-") and _MONEY.fullmatch(text[1:]):
            raise _bad_amount(text, "must not be negative")
        raise _bad_amount(text)
    cents_text = match["cents"] or ""
    if len(cents_text) > 2:
        raise _bad_amount(text, "at most 2 decimal places (cents)")
    whole = match["whole"].lstrip("0") or "0"
    if len(whole) > 20:  # before int(): Python refuses to convert strings of more than 4300 digits
        raise _bad_amount(text, "too large")
    cents = int(whole) * 100 + int(cents_text.ljust(2, "0"))
    if cents >= CENTS_LIMIT:
        raise _bad_amount(text, f"too large (one statement carries at most {format_cents(MAX_STATEMENT_CENTS)})")
    return cents


def format_cents(cents: int) -> str:
    """Integer cents → decimal dollars with two places: 1234567 → "12345.67"."""
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}{dollars}.{rest:02d}"


# --- serials, ids, countries --------------------------------------------------------------------------


def parse_text(text: str, what: str) -> str:
    """Free text for a statement (`--lot`, `--site`, …), returned unchanged if it is valid UTF-8: bytes that
    are not (passed on the command line, they arrive as lone surrogates) are refused, naming `what`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadInput(f"bad {what} {quoted(text)}: not valid UTF-8 text (at character {e.start})") from None
    return text


def check_serial(text: str) -> str:
    """A single serial (`--serial S`), returned unchanged if it matches `[A-Za-z0-9._-]{1,64}`."""
    if not valid_id(text):
        raise BadInput(f"bad serial {quoted(text)}: {_ID_HINT}")
    return text


def parse_id(text: str, what: str) -> str:
    """A participant id (or other id named by `what`), returned unchanged if it matches the id pattern."""
    if not valid_id(text):
        raise BadInput(f"bad {what} {quoted(text)}: {_ID_HINT}")
    return text


def parse_country(text: str) -> str:
    """An ISO 3166 alpha-2 code, exactly two capital ASCII letters (`US`, not `us`)."""
    if COUNTRY_PATTERN.fullmatch(text) is None:
        raise BadInput(f"bad country {quoted(text)}: use an ISO 3166 alpha-2 code in capitals, e.g. US")
    return text


def parse_serials(text: str, source: str) -> list[str]:
    """Serials from a serials file's text, in order: one a line, blank lines and `#` comments ignored.

    A malformed or repeated serial is an error naming `source` and the line; so is a file with none.
    """
    serials: list[str] = []
    first_line: dict[str, int] = {}
    # split("\n"), not splitlines(): a stray U+2028 or form feed must not silently start a new serial.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        comment = _TRAILING_COMMENT.search(line)
        if comment is not None:
            line = line[:comment.start()].rstrip()
        if not valid_id(line):
            raise BadInput(f"{source}:{number}: bad serial {quoted(line)}: {_ID_HINT}")
        if line in first_line:
            raise BadInput(f"{source}:{number}: serial {line} repeated (first on line {first_line[line]})")
        first_line[line] = number
        serials.append(line)
    if not serials:
        raise BadInput(f"no serials in {source}")
    return serials


def read_serials_file(path: Path) -> list[str]:
    """The serials of a UTF-8 serials file (`--serials-file`); see `parse_serials`."""
    raw = read_file(path, MAX_SERIALS_FILE_BYTES, "serials file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"serials file {path}: not UTF-8 (byte {e.start})") from e
    return parse_serials(text.removeprefix("\ufeff"), str(path))
