"""Codecs for every Netceptor message type (protocol §2, §2.1–2.5, §2.8).

Every backend message starts with a type byte: data (binary header + payload), routing update and
service advertisement (Go ``encoding/json`` text), reject (``[]``).  Encoders emit JSON exactly as
Go's ``json.Marshal`` would (field order, compact form, float formatting, HTML-safe escaping, sorted
map keys).  Decoders follow Go's lenient rules (case-insensitive keys, unknown keys ignored, missing
keys and ``null`` give zero values) but are strict about types.  Every malformed input raises
:class:`MessageError` and nothing else.  The Go ``encoding/json`` rules live in
:mod:`mesh.go_json`, the ``time.Time`` form in :mod:`mesh.go_time`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from typing import Any

from mesh.go_json import (
    MessageError,
    Pairs,
    as_bool,
    as_float,
    as_map,
    as_optional_str,
    as_str,
    as_uint,
    check_uint,
    fields,
    format_go_float,
    go_bool,
    go_str,
    go_str_map,
    go_uint,
    json_type,
    load_json,
)
from mesh.go_time import GO_ZERO_TIME_NS, format_go_time, parse_go_time

# MessageError, format_go_float and the Go time helpers are re-exported: they are part of
# this module's documented interface.

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

_U64_MAX = (1 << 64) - 1
_HEADER = struct.Struct(">BBxxQQ8s8s")


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
        check_uint(hops_to_live, 8, "hops_to_live"),
        check_uint(from_node, 64, "from_node hash"),
        check_uint(to_node, 64, "to_node hash"),
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


def _go_cost(value: object, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(f"{what} must be a number, got {type(value).__name__}")
    return format_go_float(value)


def encode_routing_update(u: RoutingUpdate) -> bytes:
    """Return type byte 1 followed by the update as compact Go-style JSON.

    ``MeshMaxDatagram``, ``MeshKeepalive``, ``MeshSig`` and ``MeshCert`` are appended only
    when set.  Raises :class:`MessageError` for wrong types, out-of-range integers or
    non-finite costs.
    """
    parts = [
        f'{{"NodeID":{go_str(u.node_id, "NodeID")}',
        f'"UpdateID":{go_str(u.update_id, "UpdateID")}',
        f'"UpdateEpoch":{go_uint(u.update_epoch, "UpdateEpoch")}',
        f'"UpdateSequence":{go_uint(u.update_sequence, "UpdateSequence")}',
        f'"Connections":{go_str_map(u.connections, "Connections", _go_cost)}',
        f'"ForwardingNode":{go_str(u.forwarding_node, "ForwardingNode")}',
        f'"SuspectedDuplicate":{go_uint(u.suspected_duplicate, "SuspectedDuplicate")}',
    ]
    if u.max_datagram is not None:
        parts.append(f'"MeshMaxDatagram":{go_uint(u.max_datagram, "MeshMaxDatagram")}')
    if u.keepalive_ms is not None:
        parts.append(f'"MeshKeepalive":{go_uint(u.keepalive_ms, "MeshKeepalive")}')
    parts += _signature_parts(u.signature, u.certificate)
    return b"\x01" + (",".join(parts) + "}").encode("utf-8")


def decode_routing_update(body: bytes | bytearray | memoryview) -> RoutingUpdate:
    """Decode a routing update from its JSON ``body`` (the bytes after the type byte)."""
    f = fields(load_json(body, "routing update"), _RU_FIELDS, "routing update")
    conns = as_map(f.get("Connections"), "Connections", as_float)
    max_dg = f.get("MeshMaxDatagram")
    keepalive = f.get("MeshKeepalive")
    return RoutingUpdate(
        node_id=as_str(f.get("NodeID"), "NodeID"),
        update_id=as_str(f.get("UpdateID"), "UpdateID"),
        update_epoch=as_uint(f.get("UpdateEpoch"), "UpdateEpoch"),
        update_sequence=as_uint(f.get("UpdateSequence"), "UpdateSequence"),
        connections=conns if conns is not None else {},
        forwarding_node=as_str(f.get("ForwardingNode"), "ForwardingNode"),
        suspected_duplicate=as_uint(f.get("SuspectedDuplicate"), "SuspectedDuplicate"),
        max_datagram=None if max_dg is None else as_uint(max_dg, "MeshMaxDatagram"),
        keepalive_ms=None if keepalive is None else as_uint(keepalive, "MeshKeepalive"),
        signature=as_optional_str(f.get("MeshSig"), "MeshSig"),
        certificate=as_optional_str(f.get("MeshCert"), "MeshCert"),
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
    old = b'"ForwardingNode":' + go_str(previous, "ForwardingNode").encode()
    data = bytes(msg)
    if data.count(old) == 1:
        return data.replace(old, b'"ForwardingNode":' + go_str(node, "ForwardingNode").encode())
    update = decode_routing_update(data[1:])
    update.forwarding_node = node
    return encode_routing_update(update)


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
            f'{{"WorkType":{go_str(wc.work_type, "WorkType")},'
            f'"Secure":{go_bool(wc.secure, "Secure")}}}'
        )
    return "[" + ",".join(items) + "]"


def encode_service_advertisement(ad: ServiceAdvertisement) -> bytes:
    """Return type byte 2 followed by the advertisement as compact Go-style JSON
    (``MeshSig`` and ``MeshCert`` appended only when set)."""
    body = (
        f'{{"NodeID":{go_str(ad.node_id, "NodeID")},'
        f'"Service":{go_str(ad.service, "Service")},'
        f'"Time":"{format_go_time(ad.time_ns)}",'
        f'"ConnType":{check_uint(ad.conn_type, 8, "ConnType")},'
        f'"Tags":{go_str_map(ad.tags, "Tags", go_str)},'
        f'"WorkCommands":{_go_work_commands(ad.work_commands)},'
        f'"Cancel":{go_bool(ad.cancel, "Cancel")}'
    )
    extra = _signature_parts(ad.signature, ad.certificate)
    return b"\x02" + (",".join([body, *extra]) + "}").encode("utf-8")


def _as_work_commands(v: Any) -> list[WorkCommand] | None:
    if v is None:
        return None
    if not isinstance(v, list) or isinstance(v, Pairs):
        raise MessageError(f"WorkCommands must be an array, got {json_type(v)}")
    out = []
    for item in v:
        if item is None:
            out.append(WorkCommand(""))
            continue
        f = fields(item, _WC_FIELDS, "WorkCommands item")
        out.append(
            WorkCommand(as_str(f.get("WorkType"), "WorkType"), as_bool(f.get("Secure"), "Secure"))
        )
    return out


def decode_service_advertisement(body: bytes | bytearray | memoryview) -> ServiceAdvertisement:
    """Decode a service advertisement from its JSON ``body`` (the bytes after the type byte).

    A missing or null ``Time`` gives Go's zero time, :data:`GO_ZERO_TIME_NS`.
    """
    f = fields(load_json(body, "service advertisement"), _AD_FIELDS, "service advertisement")
    t = f.get("Time")
    if t is not None and not isinstance(t, str):
        raise MessageError(f"Time must be a string, got {json_type(t)}")
    return ServiceAdvertisement(
        node_id=as_str(f.get("NodeID"), "NodeID"),
        service=as_str(f.get("Service"), "Service"),
        time_ns=GO_ZERO_TIME_NS if t is None else parse_go_time(t),
        # Go declares ConnType as a byte.
        conn_type=as_uint(f.get("ConnType"), "ConnType", bits=8),
        tags=as_map(f.get("Tags"), "Tags", as_str),
        work_commands=_as_work_commands(f.get("WorkCommands")),
        cancel=as_bool(f.get("Cancel"), "Cancel"),
        signature=as_optional_str(f.get("MeshSig"), "MeshSig"),
        certificate=as_optional_str(f.get("MeshCert"), "MeshCert"),
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
        parts.append(f'"MeshSig":{go_str(signature, "MeshSig")}')
    if certificate is not None:
        parts.append(f'"MeshCert":{go_str(certificate, "MeshCert")}')
    return parts


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
        f'{{"FromNode":{go_str(u.from_node, "FromNode")},'
        f'"ToNode":{go_str(u.to_node, "ToNode")},'
        f'"FromService":{go_str(u.from_service, "FromService")},'
        f'"ToService":{go_str(u.to_service, "ToService")},'
        f'"Problem":{go_str(u.problem, "Problem")}}}'
    )
    return body.encode("utf-8")


def decode_unreachable(payload: bytes | bytearray | memoryview) -> Unreachable:
    """Decode the JSON payload of an unreachable notification."""
    f = fields(load_json(payload, "unreachable notification"), _UR_FIELDS, "unreachable")
    return Unreachable(*(as_str(f.get(name), name) for name in _UR_FIELDS))


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
