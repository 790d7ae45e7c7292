"""Go's ``time.Time`` in its JSON form (RFC 3339, as ``encoding/json`` writes and reads it).

Times are nanoseconds since the Unix epoch (UTC) in the message codecs; remote work and the
``status`` layout read them as :class:`~datetime.datetime` in their own zone offset.  Every
malformed time raises :class:`~mesh.go_json.MessageError`.  Like :mod:`mesh.go_json` it sits
outside :mod:`mesh.net`, so that client commands (``mesh status``) use it without loading the
network layer.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from mesh.go_json import MessageError

__all__ = ["GO_ZERO_TIME", "GO_ZERO_TIME_NS", "format_go_time", "go_datetime", "parse_go_time"]

#: Go's zero ``time.Time`` (0001-01-01T00:00:00Z) in nanoseconds since the Unix epoch.
GO_ZERO_TIME_NS = -62_135_596_800 * 1_000_000_000
#: Go's zero ``time.Time`` as its JSON encoding writes it (e.g. an unset expiration).
GO_ZERO_TIME = "0001-01-01T00:00:00Z"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})", re.ASCII
)
_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS


def _is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if _is_leap(y) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's algorithm)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: int) -> tuple[int, int, int]:
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (m <= 2), m, d


def _parse(s: str) -> tuple[tuple[int, int, int, int, int, int], int, int]:
    """``((year, month, day, hour, minute, second), nanoseconds, zone offset in seconds)``
    of an RFC 3339 timestamp, checked the way Go's ``time.Time`` JSON decoder checks it."""
    if not isinstance(s, str):
        raise MessageError(f"time must be a string, got {type(s).__name__}")
    m = _RFC3339.fullmatch(s)
    if m is None:
        raise MessageError(f"time {s!r} is not in RFC 3339 format")
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    if not (
        1 <= month <= 12
        and 1 <= day <= _days_in_month(year, month)
        and hour <= 23
        and minute <= 59
        and sec <= 59
    ):
        raise MessageError(f"time {s!r} has a field out of range")
    frac = m.group(7) or ""
    nanos = int((frac[:9]).ljust(9, "0")) if frac else 0
    zone = m.group(8)
    offset = 0
    if zone != "Z":
        oh, om = int(zone[1:3]), int(zone[4:6])
        if oh > 23 or om > 59:
            raise MessageError(f"time {s!r} has a zone offset out of range")
        offset = (oh * 60 + om) * 60 * (-1 if zone[0] == "-" else 1)
    return (year, month, day, hour, minute, sec), nanos, offset


def parse_go_time(s: str) -> int:
    """Parse an RFC 3339 timestamp the way Go's ``time.Time`` JSON decoder does.

    Returns nanoseconds since the Unix epoch.  Accepts ``Z`` or any ``±hh:mm`` offset and any number
    of fraction digits (beyond 9 they are truncated, as in Go).  Raises :class:`MessageError`.
    """
    (year, month, day, hour, minute, sec), nanos, offset = _parse(s)
    secs = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + sec - offset
    return secs * _NS + nanos


def go_datetime(s: str) -> datetime:
    """Parse an RFC 3339 timestamp like :func:`parse_go_time`, as an aware datetime in the
    timestamp's own zone offset (its wall clock kept; the fraction truncated to microseconds).

    Raises :class:`MessageError`, also for year 0, which a datetime cannot hold.
    """
    (year, month, day, hour, minute, sec), nanos, offset = _parse(s)
    if year < 1:
        raise MessageError(f"time {s!r} is before year 1")
    return datetime(year, month, day, hour, minute, sec, nanos // 1000,
                    tzinfo=timezone(timedelta(seconds=offset)))


def format_go_time(ns: int) -> str:
    """Format nanoseconds since the Unix epoch like Go's ``time.Time`` JSON encoding in UTC.

    E.g. ``2024-10-24T20:36:52.1Z``: fraction trailing zeros trimmed, fraction omitted when zero.
    Raises :class:`MessageError` for years outside 0..9999, which Go refuses to encode.
    """
    if isinstance(ns, bool) or not isinstance(ns, int):
        raise MessageError(f"time must be integer nanoseconds, got {type(ns).__name__}")
    days, rem = divmod(ns, _DAY_NS)
    secs, nanos = divmod(rem, _NS)
    year, month, day = _civil_from_days(days)
    if not 0 <= year <= 9999:
        raise MessageError(f"year {year} is outside the range [0,9999]")
    hh, rest = divmod(secs, 3600)
    mm, ss = divmod(rest, 60)
    frac = "." + f"{nanos:09d}".rstrip("0") if nanos else ""
    return f"{year:04d}-{month:02d}-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}{frac}Z"
