"""Go ``encoding/json`` compatibility for the message codecs (protocol §2).

Encoders write what Go's ``json.Marshal`` would (compact form, float formatting, HTML-safe
escaping, sorted map keys); decoders follow Go's lenient rules (case-insensitive keys, unknown
keys ignored, missing keys and ``null`` give zero values) but are strict about types.  Every
malformed input raises :class:`MessageError` and nothing else.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "MessageError",
    "Pairs",
    "as_bool",
    "as_float",
    "as_map",
    "as_optional_str",
    "as_str",
    "as_uint",
    "check_uint",
    "clean",
    "fields",
    "format_go_float",
    "go_bool",
    "go_str",
    "go_str_map",
    "go_uint",
    "json_type",
    "load_json",
]


class MessageError(ValueError):
    """Raised for any message that cannot be encoded or decoded."""


# ------------------------------------------------------------------------------------------------
# Go encoding/json compatibility (encoding side)

_SURROGATES = re.compile("[\ud800-\udfff]")
# json.Marshal escapes these by default (HTML safety and JavaScript line terminators).
_GO_EXTRA_ESCAPES = str.maketrans(
    {
        "<": "\\u003c",
        ">": "\\u003e",
        "&": "\\u0026",
        "\u2028": "\\u2028",
        "\u2029": "\\u2029",
    }
)


def clean(s: str) -> str:
    """Replace lone surrogates with U+FFFD, as Go does for invalid UTF-16 and UTF-8."""
    return s if s.isascii() else _SURROGATES.sub("\ufffd", s)


def go_str(s: object, what: str) -> str:
    """A string as a Go JSON string literal (HTML-safe escapes, lone surrogates replaced)."""
    if not isinstance(s, str):
        raise MessageError(f"{what} must be a string, got {type(s).__name__}")
    return json.dumps(clean(s), ensure_ascii=False).translate(_GO_EXTRA_ESCAPES)


def format_go_float(value: float) -> str:
    """Format a float64 exactly as Go's ``encoding/json`` does (``1.0`` → ``1``, ``1e-07`` → ``1e-7``).

    Raises :class:`MessageError` for NaN and infinities, which Go refuses to encode.
    """
    try:
        f = float(value)
    except (OverflowError, TypeError, ValueError) as e:
        raise MessageError(f"cannot encode {value!r} as a float64") from e
    if not math.isfinite(f):
        raise MessageError(f"cannot encode non-finite number {f!r}")
    if f == 0.0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign = "-" if f < 0 else ""
    # repr() gives the shortest round-tripping digits, like Go's strconv with precision -1.
    mantissa, _, exp_s = repr(abs(f)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = (int_part + frac_part).lstrip("0")
    exp10 = (int(exp_s) if exp_s else 0) + len(int_part) - (len(int_part + frac_part) - len(digits))
    digits = digits.rstrip("0")
    # The value is 0.d1d2d3... × 10**exp10.
    if abs(f) < 1e-6 or abs(f) >= 1e21:
        e = exp10 - 1
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_txt = f"{abs(e):02d}" if e >= 0 else str(-e)
        return f"{sign}{body}e{'+' if e >= 0 else '-'}{exp_txt}"
    if exp10 <= 0:
        return f"{sign}0.{'0' * -exp10}{digits}"
    if exp10 >= len(digits):
        return sign + digits + "0" * (exp10 - len(digits))
    return f"{sign}{digits[:exp10]}.{digits[exp10:]}"


def check_uint(value: object, bits: int, what: str) -> int:
    """``value`` if it is an int in the uint``bits`` range (``what`` names it in errors)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise MessageError(f"{what} {value} is outside the uint{bits} range")
    return value


def go_uint(value: object, what: str) -> str:
    """A uint64 as Go writes it."""
    return str(check_uint(value, 64, what))


def go_str_map(m: dict[str, Any] | None, what: str, fmt: Any) -> str:
    """A Go ``map[string]T`` (``null`` for None), keys sorted, values written by ``fmt``."""
    if m is None:
        return "null"
    if not isinstance(m, dict):
        raise MessageError(f"{what} must be a dict or None, got {type(m).__name__}")
    items = []
    for k in m:
        if not isinstance(k, str):
            raise MessageError(f"{what} keys must be strings, got {type(k).__name__}")
    # Go sorts map keys by their UTF-8 bytes, which is code-point order.
    for k in sorted(m, key=clean):
        items.append(f"{go_str(k, what + ' key')}:{fmt(m[k], f'{what}[{k!r}]')}")
    return "{" + ",".join(items) + "}"


def go_bool(value: object, what: str) -> str:
    """A bool as Go writes it."""
    if not isinstance(value, bool):
        raise MessageError(f"{what} must be a bool, got {type(value).__name__}")
    return "true" if value else "false"


# ------------------------------------------------------------------------------------------------
# Go encoding/json compatibility (decoding side)


class Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its list of (key, value) pairs, in document order."""


def _reject_constant(name: str) -> None:
    raise MessageError(f"{name} is not valid JSON")


def load_json(body: bytes | bytearray | memoryview, what: str) -> Any:
    """Decode UTF-8 JSON ``body``, its objects as :class:`Pairs` (``what`` names it in errors)."""
    try:
        text = bytes(body).decode("utf-8")
        return json.loads(text, object_pairs_hook=Pairs, parse_constant=_reject_constant)
    except MessageError:
        raise
    except UnicodeDecodeError as e:
        raise MessageError(f"{what} is not valid UTF-8") from e
    except (ValueError, RecursionError, TypeError) as e:
        raise MessageError(f"{what} is not valid JSON: {e}") from e


def _fold(key: str) -> str:
    """Fold a key like Go's case-insensitive struct-field matching."""
    if key.isascii():
        return key.lower()
    out = []
    for c in key:
        u = c.upper()
        u = u if len(u) == 1 else c
        lo = u.lower()
        out.append(lo if len(lo) == 1 else u)
    return "".join(out)


def fields(obj: Any, names: tuple[str, ...], what: str) -> dict[str, Any]:
    """Map a decoded JSON object onto Go struct ``names``: exact match first, then case-folded."""
    if not isinstance(obj, Pairs):
        raise MessageError(f"{what} must be a JSON object, got {json_type(obj)}")
    exact = set(names)
    folded = {_fold(n): n for n in names}
    out: dict[str, Any] = {}
    for key, value in obj:
        name = key if key in exact else folded.get(_fold(key))
        if name is None:
            continue  # unknown keys are ignored, as in Go
        if name in out and isinstance(out[name], Pairs) and isinstance(value, Pairs):
            # Go decodes a repeated object key into the already-allocated map, merging entries.
            value = Pairs([*out[name], *value])
        out[name] = value
    return out


def json_type(v: Any) -> str:
    """The JSON type name of a decoded value, for error messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, Pairs):
        return "object"
    return "array"


def as_str(v: Any, what: str) -> str:
    """A decoded Go ``string`` field ("" for null)."""
    if v is None:
        return ""
    if not isinstance(v, str):
        raise MessageError(f"{what} must be a string, got {json_type(v)}")
    return clean(v)


def as_uint(v: Any, what: str, bits: int = 64) -> int:
    """A decoded Go ``uint<bits>`` field (0 for null)."""
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise MessageError(f"{what} must be an unsigned integer, got {json_type(v)} {v!r}")
    if not 0 <= v < (1 << bits):
        raise MessageError(f"{what} {v} is outside the uint{bits} range")
    return v


def as_bool(v: Any, what: str) -> bool:
    """A decoded Go ``bool`` field (False for null)."""
    if v is None:
        return False
    if not isinstance(v, bool):
        raise MessageError(f"{what} must be a boolean, got {json_type(v)}")
    return v


def as_float(v: Any, what: str) -> float:
    """A decoded Go ``float64`` field (0.0 for null)."""
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MessageError(f"{what} must be a number, got {json_type(v)}")
    try:
        f = float(v)
    except OverflowError as e:
        raise MessageError(f"{what} is too large for a float64") from e
    if not math.isfinite(f):
        raise MessageError(f"{what} must be finite, got {v!r}")
    return f


def as_map(v: Any, what: str, conv: Any) -> dict[str, Any] | None:
    """A decoded Go ``map[string]T`` field (None for null), values converted by ``conv``."""
    if v is None:
        return None
    if not isinstance(v, Pairs):
        raise MessageError(f"{what} must be an object, got {json_type(v)}")
    return {clean(k): conv(val, f"{what}[{k!r}]") for k, val in v}


def as_optional_str(v: Any, what: str) -> str | None:
    """A decoded optional string field (a mesh extension): None when absent or null."""
    return None if v is None else as_str(v, what)
