"""Codecs for every Netceptor message type (protocol §2, §2.1–2.5, §2.8).

Every backend message starts with a type byte: data (binary header + payload), routing update and
service advertisement (Go ``encoding/json`` text), reject (``[]``).  Encoders emit JSON exactly as
Go's ``json.Marshal`` would (field order, compact form, float formatting, HTML-safe escaping, sorted
map keys).  Decoders follow Go's lenient rules (case-insensitive keys, unknown keys ignored, missing
keys and ``null`` give zero values) but are strict about types.  Every malformed input raises
:class:`MessageError` and nothing else.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, replace
from typing import Any

__all__ = [
    "GO_ZERO_TIME_NS",
    "HEADER_LEN",
    "MAX_FORWARDING_HOPS",
    "MAX_SERVICE_NAME",
    "MSG_DATA",
    "MSG_REJECT",
    "MSG_ROUTING_UPDATE",
    "MSG_SERVICE_ADVERTISEMENT",
    "REJECT_MESSAGE",
    "SIGNED_PREFIX",
    "DataHeader",
    "DataMessage",
    "MessageError",
    "RoutingUpdate",
    "ServiceAdvertisement",
    "Unreachable",
    "WorkCommand",
    "ad_to_status_dict",
    "advertisement_signed_bytes",
    "decode_data",
    "decode_data_header",
    "decode_message",
    "decode_routing_update",
    "decode_service_advertisement",
    "decode_unreachable",
    "decrement_hops",
    "encode_data",
    "encode_routing_update",
    "encode_service_advertisement",
    "encode_unreachable",
    "format_go_float",
    "format_go_time",
    "parse_go_time",
    "peek_to_node",
    "routing_update_signed_bytes",
]

MSG_DATA = 0
MSG_ROUTING_UPDATE = 1
MSG_SERVICE_ADVERTISEMENT = 2
MSG_REJECT = 3

#: Length of the binary data-message header, type byte included.
HEADER_LEN = 36
#: Longest service name, in UTF-8 bytes.
MAX_SERVICE_NAME = 8
#: Hop limit set by originators of data messages.
MAX_FORWARDING_HOPS = 30

#: A reject message: type byte 3 and the JSON body ``[]``.
REJECT_MESSAGE = b"\x03[]"

#: Go's zero ``time.Time`` (0001-01-01T00:00:00Z) in nanoseconds since the Unix epoch.
GO_ZERO_TIME_NS = -62_135_596_800 * 1_000_000_000

_U64_MAX = (1 << 64) - 1
_HEADER = struct.Struct(">BBxxQQ8s8s")


class MessageError(ValueError):
    """Raised for any message that cannot be encoded or decoded."""


# ------------------------------------------------------------------------------------------------
# Data messages (type 0)


@dataclass(slots=True)
class DataHeader:
    """The routing fields of a data message; node fields are 64-bit node hashes."""

    hops_to_live: int
    from_node: int
    to_node: int
    from_service: str
    to_service: str


@dataclass(slots=True)
class DataMessage(DataHeader):
    """A decoded data message: header fields plus the opaque payload."""

    data: bytes = b""

    def encode(self) -> bytes:
        """Serialize this message (see :func:`encode_data`)."""
        return encode_data(
            self.hops_to_live,
            self.from_node,
            self.to_node,
            self.from_service,
            self.to_service,
            self.data,
        )


def _service_bytes(name: str, which: str) -> bytes:
    if not isinstance(name, str):
        raise MessageError(f"{which} service name must be a string, got {type(name).__name__}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MessageError(f"{which} service name {name!r} is not valid Unicode") from e
    if len(raw) > MAX_SERVICE_NAME:
        raise MessageError(
            f"{which} service name {name!r} is {len(raw)} bytes; the limit is {MAX_SERVICE_NAME}"
        )
    if b"\x00" in raw:
        raise MessageError(f"{which} service name {name!r} contains a NUL byte")
    return raw


def _check_uint(value: object, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError(f"{what} must be an integer, got {type(value).__name__}")
    if not 0 <= value < (1 << bits):
        raise MessageError(f"{what} {value} is outside the uint{bits} range")
    return value


def encode_data(
    hops_to_live: int,
    from_node: int,
    to_node: int,
    from_service: str,
    to_service: str,
    data: bytes | bytearray | memoryview,
) -> bytes:
    """Return a data message: the 36-byte header (type 0, hops, 2 zero bytes, from/to hashes
    big-endian, from/to service NUL-padded to 8 bytes) followed by ``data``.

    Raises :class:`MessageError` for out-of-range numbers or service names over 8 bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError(f"data must be bytes-like, got {type(data).__name__}")
    header = _HEADER.pack(
        MSG_DATA,
        _check_uint(hops_to_live, 8, "hops_to_live"),
        _check_uint(from_node, 64, "from_node hash"),
        _check_uint(to_node, 64, "to_node hash"),
        _service_bytes(from_service, "from"),
        _service_bytes(to_service, "to"),
    )
    return header + data


def _service_name(raw: bytes, which: str) -> str:
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError as e:
        raise MessageError(f"{which} service name is not valid UTF-8") from e


def _check_data(msg: bytes | bytearray | memoryview) -> None:
    if len(msg) < HEADER_LEN:
        raise MessageError(f"data message of {len(msg)} bytes is shorter than the header")
    if msg[0] != MSG_DATA:
        raise MessageError(f"message type {msg[0]} is not a data message")


def decode_data_header(msg: bytes | bytearray | memoryview) -> DataHeader:
    """Decode the header of a full data message (type byte included) without copying the payload."""
    _check_data(msg)
    _, hops, from_node, to_node, from_svc, to_svc = _HEADER.unpack_from(msg)
    return DataHeader(
        hops, from_node, to_node, _service_name(from_svc, "from"), _service_name(to_svc, "to")
    )


def decode_data(msg: bytes | bytearray | memoryview) -> DataMessage:
    """Decode a full data message (type byte included).

    Raises :class:`MessageError` if it is shorter than 36 bytes, is not type 0, or has service
    names that are not UTF-8.  Trailing NULs of service names are stripped.
    """
    _check_data(msg)
    _, hops, from_node, to_node, from_svc, to_svc = _HEADER.unpack_from(msg)
    return DataMessage(
        hops,
        from_node,
        to_node,
        _service_name(from_svc, "from"),
        _service_name(to_svc, "to"),
        bytes(msg[HEADER_LEN:]),
    )


def peek_to_node(msg: bytes | bytearray | memoryview) -> int:
    """Return the destination node hash of a data message without decoding the rest."""
    _check_data(msg)
    return int.from_bytes(msg[12:20], "big")


def decrement_hops(msg: bytes | bytearray | memoryview) -> bytes:
    """Return a copy of a data message with its hop count lowered by one, for forwarding.

    Raises :class:`MessageError` if the message is not a data message or its hops are already 0
    (the caller must report "message expired" before forwarding).
    """
    _check_data(msg)
    hops = msg[1]
    if hops == 0:
        raise MessageError("data message has no hops left")
    return b"".join((b"\x00", bytes((hops - 1,)), memoryview(msg)[2:]))


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


def _clean(s: str) -> str:
    """Replace lone surrogates with U+FFFD, as Go does for invalid UTF-16 and UTF-8."""
    return s if s.isascii() else _SURROGATES.sub("\ufffd", s)


def _go_str(s: object, what: str) -> str:
    if not isinstance(s, str):
        raise MessageError(f"{what} must be a string, got {type(s).__name__}")
    return json.dumps(_clean(s), ensure_ascii=False).translate(_GO_EXTRA_ESCAPES)


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


def _go_uint(value: object, what: str) -> str:
    return str(_check_uint(value, 64, what))


def _go_str_map(m: dict[str, Any] | None, what: str, fmt: Any) -> str:
    if m is None:
        return "null"
    if not isinstance(m, dict):
        raise MessageError(f"{what} must be a dict or None, got {type(m).__name__}")
    items = []
    for k in m:
        if not isinstance(k, str):
            raise MessageError(f"{what} keys must be strings, got {type(k).__name__}")
    # Go sorts map keys by their UTF-8 bytes, which is code-point order.
    for k in sorted(m, key=_clean):
        items.append(f"{_go_str(k, what + ' key')}:{fmt(m[k], f'{what}[{k!r}]')}")
    return "{" + ",".join(items) + "}"


def _go_cost(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{what} must be a number, got {type(value).__name__}")
    return format_go_float(value)


# ------------------------------------------------------------------------------------------------
# Go encoding/json compatibility (decoding side)


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its list of (key, value) pairs, in document order."""


def _reject_constant(name: str) -> None:
    raise MessageError(f"{name} is not valid JSON")


def _load_json(body: bytes | bytearray | memoryview, what: str) -> Any:
    try:
        text = bytes(body).decode("utf-8")
        return json.loads(text, object_pairs_hook=_Pairs, parse_constant=_reject_constant)
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


def _fields(obj: Any, names: tuple[str, ...], what: str) -> dict[str, Any]:
    """Map a decoded JSON object onto Go struct ``names``: exact match first, then case-folded."""
    if not isinstance(obj, _Pairs):
        raise MessageError(f"{what} must be a JSON object, got {_json_type(obj)}")
    exact = set(names)
    folded = {_fold(n): n for n in names}
    out: dict[str, Any] = {}
    for key, value in obj:
        name = key if key in exact else folded.get(_fold(key))
        if name is None:
            continue  # unknown keys are ignored, as in Go
        if name in out and isinstance(out[name], _Pairs) and isinstance(value, _Pairs):
            # Go decodes a repeated object key into the already-allocated map, merging entries.
            value = _Pairs([*out[name], *value])
        out[name] = value
    return out


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, _Pairs):
        return "object"
    return "array"


def _as_str(v: Any, what: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise MessageError(f"{what} must be a string, got {_json_type(v)}")
    return _clean(v)


def _as_uint(v: Any, what: str, bits: int = 64) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise MessageError(f"{what} must be an unsigned integer, got {_json_type(v)} {v!r}")
    if not 0 <= v < (1 << bits):
        raise MessageError(f"{what} {v} is outside the uint{bits} range")
    return v


def _as_bool(v: Any, what: str) -> bool:
    if v is None:
        return False
    if not isinstance(v, bool):
        raise MessageError(f"{what} must be a boolean, got {_json_type(v)}")
    return v


def _as_float(v: Any, what: str) -> float:
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise MessageError(f"{what} must be a number, got {_json_type(v)}")
    try:
        f = float(v)
    except OverflowError as e:
        raise MessageError(f"{what} is too large for a float64") from e
    if not math.isfinite(f):
        raise MessageError(f"{what} must be finite, got {v!r}")
    return f


def _as_map(v: Any, what: str, conv: Any) -> dict[str, Any] | None:
    if v is None:
        return None
    if not isinstance(v, _Pairs):
        raise MessageError(f"{what} must be an object, got {_json_type(v)}")
    return {_clean(k): conv(val, f"{what}[{k!r}]") for k, val in v}


# ------------------------------------------------------------------------------------------------
# Routing updates (type 1)


@dataclass(slots=True)
class RoutingUpdate:
    """A routing update (§2.3).  ``max_datagram`` is a mesh extension, unknown to Go peers."""

    node_id: str
    update_id: str
    update_epoch: int
    update_sequence: int
    connections: dict[str, float]
    forwarding_node: str
    suspected_duplicate: int = 0
    max_datagram: int | None = None
    #: Mesh extension: the longest the sender stays silent on a link to a mesh peer, in ms
    #: (its keepalive period); None from Go and from older mesh nodes.
    keepalive_ms: int | None = None
    #: Mesh extension (route authentication): the origin's signature over
    #: :func:`routing_update_signed_bytes`, base64; None when unsigned.
    signature: str | None = None
    #: Mesh extension (route authentication): the origin's certificate (DER), base64.
    certificate: str | None = None


_RU_FIELDS = (
    "NodeID",
    "UpdateID",
    "UpdateEpoch",
    "UpdateSequence",
    "Connections",
    "ForwardingNode",
    "SuspectedDuplicate",
    "MeshMaxDatagram",
    "MeshKeepalive",
    "MeshSig",
    "MeshCert",
)


def encode_routing_update(u: RoutingUpdate) -> bytes:
    """Return type byte 1 followed by the update as compact Go-style JSON.

    ``MeshMaxDatagram``, ``MeshKeepalive``, ``MeshSig`` and ``MeshCert`` are appended only
    when set.  Raises :class:`MessageError` for wrong types, out-of-range integers or
    non-finite costs.
    """
    parts = [
        f'{{"NodeID":{_go_str(u.node_id, "NodeID")}',
        f'"UpdateID":{_go_str(u.update_id, "UpdateID")}',
        f'"UpdateEpoch":{_go_uint(u.update_epoch, "UpdateEpoch")}',
        f'"UpdateSequence":{_go_uint(u.update_sequence, "UpdateSequence")}',
        f'"Connections":{_go_str_map(u.connections, "Connections", _go_cost)}',
        f'"ForwardingNode":{_go_str(u.forwarding_node, "ForwardingNode")}',
        f'"SuspectedDuplicate":{_go_uint(u.suspected_duplicate, "SuspectedDuplicate")}',
    ]
    if u.max_datagram is not None:
        parts.append(f'"MeshMaxDatagram":{_go_uint(u.max_datagram, "MeshMaxDatagram")}')
    if u.keepalive_ms is not None:
        parts.append(f'"MeshKeepalive":{_go_uint(u.keepalive_ms, "MeshKeepalive")}')
    parts += _signature_parts(u.signature, u.certificate)
    return b"\x01" + (",".join(parts) + "}").encode("utf-8")


def decode_routing_update(body: bytes | bytearray | memoryview) -> RoutingUpdate:
    """Decode a routing update from its JSON ``body`` (the bytes after the type byte)."""
    f = _fields(_load_json(body, "routing update"), _RU_FIELDS, "routing update")
    conns = _as_map(f.get("Connections"), "Connections", _as_float)
    max_dg = f.get("MeshMaxDatagram")
    keepalive = f.get("MeshKeepalive")
    return RoutingUpdate(
        node_id=_as_str(f.get("NodeID"), "NodeID"),
        update_id=_as_str(f.get("UpdateID"), "UpdateID"),
        update_epoch=_as_uint(f.get("UpdateEpoch"), "UpdateEpoch"),
        update_sequence=_as_uint(f.get("UpdateSequence"), "UpdateSequence"),
        connections=conns if conns is not None else {},
        forwarding_node=_as_str(f.get("ForwardingNode"), "ForwardingNode"),
        suspected_duplicate=_as_uint(f.get("SuspectedDuplicate"), "SuspectedDuplicate"),
        max_datagram=None if max_dg is None else _as_uint(max_dg, "MeshMaxDatagram"),
        keepalive_ms=None if keepalive is None else _as_uint(keepalive, "MeshKeepalive"),
        signature=_as_optional_str(f.get("MeshSig"), "MeshSig"),
        certificate=_as_optional_str(f.get("MeshCert"), "MeshCert"),
    )


_RU_START = b'{"NodeID":"'
_RU_NEXT = b'","UpdateID":"'


def peek_routing_update(body: bytes | bytearray) -> tuple[str, str] | None:
    """``(NodeID, UpdateID)`` of a routing update body, read without decoding it.

    Only for the shape Go and mesh write (compact, ``NodeID`` then ``UpdateID``, no escapes);
    None for anything else, which must then be decoded.  A node drops the copies of an update
    it has seen this way: each update reaches a node once per link, and decoding every copy
    was most of an idle mesh's work.
    """
    if not body.startswith(_RU_START):
        return None
    node_end = body.find(b'"', len(_RU_START))
    if node_end < 0 or body[node_end:node_end + len(_RU_NEXT)] != _RU_NEXT:
        return None
    uid_start = node_end + len(_RU_NEXT)
    uid_end = body.find(b'"', uid_start)
    node, uid = bytes(body[len(_RU_START):node_end]), bytes(body[uid_start:uid_end])
    if uid_end < 0 or b"\\" in node or b"\\" in uid:
        return None
    return node.decode("utf-8", "replace"), uid.decode("utf-8", "replace")


def reforward_routing_update(msg: bytes | bytearray, previous: str, node: str) -> bytes:
    """A routing update message (type byte included) as ``node`` forwards it: its
    ``ForwardingNode`` rewritten from ``previous``, every other byte kept (so fields this
    version does not know travel on, unlike Go's re-marshalling).  Decodes and re-encodes
    when the field is not written exactly once in the usual form.

    Raises :class:`MessageError` when the message does not decode.
    """
    old = b'"ForwardingNode":' + _go_str(previous, "ForwardingNode").encode()
    data = bytes(msg)
    if data.count(old) == 1:
        return data.replace(old, b'"ForwardingNode":' + _go_str(node, "ForwardingNode").encode())
    update = decode_routing_update(data[1:])
    update.forwarding_node = node
    return encode_routing_update(update)


# ------------------------------------------------------------------------------------------------
# Go time.Time JSON form

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


def parse_go_time(s: str) -> int:
    """Parse an RFC 3339 timestamp the way Go's ``time.Time`` JSON decoder does.

    Returns nanoseconds since the Unix epoch.  Accepts ``Z`` or any ``±hh:mm`` offset and any number
    of fraction digits (beyond 9 they are truncated, as in Go).  Raises :class:`MessageError`.
    """
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
    secs = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + sec - offset
    return secs * _NS + nanos


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


# ------------------------------------------------------------------------------------------------
# Service advertisements (type 2)


@dataclass(slots=True)
class WorkCommand:
    """A work type advertised by a control service (``{"WorkType":…,"Secure":…}``)."""

    work_type: str
    secure: bool = False


@dataclass(slots=True)
class ServiceAdvertisement:
    """A service advertisement (§2.4); ``time_ns`` is nanoseconds since the Unix epoch (UTC)."""

    node_id: str
    service: str
    time_ns: int
    conn_type: int
    tags: dict[str, str] | None = None
    work_commands: list[WorkCommand] | None = None
    cancel: bool = False
    #: Mesh extension (route authentication): the origin's signature over
    #: :func:`advertisement_signed_bytes`, base64; None when unsigned.
    signature: str | None = None
    #: Mesh extension (route authentication): the origin's certificate (DER), base64.
    certificate: str | None = None


_AD_FIELDS = ("NodeID", "Service", "Time", "ConnType", "Tags", "WorkCommands", "Cancel",
              "MeshSig", "MeshCert")
_WC_FIELDS = ("WorkType", "Secure")


def _go_bool(value: object, what: str) -> str:
    if not isinstance(value, bool):
        raise MessageError(f"{what} must be a bool, got {type(value).__name__}")
    return "true" if value else "false"


def _go_work_commands(wcs: list[WorkCommand] | None) -> str:
    if wcs is None:
        return "null"
    if not isinstance(wcs, list):
        raise MessageError(f"WorkCommands must be a list or None, got {type(wcs).__name__}")
    items = []
    for wc in wcs:
        if not isinstance(wc, WorkCommand):
            raise MessageError(f"WorkCommands items must be WorkCommand, got {type(wc).__name__}")
        items.append(
            f'{{"WorkType":{_go_str(wc.work_type, "WorkType")},'
            f'"Secure":{_go_bool(wc.secure, "Secure")}}}'
        )
    return "[" + ",".join(items) + "]"


def encode_service_advertisement(ad: ServiceAdvertisement) -> bytes:
    """Return type byte 2 followed by the advertisement as compact Go-style JSON
    (``MeshSig`` and ``MeshCert`` appended only when set)."""
    body = (
        f'{{"NodeID":{_go_str(ad.node_id, "NodeID")},'
        f'"Service":{_go_str(ad.service, "Service")},'
        f'"Time":"{format_go_time(ad.time_ns)}",'
        f'"ConnType":{_check_uint(ad.conn_type, 8, "ConnType")},'
        f'"Tags":{_go_str_map(ad.tags, "Tags", _go_str)},'
        f'"WorkCommands":{_go_work_commands(ad.work_commands)},'
        f'"Cancel":{_go_bool(ad.cancel, "Cancel")}'
    )
    extra = _signature_parts(ad.signature, ad.certificate)
    return b"\x02" + (",".join([body, *extra]) + "}").encode("utf-8")


def _as_work_commands(v: Any) -> list[WorkCommand] | None:
    if v is None:
        return None
    if not isinstance(v, list) or isinstance(v, _Pairs):
        raise MessageError(f"WorkCommands must be an array, got {_json_type(v)}")
    out = []
    for item in v:
        if item is None:
            out.append(WorkCommand(""))
            continue
        f = _fields(item, _WC_FIELDS, "WorkCommands item")
        out.append(
            WorkCommand(_as_str(f.get("WorkType"), "WorkType"), _as_bool(f.get("Secure"), "Secure"))
        )
    return out


def decode_service_advertisement(body: bytes | bytearray | memoryview) -> ServiceAdvertisement:
    """Decode a service advertisement from its JSON ``body`` (the bytes after the type byte).

    A missing or null ``Time`` gives Go's zero time, :data:`GO_ZERO_TIME_NS`.
    """
    f = _fields(_load_json(body, "service advertisement"), _AD_FIELDS, "service advertisement")
    t = f.get("Time")
    if t is not None and not isinstance(t, str):
        raise MessageError(f"Time must be a string, got {_json_type(t)}")
    return ServiceAdvertisement(
        node_id=_as_str(f.get("NodeID"), "NodeID"),
        service=_as_str(f.get("Service"), "Service"),
        time_ns=GO_ZERO_TIME_NS if t is None else parse_go_time(t),
        # Go declares ConnType as a byte.
        conn_type=_as_uint(f.get("ConnType"), "ConnType", bits=8),
        tags=_as_map(f.get("Tags"), "Tags", _as_str),
        work_commands=_as_work_commands(f.get("WorkCommands")),
        cancel=_as_bool(f.get("Cancel"), "Cancel"),
        signature=_as_optional_str(f.get("MeshSig"), "MeshSig"),
        certificate=_as_optional_str(f.get("MeshCert"), "MeshCert"),
    )


def ad_to_status_dict(ad: ServiceAdvertisement) -> dict[str, Any]:
    """Return the advertisement as it appears in the control ``status`` reply (no ``Cancel``)."""
    return {
        "NodeID": ad.node_id,
        "Service": ad.service,
        "Time": format_go_time(ad.time_ns),
        "ConnType": ad.conn_type,
        "Tags": None if ad.tags is None else dict(ad.tags),
        "WorkCommands": None
        if ad.work_commands is None
        else [{"WorkType": wc.work_type, "Secure": wc.secure} for wc in ad.work_commands],
    }


# ------------------------------------------------------------------------------------------------
# Route authentication (mesh extension): what an origin signs

#: Prefix of every signed byte string (a signature for one purpose is useless for another).
SIGNED_PREFIX = b"mesh-route-auth/1\n"


def _signature_parts(signature: str | None, certificate: str | None) -> list[str]:
    parts = []
    if signature is not None:
        parts.append(f'"MeshSig":{_go_str(signature, "MeshSig")}')
    if certificate is not None:
        parts.append(f'"MeshCert":{_go_str(certificate, "MeshCert")}')
    return parts


def _as_optional_str(v: Any, what: str) -> str | None:
    return None if v is None else _as_str(v, what)


def routing_update_signed_bytes(u: RoutingUpdate) -> bytes:
    """The bytes an origin signs for its routing update: :data:`SIGNED_PREFIX` and the update
    as :func:`encode_routing_update` writes it (type byte, Go field order, sorted
    ``Connections``, Go float forms), without ``ForwardingNode`` (every relay rewrites it),
    ``MeshSig`` and ``MeshCert``.  Canonical: a decoded update gives back the bytes its origin
    signed, however a mesh relay re-encoded it.
    """
    return SIGNED_PREFIX + encode_routing_update(
        replace(u, forwarding_node="", signature=None, certificate=None))


def advertisement_signed_bytes(ad: ServiceAdvertisement) -> bytes:
    """The bytes an origin signs for its service advertisement: :data:`SIGNED_PREFIX` and the
    advert as :func:`encode_service_advertisement` writes it, without ``MeshSig`` and
    ``MeshCert`` (the type byte keeps an advert's signature from passing for an update's)."""
    return SIGNED_PREFIX + encode_service_advertisement(
        replace(ad, signature=None, certificate=None))


# ------------------------------------------------------------------------------------------------
# Unreachable notifications (payload of a data message between `unreach` services)


@dataclass(slots=True)
class Unreachable:
    """An unreachable notification describing a message that could not be delivered (§2.8)."""

    from_node: str
    to_node: str
    from_service: str
    to_service: str
    problem: str


_UR_FIELDS = ("FromNode", "ToNode", "FromService", "ToService", "Problem")


def encode_unreachable(u: Unreachable) -> bytes:
    """Return the JSON payload of an unreachable notification (no type byte: it travels as data)."""
    body = (
        f'{{"FromNode":{_go_str(u.from_node, "FromNode")},'
        f'"ToNode":{_go_str(u.to_node, "ToNode")},'
        f'"FromService":{_go_str(u.from_service, "FromService")},'
        f'"ToService":{_go_str(u.to_service, "ToService")},'
        f'"Problem":{_go_str(u.problem, "Problem")}}}'
    )
    return body.encode("utf-8")


def decode_unreachable(payload: bytes | bytearray | memoryview) -> Unreachable:
    """Decode the JSON payload of an unreachable notification."""
    f = _fields(_load_json(payload, "unreachable notification"), _UR_FIELDS, "unreachable")
    return Unreachable(*(_as_str(f.get(name), name) for name in _UR_FIELDS))


# ------------------------------------------------------------------------------------------------
# Dispatch


def decode_message(msg: bytes | bytearray | memoryview) -> tuple[int, object]:
    """Decode any backend message, returning ``(type, value)``.

    Values: :class:`DataMessage`, :class:`RoutingUpdate`, :class:`ServiceAdvertisement`, ``None``
    for a reject (its body is not inspected), or the raw body ``bytes`` for an unknown type, which
    the caller should log and ignore.  Raises :class:`MessageError` for empty or malformed messages.
    """
    if len(msg) == 0:
        raise MessageError("empty message")
    kind = msg[0]
    if kind == MSG_DATA:
        return kind, decode_data(msg)
    body = memoryview(msg)[1:]
    if kind == MSG_ROUTING_UPDATE:
        return kind, decode_routing_update(body)
    if kind == MSG_SERVICE_ADVERTISEMENT:
        return kind, decode_service_advertisement(body)
    if kind == MSG_REJECT:
        return kind, None
    return kind, bytes(body)
