"""Byte sizes in config files: ``1048576``, ``512k``, ``100MB``, ``1GiB``.

Suffixes are case-insensitive; ``k``/``m``/``g``/``t`` (with or without ``B``) and the ``KiB`` forms
are powers of 1024, as operators usually mean for limits on disk and memory.
"""

from __future__ import annotations

import re

__all__ = ["ByteSizeError", "parse_byte_size", "format_byte_size", "SIZE_HELP"]

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^(\d+)\s*([kmgt]?)(i?b)?$", re.IGNORECASE)
#: How to write a size, for error messages.
SIZE_HELP = "a number of bytes, or a number with k, M, G or T (powers of 1024), e.g. '100M'"


class ByteSizeError(ValueError):
    """A value is not a byte size; the message says how to write one."""


def parse_byte_size(value: object) -> int:
    """The number of bytes ``value`` (an int or a string such as ``"100MB"``) stands for."""
    if isinstance(value, bool):
        raise ByteSizeError(f"expected {SIZE_HELP}, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ByteSizeError("a size must not be negative")
        return value
    if not isinstance(value, str):
        raise ByteSizeError(f"expected {SIZE_HELP}, got {type(value).__name__}")
    match = _SIZE_RE.match(value.strip())
    if match is None or (match.group(3) and match.group(3).lower() == "ib" and not match.group(2)):
        raise ByteSizeError(f"{value!r} is not a size; expected {SIZE_HELP}")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def format_byte_size(size: int) -> str:
    """``size`` in the largest unit that divides it exactly (``104857600`` → ``"100M"``)."""
    for suffix in ("T", "G", "M", "k"):
        unit = _UNITS[suffix.lower()]
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)
