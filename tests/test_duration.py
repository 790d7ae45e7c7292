"""Go duration strings: parse_go_duration / format_go_duration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.config.duration import DurationError, format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("+0", 0.0),
        ("0s", 0.0),
        ("21s", 21.0),
        ("300ms", 0.3),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("1h30m", 5400.0),
        ("1m30.5s", 90.5),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("1ns", 1e-9),
        ("1us", 1e-6),
        ("1\u00b5s", 1e-6),  # µ micro sign
        ("1\u03bcs", 1e-6),  # μ greek mu
        ("1h1m1s1ms1us1ns", 3661.001001001),
        ("-1s", -1.0),  # Go allows negative durations; schemas reject them in validate()
        ("+2m", 120.0),
        ("1.000000001s", 1.000000001),
        ("0.0000000001s", 0.0),  # below a nanosecond truncates, like Go
    ],
)
def test_parse_valid(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("-", "empty"),
        ("30", "missing unit"),
        ("1.5", "missing unit"),
        ("1h30", "missing unit"),
        ("1d", "unknown unit 'd'"),
        ("1 s", "unknown unit ' s'"),
        ("1S", "unknown unit 'S'"),
        ("s", "expected a number"),
        (".s", "needs digits"),
        ("1s.", "needs digits"),
        ("--1s", "expected a number"),
        ("\u0661s", "expected a number"),  # Arabic-Indic digit one: Go only takes ASCII digits
        ("9999999999h", "out of range"),
    ],
)
def test_parse_invalid(text: str, fragment: str) -> None:
    with pytest.raises(DurationError) as info:
        parse_go_duration(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_unit_message_suggests_a_fix() -> None:
    with pytest.raises(DurationError, match=r"add one of ns, us, ms, s, m, h \(e\.g\. '30s'\)"):
        parse_go_duration("30")


def test_non_string_rejected() -> None:
    with pytest.raises(DurationError):
        parse_go_duration(30)  # type: ignore[arg-type]


def test_range_limits() -> None:
    assert parse_go_duration("2562047h47m16.854775807s") == pytest.approx(9223372036.854775807)
    assert parse_go_duration("-2562047h47m16.854775808s") == pytest.approx(-9223372036.854775808)
    with pytest.raises(DurationError, match="out of range"):
        parse_go_duration("2562047h47m16.854775808s")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (21, "21s"),
        (90, "1m30s"),
        (3600, "1h0m0s"),
        (5400.5, "1h30m0.5s"),
        (0.5, "500ms"),
        (0.0015, "1.5ms"),
        (2e-6, "2\u00b5s"),
        (5e-9, "5ns"),
        (-1, "-1s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_then_parse_round_trips(ns: int) -> None:
    seconds = ns / 1e9
    assert parse_go_duration(format_go_duration(seconds)) == pytest.approx(seconds, abs=1e-9)


@given(st.text(max_size=20))
def test_random_text_only_raises_duration_error(text: str) -> None:
    try:
        value = parse_go_duration(text)
    except DurationError:
        return
    assert isinstance(value, float)
