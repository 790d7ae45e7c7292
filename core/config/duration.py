"""Go ``time.Duration`` strings: parse them the way Go's ``time.ParseDuration`` does.

Receptor config values such as ``maxidleconnectiontimeout: 30s`` or ``tokenexpiration: 1h30m`` are Go
duration strings. :func:`parse_go_duration` turns one into a float number of seconds and
:func:`format_go_duration` renders seconds back in Go's ``Duration.String()`` form (for docs and messages).

Grammar (as in Go): an optional sign, then one or more ``<number><unit>`` pairs, where a number is decimal
digits with an optional fraction (``1.5h``, ``.5s``) and the unit is one of ``ns``, ``us`` (also ``µs``/``μs``),
``ms``, ``s``, ``m``, ``h``. The only unit-less value allowed is ``0``. Negative durations parse (Go allows
them); schemas that need a positive value reject them in their ``validate`` method.
"""

from __future__ import annotations

__all__ = ["DurationError", "parse_go_duration", "format_go_duration", "format_go_duration_ns",
           "UNITS_HELP"]

_NS_PER_UNIT: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ MICRO SIGN, as Go accepts
    "\u03bcs": 1_000,  # μ GREEK SMALL LETTER MU, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_DIGITS = "0123456789"
_MAX_NS = (1 << 63) - 1  # Go durations are int64 nanoseconds

#: Short list of accepted units, for error messages.
UNITS_HELP = "ns, us, ms, s, m, h"


class DurationError(ValueError):
    """A string is not a valid Go duration; the message says what is wrong and how to write one."""


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string such as ``"21s"``, ``"1h30m"`` or ``"500ms"`` into seconds.

    Raises :class:`DurationError` for anything Go's ``time.ParseDuration`` would reject, including a
    number without a unit (except ``"0"``) and values beyond Go's ±292-year range.
    """
    if not isinstance(text, str):
        raise DurationError(f"a duration must be a string such as '30s', got {type(text).__name__}")
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if s == "":
        raise DurationError(f"invalid duration {text!r}: empty; write e.g. '30s' or '1m30s'")
    total = 0
    while s:
        if s[0] != "." and s[0] not in _DIGITS:
            raise DurationError(f"invalid duration {text!r}: expected a number at {s!r}; write e.g. '30s' or '1m30s'")
        i = 0
        while i < len(s) and s[i] in _DIGITS:
            i += 1
        whole_digits, s = s[:i], s[i:]
        frac_digits = ""
        if s.startswith("."):
            s = s[1:]
            i = 0
            while i < len(s) and s[i] in _DIGITS:
                i += 1
            frac_digits, s = s[:i], s[i:]
        if not whole_digits and not frac_digits:
            raise DurationError(f"invalid duration {text!r}: a '.' needs digits next to it")
        i = 0
        while i < len(s) and s[i] != "." and s[i] not in _DIGITS:
            i += 1
        unit, s = s[:i], s[i:]
        if not unit:
            raise DurationError(
                f"invalid duration {text!r}: missing unit; add one of {UNITS_HELP} (e.g. '{text}s')"
            )
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise DurationError(f"invalid duration {text!r}: unknown unit {unit!r}; use one of {UNITS_HELP}")
        if len(whole_digits.lstrip("0")) > 20:  # past int64 nanoseconds whatever the unit
            raise DurationError(f"invalid duration {text[:40]!r}: out of range (more than "
                                f"about 292 years)")
        # Exact integer arithmetic; like Go, sub-nanosecond fractions are truncated.
        frac_digits = frac_digits[:30]  # finer than a nanosecond changes nothing
        ns = int(whole_digits or "0") * scale
        if frac_digits:
            ns += int(frac_digits) * scale // 10 ** len(frac_digits)
        total += ns
        if total > _MAX_NS + (1 if negative else 0):
            raise DurationError(f"invalid duration {text!r}: out of range (more than about 292 years)")
    seconds = total / 1e9
    return -seconds if negative else seconds


def format_go_duration(seconds: float) -> str:
    """Render seconds the way Go's ``Duration.String()`` does: ``"1h0m0s"``, ``"1m30s"``, ``"500ms"``, ``"0s"``."""
    return format_go_duration_ns(round(seconds * 1e9))


def format_go_duration_ns(ns: int) -> str:
    """Go's ``Duration.String()`` of a duration in integer nanoseconds (exact)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{_decimal(u, 1_000)}\u00b5s"
    if u < 1_000_000_000:
        return f"{sign}{_decimal(u, 1_000_000)}ms"
    hours, rest = divmod(u, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    out = f"{_decimal(rest, 1_000_000_000)}s"
    if hours or minutes:
        out = f"{minutes}m" + out
    if hours:
        out = f"{hours}h" + out
    return sign + out


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` as a decimal string without trailing zeros (exact, no float rounding)."""
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}." + str(frac).rjust(width, "0").rstrip("0")
