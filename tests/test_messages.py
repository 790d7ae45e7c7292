"""Netceptor message codecs: byte layouts, Go-compatible JSON, and malformed input handling."""

from __future__ import annotations

import json
import struct
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.net.messages import (
    GO_ZERO_TIME_NS,
    HEADER_LEN,
    MAX_SERVICE_NAME,
    MSG_DATA,
    MSG_REJECT,
    MSG_ROUTING_UPDATE,
    MSG_SERVICE_ADVERTISEMENT,
    REJECT_MESSAGE,
    DataHeader,
    DataMessage,
    MessageError,
    RoutingUpdate,
    ServiceAdvertisement,
    Unreachable,
    WorkCommand,
    ad_to_status_dict,
    decode_data,
    decode_data_header,
    decode_message,
    decode_routing_update,
    decode_service_advertisement,
    decode_unreachable,
    decrement_hops,
    encode_data,
    encode_routing_update,
    encode_service_advertisement,
    encode_unreachable,
    format_go_float,
    format_go_time,
    parse_go_time,
    peek_to_node,
)

FROM_HASH = 0x0102030405060708
TO_HASH = 0xF1F2F3F4F5F6F7F8


# --------------------------------------------------------------------------------------------
# constants


def test_constants() -> None:
    assert (MSG_DATA, MSG_ROUTING_UPDATE, MSG_SERVICE_ADVERTISEMENT, MSG_REJECT) == (0, 1, 2, 3)
    assert HEADER_LEN == 36
    assert MAX_SERVICE_NAME == 8
    assert REJECT_MESSAGE == b"\x03[]"
    assert issubclass(MessageError, ValueError)


# --------------------------------------------------------------------------------------------
# data messages


def test_data_header_layout() -> None:
    msg = encode_data(30, FROM_HASH, TO_HASH, "ping", "control", b"payload")
    expected = (
        b"\x00"  # type
        + b"\x1e"  # hops = 30
        + b"\x00\x00"  # reserved
        + b"\x01\x02\x03\x04\x05\x06\x07\x08"  # from hash, big-endian
        + b"\xf1\xf2\xf3\xf4\xf5\xf6\xf7\xf8"  # to hash, big-endian
        + b"ping\x00\x00\x00\x00"
        + b"control\x00"
        + b"payload"
    )
    assert msg == expected
    assert msg[:36] == struct.pack(">BBHQQ8s8s", 0, 30, 0, FROM_HASH, TO_HASH, b"ping", b"control")


def test_data_round_trip_and_full_length_names() -> None:
    msg = encode_data(1, FROM_HASH, TO_HASH, "abcdefgh", "", b"")
    assert len(msg) == HEADER_LEN
    assert msg[20:36] == b"abcdefgh" + bytes(8)
    assert decode_data(msg) == DataMessage(1, FROM_HASH, TO_HASH, "abcdefgh", "", b"")
    m = DataMessage(0, 0, 2**64 - 1, "é", "x", b"\x00\x01")
    assert decode_data(m.encode()) == m
    assert decode_data_header(m.encode()) == DataHeader(0, 0, 2**64 - 1, "é", "x")


def test_data_accepts_buffer_types() -> None:
    msg = encode_data(5, 1, 2, "a", "b", memoryview(b"xyz"))
    assert decode_data(bytearray(msg)).data == b"xyz"
    assert decode_data(memoryview(msg)).data == b"xyz"


def test_decode_ignores_reserved_bytes() -> None:
    msg = bytearray(encode_data(5, 1, 2, "a", "b", b"z"))
    msg[2:4] = b"\xff\xff"
    assert decode_data(bytes(msg)).hops_to_live == 5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"from_service": "ninebytes"},
        {"to_service": "éééé" + "x"},  # 9 UTF-8 bytes
        {"from_service": "a\x00b"},
        {"hops_to_live": 256},
        {"hops_to_live": -1},
        {"from_node": 2**64},
        {"to_node": -1},
        {"from_service": 5},
        {"data": "text"},
    ],
)
def test_encode_data_rejects(kwargs: dict) -> None:
    args = {
        "hops_to_live": 30,
        "from_node": 1,
        "to_node": 2,
        "from_service": "a",
        "to_service": "b",
        "data": b"",
    }
    args.update(kwargs)
    with pytest.raises(MessageError):
        encode_data(**args)


@pytest.mark.parametrize("n", [0, 1, 20, 35])
def test_decode_data_too_short(n: int) -> None:
    with pytest.raises(MessageError):
        decode_data(bytes(n))
    with pytest.raises(MessageError):
        peek_to_node(bytes(n))


def test_decode_data_wrong_type() -> None:
    with pytest.raises(MessageError):
        decode_data(b"\x01" + bytes(40))


def test_decode_data_invalid_utf8_service() -> None:
    msg = bytearray(encode_data(1, 1, 2, "a", "b", b""))
    msg[20:22] = b"\xff\xfe"
    with pytest.raises(MessageError):
        decode_data(bytes(msg))
    with pytest.raises(MessageError):
        decode_message(bytes(msg))


def test_peek_and_decrement() -> None:
    msg = encode_data(30, FROM_HASH, TO_HASH, "a", "b", b"data")
    assert peek_to_node(msg) == TO_HASH
    fwd = decrement_hops(msg)
    assert fwd[1] == 29
    assert fwd[:1] + fwd[2:] == msg[:1] + msg[2:]
    assert decode_data(fwd).hops_to_live == 29
    with pytest.raises(MessageError):
        decrement_hops(encode_data(0, 1, 2, "a", "b", b""))


# --------------------------------------------------------------------------------------------
# routing updates


def _update(**kw: object) -> RoutingUpdate:
    base = dict(
        node_id="foo",
        update_id="abcd1234",
        update_epoch=29018724829128123,
        update_sequence=7,
        connections={"bar": 1.0, "baz": 1.5},
        forwarding_node="foo",
    )
    base.update(kw)
    return RoutingUpdate(**base)  # type: ignore[arg-type]


def test_routing_update_exact_json() -> None:
    assert encode_routing_update(_update()) == (
        b'\x01{"NodeID":"foo","UpdateID":"abcd1234","UpdateEpoch":29018724829128123,'
        b'"UpdateSequence":7,"Connections":{"bar":1,"baz":1.5},"ForwardingNode":"foo",'
        b'"SuspectedDuplicate":0}'
    )


def test_routing_update_extension_and_sorted_keys() -> None:
    u = _update(connections={"zeta": 2.0, "alpha": 0.25}, suspected_duplicate=5, max_datagram=1200)
    assert encode_routing_update(u) == (
        b'\x01{"NodeID":"foo","UpdateID":"abcd1234","UpdateEpoch":29018724829128123,'
        b'"UpdateSequence":7,"Connections":{"alpha":0.25,"zeta":2},"ForwardingNode":"foo",'
        b'"SuspectedDuplicate":5,"MeshMaxDatagram":1200}'
    )
    assert decode_routing_update(encode_routing_update(u)[1:]) == u


def test_routing_update_round_trip_big_numbers() -> None:
    u = _update(update_epoch=2**64 - 1, update_sequence=2**63, suspected_duplicate=2**63)
    assert decode_routing_update(encode_routing_update(u)[1:]) == u
    kind, value = decode_message(encode_routing_update(u))
    assert kind == MSG_ROUTING_UPDATE and value == u


def test_routing_update_go_decoding_rules() -> None:
    body = (
        b'{"nodeid":"n1","UPDATEID":"x","updateEpoch":3,"Connections":null,'
        b'"Extra":[1,{"a":2}],"forwardingnode":"n2"}'
    )
    u = decode_routing_update(body)
    assert u == RoutingUpdate("n1", "x", 3, 0, {}, "n2", 0, None)
    assert decode_routing_update(b"{}") == RoutingUpdate("", "", 0, 0, {}, "", 0, None)
    # Exact match wins over later case-folded keys only by order: last occurrence wins, as in Go.
    assert decode_routing_update(b'{"NodeID":"a","nodeid":"b"}').node_id == "b"
    # Integral JSON numbers decode to float costs.
    assert decode_routing_update(b'{"Connections":{"a":1,"b":2.5e0}}').connections == {
        "a": 1.0,
        "b": 2.5,
    }


def test_routing_update_lone_surrogate_becomes_replacement_char() -> None:
    assert decode_routing_update(b'{"NodeID":"a\\ud800"}').node_id == "a\ufffd"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"NodeID":"a"} x',
        b"[]",
        b"null",
        b'"str"',
        b"42",
        b'{"NodeID":5}',
        b'{"UpdateEpoch":-1}',
        b'{"UpdateEpoch":1.5}',
        b'{"UpdateEpoch":1e3}',
        b'{"UpdateEpoch":"7"}',
        b'{"UpdateEpoch":true}',
        b'{"UpdateEpoch":18446744073709551616}',
        b'{"UpdateEpoch":' + b"9" * 5000 + b"}",
        b'{"Connections":[]}',
        b'{"Connections":{"a":"1"}}',
        b'{"Connections":{"a":NaN}}',
        b'{"Connections":{"a":Infinity}}',
        b'{"Connections":{"a":1e400}}',
        b'{"Connections":{"a":' + b"9" * 400 + b"}}",
        b'{"Connections":{"a":true}}',
        b'{"SuspectedDuplicate":{}}',
        b'{"MeshMaxDatagram":-5}',
        b'{"NodeID":"\xff"}',
        b"\xef\xbb\xbf{}",
        b"[" * 100000,
        b'{"NodeID":"a\x01"}',
    ],
)
def test_routing_update_malformed(body: bytes) -> None:
    with pytest.raises(MessageError):
        decode_routing_update(body)
    with pytest.raises(MessageError):
        decode_message(b"\x01" + body)


def test_routing_update_epoch_2_pow_63_is_valid_uint64() -> None:
    assert decode_routing_update(b'{"UpdateEpoch":9223372036854775808}').update_epoch == 2**63


@pytest.mark.parametrize(
    "kw",
    [
        {"connections": {"a": float("nan")}},
        {"connections": {"a": float("inf")}},
        {"connections": {"a": "1"}},
        {"connections": {1: 1.0}},
        {"update_epoch": -1},
        {"update_epoch": 2**64},
        {"node_id": None},
        {"max_datagram": -1},
        {"connections": {"a": 10**400}},
    ],
)
def test_encode_routing_update_rejects(kw: dict) -> None:
    with pytest.raises(MessageError):
        encode_routing_update(_update(**kw))


def test_go_string_escaping() -> None:
    u = _update(node_id='a<b>&"\\\n\u2028é\x01', connections={})
    body = encode_routing_update(u)[1:].decode()
    assert body.startswith('{"NodeID":"a\\u003cb\\u003e\\u0026\\"\\\\\\n\\u2028é\\u0001",')
    assert decode_routing_update(body.encode()).node_id == u.node_id


@pytest.mark.parametrize(
    "value, text",
    [
        (1.0, "1"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (2, "2"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.25e-10, "1.25e-10"),
        (-2.5, "-2.5"),
        (0.0, "0"),
        (0.30000000000000004, "0.30000000000000004"),
    ],
)
def test_format_go_float(value: float, text: str) -> None:
    assert format_go_float(value) == text
    assert float(text) == value


# --------------------------------------------------------------------------------------------
# Go time


def _ns(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000_000


def test_parse_go_time_with_offset() -> None:
    base = _ns(datetime(2024, 10, 24, 20, 36, 52, tzinfo=timezone.utc))
    assert parse_go_time("2024-10-24T16:36:52.123456789-04:00") == base + 123456789
    assert parse_go_time("2024-10-24T20:36:52Z") == base
    assert parse_go_time("2024-10-25T02:06:52.1+05:30") == base + 100_000_000
    # Go truncates fraction digits beyond nanoseconds.
    assert parse_go_time("2024-10-24T20:36:52.1234567899Z") == base + 123456789


def test_format_go_time() -> None:
    base = _ns(datetime(2024, 10, 24, 20, 36, 52, tzinfo=timezone.utc))
    assert format_go_time(base) == "2024-10-24T20:36:52Z"
    assert format_go_time(base + 100_000_000) == "2024-10-24T20:36:52.1Z"
    assert format_go_time(base + 123456789) == "2024-10-24T20:36:52.123456789Z"
    assert format_go_time(base + 120) == "2024-10-24T20:36:52.00000012Z"
    assert format_go_time(0) == "1970-01-01T00:00:00Z"
    assert format_go_time(-1) == "1969-12-31T23:59:59.999999999Z"
    assert format_go_time(GO_ZERO_TIME_NS) == "0001-01-01T00:00:00Z"
    assert format_go_time(parse_go_time("2000-02-29T23:59:59.5Z")) == "2000-02-29T23:59:59.5Z"
    assert format_go_time(parse_go_time("0000-01-01T00:00:00Z")) == "0000-01-01T00:00:00Z"
    with pytest.raises(MessageError):
        format_go_time(parse_go_time("9999-12-31T23:59:59Z") + 1_000_000_000)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-10-24",
        "2024-10-24 20:36:52Z",
        "2024-10-24t20:36:52Z",
        "2024-10-24T20:36:52z",
        "2024-10-24T20:36:52",
        "2024-10-24T20:36:52.Z",
        "2024-10-24T20:36:60Z",
        "2024-13-24T20:36:52Z",
        "2023-02-29T20:36:52Z",
        "2024-10-24T24:00:00Z",
        "2024-10-24T20:36:52+24:00",
        "2024-10-24T20:36:52+0400",
        "2024-10-24T2:36:52Z",
        "２０２４-10-24T20:36:52Z",
    ],
)
def test_parse_go_time_rejects(text: str) -> None:
    with pytest.raises(MessageError):
        parse_go_time(text)


# --------------------------------------------------------------------------------------------
# service advertisements


def _ad(**kw: object) -> ServiceAdvertisement:
    base = dict(
        node_id="foo",
        service="control",
        time_ns=parse_go_time("2024-10-24T20:36:52.1Z"),
        conn_type=1,
        tags={"type": "Control Service"},
        work_commands=[WorkCommand("echo", False), WorkCommand("signed", True)],
    )
    base.update(kw)
    return ServiceAdvertisement(**base)  # type: ignore[arg-type]


def test_service_ad_exact_json() -> None:
    assert encode_service_advertisement(_ad()) == (
        b'\x02{"NodeID":"foo","Service":"control","Time":"2024-10-24T20:36:52.1Z","ConnType":1,'
        b'"Tags":{"type":"Control Service"},"WorkCommands":[{"WorkType":"echo","Secure":false},'
        b'{"WorkType":"signed","Secure":true}],"Cancel":false}'
    )
    cancel = _ad(tags=None, work_commands=None, cancel=True)
    assert encode_service_advertisement(cancel) == (
        b'\x02{"NodeID":"foo","Service":"control","Time":"2024-10-24T20:36:52.1Z","ConnType":1,'
        b'"Tags":null,"WorkCommands":null,"Cancel":true}'
    )
    assert b'"WorkCommands":[]' in encode_service_advertisement(_ad(work_commands=[]))


def test_service_ad_round_trip() -> None:
    for ad in (_ad(), _ad(tags=None, work_commands=None, cancel=True), _ad(tags={}, conn_type=0)):
        kind, value = decode_message(encode_service_advertisement(ad))
        assert kind == MSG_SERVICE_ADVERTISEMENT and value == ad


def test_service_ad_from_go() -> None:
    body = (
        b'{"NodeID":"node1","Service":"control","Time":"2024-10-24T16:36:52.123456789-04:00",'
        b'"ConnType":1,"Tags":{"type":"Control Service"},'
        b'"WorkCommands":[{"WorkType":"echo","Secure":false},null],"Cancel":false}'
    )
    ad = decode_service_advertisement(body)
    assert ad.time_ns == parse_go_time("2024-10-24T20:36:52.123456789Z")
    assert ad.work_commands == [WorkCommand("echo", False), WorkCommand("", False)]
    # Missing keys take zero values; Go's zero time.
    assert decode_service_advertisement(b"{}") == ServiceAdvertisement(
        "", "", GO_ZERO_TIME_NS, 0, None, None, False
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"Time":5}',
        b'{"Time":"yesterday"}',
        b'{"ConnType":256}',
        b'{"ConnType":-1}',
        b'{"Tags":{"a":1}}',
        b'{"Tags":[]}',
        b'{"WorkCommands":{}}',
        b'{"WorkCommands":[1]}',
        b'{"WorkCommands":[{"Secure":"yes"}]}',
        b'{"Cancel":1}',
        b"[1,2]",
        b"\xc3\x28",
    ],
)
def test_service_ad_malformed(body: bytes) -> None:
    with pytest.raises(MessageError):
        decode_service_advertisement(body)


def test_ad_to_status_dict() -> None:
    d = ad_to_status_dict(_ad())
    assert list(d) == ["NodeID", "Service", "Time", "ConnType", "Tags", "WorkCommands"]
    assert d["Time"] == "2024-10-24T20:36:52.1Z"
    assert d["WorkCommands"] == [
        {"WorkType": "echo", "Secure": False},
        {"WorkType": "signed", "Secure": True},
    ]
    assert json.dumps(ad_to_status_dict(_ad(tags=None, work_commands=None)))


# --------------------------------------------------------------------------------------------
# unreachable, reject, dispatch


def test_unreachable_round_trip() -> None:
    u = Unreachable("a", "b", "svc", "other", "service unknown")
    assert encode_unreachable(u) == (
        b'{"FromNode":"a","ToNode":"b","FromService":"svc","ToService":"other",'
        b'"Problem":"service unknown"}'
    )
    assert decode_unreachable(encode_unreachable(u)) == u
    assert decode_unreachable(b'{"problem":"message expired"}') == Unreachable(
        "", "", "", "", "message expired"
    )
    with pytest.raises(MessageError):
        decode_unreachable(b'{"Problem":1}')
    with pytest.raises(MessageError):
        decode_unreachable(b"")


def test_decode_message_dispatch() -> None:
    with pytest.raises(MessageError):
        decode_message(b"")
    assert decode_message(REJECT_MESSAGE) == (MSG_REJECT, None)
    assert decode_message(b"\x09hello") == (9, b"hello")
    data = encode_data(3, 1, 2, "a", "b", b"x")
    assert decode_message(data) == (MSG_DATA, DataMessage(3, 1, 2, "a", "b", b"x"))


# --------------------------------------------------------------------------------------------
# properties


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_decode_message_never_raises_other_errors(raw: bytes) -> None:
    for msg in (raw, b"\x00" + raw, b"\x01" + raw, b"\x02" + raw):
        try:
            decode_message(msg)
        except MessageError:
            pass
    try:
        decode_unreachable(raw)
    except MessageError:
        pass


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["NodeID", "nodeid", "UpdateEpoch", "Connections", "Time", "Tags", "WorkCommands",
             "ConnType", "Cancel", "MeshMaxDatagram", "Problem", "x"]
        ),
        _json_values,
    )
)
def test_decode_json_shapes_never_raise_other_errors(obj: dict) -> None:
    body = json.dumps(obj).encode()
    for decode in (decode_routing_update, decode_service_advertisement, decode_unreachable):
        try:
            decode(body)
        except MessageError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=6), st.floats(allow_nan=False, allow_infinity=False)),
    st.integers(0, 2**64 - 1),
    st.text(max_size=10),
)
def test_routing_update_round_trip_property(conns: dict, epoch: int, node: str) -> None:
    u = _update(node_id=node, connections=conns, update_epoch=epoch)
    assert decode_routing_update(encode_routing_update(u)[1:]) == u
