"""The policy: DESIGN.md's default block byte for byte, every key required, nothing else allowed."""

from __future__ import annotations

import dataclasses
import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import BadInput, PolicyInvalid
from ledger.policy import (
    DEFAULT_POLICY_TEXT,
    OVERDUE_STEPS,
    Policy,
    default_policy,
    duty_due,
    load_policy_file,
    parse_policy,
)
from tests.conftest import ROOT, SHARED

DEFAULT_TEXT = (
    'name = "h200-china-2026-01"\n'
    "duty_rate_bp = 2500\n"
    'allowed_models = ["H200-SXM5-141GB", "H200-NVL-141GB"]\n'
    'approved_foundries = ["tsmc"]\n'
    "min_unit_value_cents = 2000000\n"
    'inspection_country = "US"\n'
    "consignee_checks = true\n"
    'hts_lines = ["9903.79.01"]\n'
    "volume_ratio_bp = 5000\n"
    'volume_destinations = ["CN"]\n'
    "attestation_days = 90\n"
    "[overdue_days]\n"
    "fabricated = 30\n"
    "shipped_to_us = 30\n"
    "inspected = 30\n"
    "duty_paid = 30\n"
    "re_exported = 30\n"
)

TOP_KEYS = ("name", "duty_rate_bp", "allowed_models", "approved_foundries", "min_unit_value_cents",
            "inspection_country", "overdue_days")


def with_line(key: str, line: str | None) -> str:
    """The default policy with the line setting `key` replaced by `line` (or removed when None)."""
    out = []
    for existing in DEFAULT_TEXT.splitlines(keepends=True):
        if existing.split("=")[0].strip() == key:
            if line is not None:
                out.append(line + "\n")
        else:
            out.append(existing)
    assert out != DEFAULT_TEXT.splitlines(keepends=True) or line is not None
    return "".join(out)


def refused(text: str) -> str:
    with pytest.raises(PolicyInvalid) as caught:
        parse_policy(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("policy: ")
    return message


# --- the default ----------------------------------------------------------------------------------------


def test_default_text_is_pinned() -> None:
    assert DEFAULT_POLICY_TEXT == DEFAULT_TEXT
    assert DEFAULT_POLICY_TEXT.endswith("\n")


def test_default_file_bytes() -> None:
    path = ROOT / "ledger" / "default_policy.toml"
    assert path.read_bytes() == DEFAULT_TEXT.encode("utf-8")


# The default before issue 17's optional keys: what the golden ledger, and every ledger opened before,
# recorded. It still parses, with every optional rule unchecked, so those ledgers read the same.
PREVIOUS_DEFAULT_TEXT = "".join(line for line in DEFAULT_TEXT.splitlines(keepends=True)
                                if line.split("=")[0].strip() not in (
                                    "consignee_checks", "hts_lines", "volume_ratio_bp", "volume_destinations",
                                    "attestation_days"))


def previous_with(lines: str) -> str:
    """The previous default with top-level `lines` added (before its `[overdue_days]` table)."""
    return PREVIOUS_DEFAULT_TEXT.replace("[overdue_days]\n", lines + "\n[overdue_days]\n")


def test_golden_vector_holds_the_previous_default() -> None:
    vectors = SHARED / "vectors" / "custody" / "statements.json"
    if not vectors.exists():
        pytest.skip("../shared is absent")
    genesis = json.loads(vectors.read_text(encoding="utf-8"))["statements"][0]
    assert genesis["fields"]["kind"] == "ledger_opened"
    assert genesis["fields"]["data"]["policy"] == PREVIOUS_DEFAULT_TEXT


def test_previous_default_checks_none_of_the_optional_rules() -> None:
    policy = parse_policy(PREVIOUS_DEFAULT_TEXT)
    assert (policy.consignee_checks, policy.hts_lines, policy.volume_ratio_bp, policy.volume_destinations,
            policy.attestation_days) == (False, None, None, None, None)
    assert not policy.volume_checked
    assert dataclasses.replace(default_policy(), consignee_checks=False, hts_lines=None, volume_ratio_bp=None,
                               volume_destinations=None, attestation_days=None,
                               source=PREVIOUS_DEFAULT_TEXT) == policy


OPTIONAL_LINES = {
    "consignee_checks": ("consignee_checks = true", "consignee_checks", True),
    "hts_lines": ('hts_lines = ["9903.79.01", "9903.79.02"]', "hts_lines", ("9903.79.01", "9903.79.02")),
    "attestation_days": ("attestation_days = 0", "attestation_days", 0),
}


@pytest.mark.parametrize("key", OPTIONAL_LINES)
def test_each_optional_key_alone(key: str) -> None:
    line, field, value = OPTIONAL_LINES[key]
    policy = parse_policy(previous_with(line))
    assert getattr(policy, field) == value


def test_empty_hts_lines_allow_none() -> None:
    assert parse_policy(previous_with("hts_lines = []")).hts_lines == ()


def test_volume_keys_go_together() -> None:
    for line in ("volume_ratio_bp = 5000", 'volume_destinations = ["CN"]'):
        assert "go together" in refused(previous_with(line))
    both = parse_policy(previous_with('volume_ratio_bp = 2500\nvolume_destinations = ["CN", "HK"]'))
    assert (both.volume_ratio_bp, both.volume_destinations, both.volume_checked) == (2500, ("CN", "HK"), True)


@pytest.mark.parametrize("line", ["consignee_checks = 1", 'consignee_checks = "yes"', 'hts_lines = "9903"',
                                  'hts_lines = [""]', 'hts_lines = ["a", "a"]', "attestation_days = -1",
                                  "attestation_days = true", 'volume_ratio_bp = 1\nvolume_destinations = ["cn"]',
                                  'volume_ratio_bp = -1\nvolume_destinations = ["CN"]',
                                  'volume_ratio_bp = 1\nvolume_destinations = "CN"'])
def test_optional_keys_are_checked(line: str) -> None:
    refused(previous_with(line))


def test_default_equals_design_block() -> None:
    design = SHARED / "DESIGN.md"
    if not design.exists():
        pytest.skip("../shared is absent")
    blocks = re.findall(r"```toml\n(.*?)```", design.read_text(encoding="utf-8"), re.S)
    assert blocks == [DEFAULT_POLICY_TEXT]


def test_default_policy_values() -> None:
    policy = default_policy()
    assert policy == Policy(
        name="h200-china-2026-01",
        duty_rate_bp=2500,
        allowed_models=("H200-SXM5-141GB", "H200-NVL-141GB"),
        approved_foundries=("tsmc",),
        min_unit_value_cents=2_000_000,
        inspection_country="US",
        overdue_days={step: 30 for step in OVERDUE_STEPS},
        source=DEFAULT_TEXT,
        consignee_checks=True,
        hts_lines=("9903.79.01",),
        volume_ratio_bp=5000,
        volume_destinations=("CN",),
        attestation_days=90,
    )
    assert OVERDUE_STEPS == ("fabricated", "shipped_to_us", "inspected", "duty_paid", "re_exported")
    assert list(policy.overdue_days) == list(OVERDUE_STEPS)
    assert parse_policy(DEFAULT_POLICY_TEXT) == policy


def test_policy_is_frozen_and_hashable() -> None:
    policy = default_policy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.duty_rate_bp = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.overdue_days["inspected"] = 1  # type: ignore[index]
    assert hash(policy) == hash(parse_policy(DEFAULT_POLICY_TEXT))
    assert len({policy, parse_policy(DEFAULT_POLICY_TEXT)}) == 1


def test_hand_built_policy_is_frozen_too() -> None:
    days = {step: 1 for step in OVERDUE_STEPS}
    policy = Policy(name="p", duty_rate_bp=1, allowed_models=["m"],  # type: ignore[arg-type]
                    approved_foundries=["f"], min_unit_value_cents=0,  # type: ignore[arg-type]
                    inspection_country="US", overdue_days=days, source="")
    days["inspected"] = 99
    assert policy.overdue_days["inspected"] == 1
    assert policy.allowed_models == ("m",)
    assert policy.approved_foundries == ("f",)
    hash(policy)


# --- parsing ----------------------------------------------------------------------------------------------


def test_source_is_kept_exactly() -> None:
    text = "# a comment\r\n" + DEFAULT_TEXT.replace("2500", "2_500").replace("\n", "\r\n")
    policy = parse_policy(text)
    assert policy.source == text
    assert policy.duty_rate_bp == 2500


def test_a_different_policy() -> None:
    text = (with_line("duty_rate_bp", "duty_rate_bp = 0")
            .replace('["tsmc"]', '["tsmc", "samsung.fab-1"]')
            .replace('allowed_models = ["H200-SXM5-141GB", "H200-NVL-141GB"]', "allowed_models = []")
            .replace("inspected = 30", "inspected = 0"))
    policy = parse_policy(text)
    assert policy.duty_rate_bp == 0
    assert policy.allowed_models == ()
    assert policy.approved_foundries == ("tsmc", "samsung.fab-1")
    assert policy.overdue_days["inspected"] == 0


def test_inline_table_for_overdue_days() -> None:
    head = DEFAULT_TEXT.split("[overdue_days]")[0]
    text = head + ("overdue_days = {fabricated = 1, shipped_to_us = 2, inspected = 3, duty_paid = 4, "
                   "re_exported = 5}\n")
    assert dict(parse_policy(text).overdue_days) == {
        "fabricated": 1, "shipped_to_us": 2, "inspected": 3, "duty_paid": 4, "re_exported": 5}


def test_unknown_top_level_key() -> None:
    assert refused("foo = 1\n" + DEFAULT_TEXT) == "policy: unknown key 'foo'"


def test_unknown_table() -> None:
    assert refused(DEFAULT_TEXT + "[extra]\na = 1\n") == "policy: unknown key 'extra'"


def test_unknown_overdue_key() -> None:
    assert refused(DEFAULT_TEXT + "received = 3\n") == "policy: unknown key 'overdue_days.received'"
    assert refused(DEFAULT_TEXT + "foo = 3\n") == "policy: unknown key 'overdue_days.foo'"


@pytest.mark.parametrize("key", [k for k in TOP_KEYS if k != "overdue_days"])
def test_missing_top_level_key(key: str) -> None:
    assert refused(with_line(key, None)) == f"policy: missing key '{key}'"


def test_missing_overdue_days() -> None:
    text = DEFAULT_TEXT.split("[overdue_days]")[0]
    assert refused(text) == "policy: missing key 'overdue_days'"


@pytest.mark.parametrize("step", OVERDUE_STEPS)
def test_missing_overdue_step(step: str) -> None:
    assert refused(with_line(step, None)) == f"policy: missing key 'overdue_days.{step}'"


INT_KEYS = ("duty_rate_bp", "min_unit_value_cents")


@pytest.mark.parametrize("key", INT_KEYS + OVERDUE_STEPS)
@pytest.mark.parametrize("value", ["true", "false", "-1", "2.5", "25e2", '"2500"', "[1]", "inf", "nan",
                                   "1979-05-27", "{a = 1}"])
def test_integers_must_be_non_negative_integers(key: str, value: str) -> None:
    message = refused(with_line(key, f"{key} = {value}"))
    name = key if key in INT_KEYS else f"overdue_days.{key}"
    assert message == f"policy: {name} must be a non-negative integer"


@pytest.mark.parametrize("key", INT_KEYS)
def test_integers_are_64_bit(key: str) -> None:
    assert parse_policy(with_line(key, f"{key} = {2**63 - 1}"))
    assert refused(with_line(key, f"{key} = {2**63}")).startswith(f"policy: {key} is too large")


def test_zero_is_allowed() -> None:
    policy = parse_policy(with_line("min_unit_value_cents", "min_unit_value_cents = 0"))
    assert policy.min_unit_value_cents == 0


@pytest.mark.parametrize("value", ['""', '"   "', "1", "true", '["a"]', "{}"])
def test_name_must_be_non_empty_text(value: str) -> None:
    assert refused(with_line("name", f"name = {value}")) == "policy: name must be a non-empty string"


@pytest.mark.parametrize("value", ['"H200"', "1", "[1]", '["ok", 2]', '[""]', '[["a"]]', "{a = 1}",
                                   '["a", "a"]'])
def test_allowed_models_must_be_strings(value: str) -> None:
    assert refused(with_line("allowed_models", f"allowed_models = {value}")).startswith(
        "policy: allowed_models ")


@pytest.mark.parametrize("value", ['"tsmc"', "[1]", '["ts mc"]', '[""]', f'["{"a" * 65}"]', '["tsmc/1"]',
                                   '["tsmc", "tsmc"]', '["tšmc"]'])
def test_approved_foundries_must_be_participant_ids(value: str) -> None:
    assert refused(with_line("approved_foundries", f"approved_foundries = {value}")).startswith(
        "policy: approved_foundries ")


def test_approved_foundry_of_64_characters() -> None:
    text = with_line("approved_foundries", f'approved_foundries = ["{"a" * 64}", "A.b_c-9"]')
    assert parse_policy(text).approved_foundries == ("a" * 64, "A.b_c-9")


@pytest.mark.parametrize("value", ['"us"', '"USA"', '"U"', '""', "1", '["US"]', '"U1"', '"ÜS"'])
def test_inspection_country_is_alpha_2(value: str) -> None:
    assert refused(with_line("inspection_country", f"inspection_country = {value}")).startswith(
        "policy: inspection_country must be two capital letters")


@pytest.mark.parametrize("value", ["3", '"x"', "[1, 2]"])
def test_overdue_days_must_be_a_table(value: str) -> None:
    text = DEFAULT_TEXT.split("[overdue_days]")[0] + f"overdue_days = {value}\n"
    assert refused(text) == "policy: overdue_days must be a table of days per step"


def test_unknown_keys_are_reported_before_missing_ones() -> None:
    assert refused(with_line("name", 'nmae = "x"')) == "policy: unknown key 'nmae'"


@pytest.mark.parametrize(("text", "line"), [
    ("name = \n", 1),
    (DEFAULT_TEXT + "fabricated = 1\n", 18),  # a duplicate key
    ("name = 'x'\nduty_rate_bp = 25 00\n", 2),
    ("[overdue_days\n", 1),
])
def test_toml_syntax_errors_name_the_line(text: str, line: int) -> None:
    message = refused(text)
    assert message.startswith("policy: not valid TOML: ")
    assert f"line {line}" in message


def test_pathological_toml_is_policy_invalid() -> None:
    assert refused("a = " + "[" * 5000 + "]" * 5000).startswith("policy: not valid TOML")
    assert refused("a = 1" + "0" * 5000).startswith("policy: not valid TOML")


def test_policy_invalid_is_bad_input() -> None:
    assert issubclass(PolicyInvalid, BadInput)


# --- files ------------------------------------------------------------------------------------------------


def test_load_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(DEFAULT_TEXT.encode())
    assert load_policy_file(path) == default_policy()


def test_load_policy_file_keeps_crlf(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(DEFAULT_TEXT.replace("\n", "\r\n").encode())
    assert load_policy_file(path).source == DEFAULT_TEXT.replace("\n", "\r\n")


def test_missing_policy_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyInvalid, match=re.escape(str(path))):
        load_policy_file(path)


def test_policy_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyInvalid, match=re.escape(str(tmp_path))):
        load_policy_file(tmp_path)


def test_policy_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(DEFAULT_TEXT.replace("h200", "h\xe900").encode("latin-1"))
    with pytest.raises(PolicyInvalid, match=re.escape(str(path)) + ".*not UTF-8"):
        load_policy_file(path)


def test_policy_file_content_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("foo = 1\n" + DEFAULT_TEXT, encoding="utf-8")
    with pytest.raises(PolicyInvalid) as caught:
        load_policy_file(path)
    assert str(caught.value) == f"policy file {path}: unknown key 'foo'"


# --- duty -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "due"), [
    (0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (21_600_000, 5_400_000), (21_600_001, 5_400_001),
    (43_200_000_00, 10_800_000_00),
])
def test_duty_due_rounds_up(value: int, due: int) -> None:
    assert duty_due(default_policy(), value) == due


@given(st.integers(0, 2**63), st.integers(0, 2**20))
def test_duty_due_is_the_exact_ceiling(value: int, rate: int) -> None:
    policy = dataclasses.replace(default_policy(), duty_rate_bp=rate)
    exact = Fraction(value * rate, 10_000)
    due = duty_due(policy, value)
    assert due - 1 < exact <= due


# --- arbitrary input --------------------------------------------------------------------------------------


def only_policy_invalid(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyInvalid as e:
        assert "\n" not in str(e)


@given(st.text())
def test_arbitrary_text_is_policy_invalid(text: str) -> None:
    only_policy_invalid(text)


@given(st.lists(st.text(alphabet='abcdefinrstuy_[]{}="., 0123456789-+#\n\'tfe:TZ', max_size=30),
                max_size=20))
def test_toml_like_text_is_policy_invalid(lines: list[str]) -> None:
    only_policy_invalid("\n".join(lines))


@given(st.integers(0, 11), st.text(alphabet='[]{}="., 0123456789-+truefalsinx_abc', max_size=40))
def test_one_line_changed_is_valid_or_policy_invalid(index: int, replacement: str) -> None:
    lines = DEFAULT_TEXT.splitlines()
    key = lines[index].split("=")[0].strip()
    lines[index] = f"{key} = {replacement}" if "=" in lines[index] else replacement
    only_policy_invalid("\n".join(lines) + "\n")
