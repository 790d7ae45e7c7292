"""Control line protocol parsing and reply encoding."""

import pytest

from mesh.control.protocol import (CommandError, encode_error, encode_reply, go_number,
                                   greeting, parse_line)
from mesh.control.status_format import format_status


def test_greeting():
    assert greeting("foo") == b"Receptor Control, node foo\n"


def test_text_form_lowercases_command_and_keeps_args_verbatim():
    req = parse_line(b"WORK list  abc\r")
    assert (req.command, req.args, req.is_json) == ("work", "list  abc", False)
    assert parse_line(b"connect node2 control ").words() == ["node2", "control", ""]


def test_json_form_is_case_sensitive():
    req = parse_line(b'{"command": "Status", "requested_fields": ["Version"]}')
    assert req.command == "Status" and req.is_json
    assert req.params["requested_fields"] == ["Version"]


@pytest.mark.parametrize("line", [b'{"command": 5}', b"{not json", b'{"command": "x"', b'{"a": 1} x', b"\xff\xfe"])
def test_bad_lines_are_command_errors(line):
    with pytest.raises(CommandError):
        parse_line(line)


def test_blank_lines_are_skipped():
    assert parse_line(b"   ") is None
    assert parse_line(b"\r") is None


def test_replies():
    assert encode_reply({"b": 1, "a": [1.5]}) == b'{"a":[1.5],"b":1}\n'
    assert encode_error("bad\nthing") == b"ERROR: bad thing\n"
    assert go_number(1.0) == 1 and isinstance(go_number(1.0), int)
    assert go_number(1.5) == 1.5


def test_status_format_matches_receptorctl_layout():
    text = format_status({
        "NodeID": "controller01", "Version": "x", "SystemCPUCount": 2, "SystemMemoryMiB": 10,
        "Connections": [{"NodeID": "relayer01", "Cost": 1}],
        "KnownConnectionCosts": {"controller01": {"relayer01": 1}},
        "RoutingTable": {"relayer01": "relayer01"},
        "Advertisements": [{"NodeID": "controller01", "Service": "control",
                            "Time": "2024-10-24T16:36:52.123456789-04:00", "ConnType": 1,
                            "Tags": {"type": "Control Service"},
                            "WorkCommands": [{"WorkType": "echo", "Secure": False}]}]})
    assert "Connection   Cost\nrelayer01    1" in text
    assert "Known Node   Known Connections\ncontroller01 relayer01: 1" in text
    assert "Route        Via\nrelayer01    relayer01" in text
    assert "controller01 control   Stream     2024-10-24 16:36:52" in text
    assert "Node         Work Types\ncontroller01 echo" in text
