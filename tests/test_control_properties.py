"""Property tests for the control line protocol (mesh.control.protocol), and a real node
fed seeded garbage over its control socket.

Whatever a client sends, ``parse_line`` returns a Request, None (blank line) or raises
CommandError; replies are always one UTF-8 line a client can read back; the node answers
every bad line with ``ERROR: ...`` and keeps serving.
"""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.control.protocol import (GREETING_PATTERN, CommandError, Request, encode_error,
                                   encode_reply, greeting, parse_line)
from mesh.testing import Mesh

from json_strategies import PROPS, json_values

JSON_VALUES = json_values(st.text(max_size=20), keys=st.text(max_size=8), max_leaves=12)
#: Characters that make JSON-looking garbage (brackets, quotes, escapes, literals).
JSON_NOISE = st.text(alphabet=st.sampled_from(list('{}[]":,\\ u0123456789abcdefnrtlsNaIy-+.eE\t'
                                                   "\x00\x7f\xe9\u2028\ud7ff\U0001f600")),
                     max_size=60)


def parse_or_error(raw: bytes) -> Request | CommandError | None:
    """parse_line's result, or the CommandError it raised (any other exception fails)."""
    try:
        return parse_line(raw)
    except CommandError as exc:
        assert str(exc), "a CommandError must say what is wrong"
        return exc


def check_request(raw: bytes, result: Request | CommandError | None) -> None:
    if result is None:
        assert not raw.replace(b"\r", b"").strip()
        return
    if isinstance(result, CommandError):
        return
    assert isinstance(result.command, str)
    if result.is_json:
        assert isinstance(result.params, dict) and result.params["command"] == result.command
        assert result.args == ""
    else:
        assert result.params == {}
        assert result.command == result.command.lower()
        assert all(isinstance(w, str) for w in result.words())
    # whatever was parsed can be echoed back in an error reply
    assert encode_error(f"bad {result.command} {result.args}").endswith(b"\n")


# -- any input gives a Request or a typed error -----------------------------------------

@PROPS
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_raise_command_error(raw: bytes) -> None:
    check_request(raw, parse_or_error(raw))


@PROPS
@given(JSON_NOISE)
def test_json_looking_garbage_parses_or_raises_command_error(noise: str) -> None:
    raw = ("{" + noise).encode("utf-8", "surrogatepass")
    check_request(raw, parse_or_error(raw))


@PROPS
@given(JSON_VALUES, st.booleans())
def test_any_json_document_parses_or_raises_command_error(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    check_request(raw, parse_or_error(raw))


@PROPS
@given(JSON_VALUES)
def test_non_string_command_is_a_command_error(command: Any) -> None:
    if isinstance(command, str):
        return
    with pytest.raises(CommandError, match="command"):
        parse_line(json.dumps({"command": command}).encode())


@pytest.mark.parametrize("raw", [
    b'{"command":"status","a":' + b"[" * 100_000,              # nesting past the recursion limit
    b'{"command":"status","a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"command":"status","n":' + b"1" * 5000 + b"}",          # past int's digit limit
    b'{"command":"status","n":NaN}',                            # not JSON (Go refuses too)
    b'{"command":"status","n":-Infinity}',
    b'{"command":"\\ud800"}',                                   # lone surrogate escape
    b'{"command":"work","subcommand":"status","unitid":"a\\udfffb"}',
    b'{"command":"status"}\x00',
    b'{"command":"status"} {"command":"status"}',
    b"\xef\xbb\xbf{\"command\":\"status\"}",                    # UTF-8 BOM
    b"\xc0\x80status",                                          # overlong NUL
    b"work status \xed\xa0\x80",                                # encoded surrogate
])
def test_hostile_lines_are_command_errors(raw: bytes) -> None:
    result = parse_or_error(raw)
    check_request(raw, result)
    assert isinstance(result, CommandError) or (
        isinstance(result, Request) and not result.is_json), result


# -- round trips --------------------------------------------------------------------------

@PROPS
@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6), st.text(max_size=12),
       st.sampled_from([(", ", ": "), (",", ":")]), st.booleans())
def test_json_request_round_trips(params: dict[str, Any], command: str,
                                  separators: tuple[str, str], ascii_only: bool) -> None:
    """receptorctl's json.dumps lines (spaces, \\u escapes) parse back to the same params."""
    obj = {**params, "command": command}
    raw = json.dumps(obj, separators=separators, ensure_ascii=ascii_only).encode()
    request = parse_line(raw)
    assert request is not None and request.is_json
    assert request.command == command
    assert request.params == obj


@PROPS
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=30), max_size=6))
def test_json_string_params_round_trip(params: dict[str, str]) -> None:
    """Arbitrary string params, including astral characters sent as surrogate pairs."""
    obj = {"command": "work", "subcommand": "submit", **params}
    request = parse_line(json.dumps(obj).encode())
    assert request is not None and request.params == obj
    assert all(isinstance(v, str) for v in request.params.values())


WORD = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]),
               min_size=1, max_size=12)


@PROPS
@given(WORD.filter(lambda w: not w.startswith("{")),
       st.lists(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"],
                                               blacklist_characters=" "), max_size=8),
                max_size=5),
       st.booleans())
def test_text_commands_split_like_receptor(command: str, args: list[str], crlf: bool) -> None:
    """First word lower-cased; the rest split on single spaces, empty words kept (Go's
    strings.Split), a trailing \\r dropped."""
    line = " ".join([command, *args])
    raw = line.encode() + (b"\r" if crlf else b"")
    request = parse_line(raw)
    assert request is not None and not request.is_json
    assert request.command == command.lower()
    assert request.args == " ".join(args)
    assert request.words() == (args if args and request.args else [])


# -- replies --------------------------------------------------------------------------------

SURROGATE_TEXT = st.text(alphabet=st.characters(), max_size=30)  # may hold lone surrogates
REPLY_VALUES = json_values(SURROGATE_TEXT, keys=SURROGATE_TEXT, max_leaves=12)


@PROPS
@given(REPLY_VALUES)
def test_replies_are_one_utf8_json_line(value: Any) -> None:
    """Even strings read from a corrupt status file (lone surrogates) give a valid line."""
    line = encode_reply(value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode("utf-8")
    assert json.loads(text) == value


@PROPS
@given(SURROGATE_TEXT)
def test_errors_are_one_utf8_line_receptorctl_can_read(message: str) -> None:
    line = encode_error(message)
    assert line.startswith(b"ERROR: ") and line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode("utf-8")  # never raises
    assert not any(c in text[:-1] for c in "\r\n")
    if not any("\ud800" <= c <= "\udfff" for c in message):
        assert text[7:-1] == " ".join(message.splitlines())


@PROPS
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]),
               min_size=1, max_size=40))
def test_greeting_matches_the_client_pattern(node_id: str) -> None:
    line = greeting(node_id)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    match = GREETING_PATTERN.fullmatch(line.decode().strip())
    assert match is not None and match.group(1) == node_id


# -- a real node under garbage --------------------------------------------------------------

#: Unit directories placed in the node's datadir before it starts (ID → status file bytes;
#: None makes ``status`` a directory).
PLANTED: dict[str, bytes | None] = {
    "corrupt1": b"\xff\x00garbage",
    "corrupt2": b'{"State": 99, "Detail": "x"}',
    "corrupt3": b"[" * 100_000,
    "corrupt4": b"",
    "corrupt5": None,
    "corrupt6": b'{"State": 1, "StdoutSize": "12"}',
    "valid001": b'{"State":2,"Detail":"exit status 0","StdoutSize":3,"WorkType":"cat",'
                b'"ExtraData":null}\n',
    "surrog01": b'{"State":3,"Detail":"bad \\ud800 text","StdoutSize":0,"WorkType":"cat",'
                b'"ExtraData":{"k\\udfff":"v"}}\n',
}
#: Units only read by the garbage (never cancelled or released).
READ_ONLY_IDS = list(PLANTED)
HOSTILE_IDS = ["", "..", "../x", "../../etc/passwd", "a/b", "/", "x\x00y", "x" * 65,
               "x" * 5000, "nosuch12", "NOSUCH12", "ab.cd", "~", "*", "-1", "0", "ａｂ",
               "\u2028", "a\tb", "'; rm -rf /", "%s%n", "${HOME}"]
HOSTILE_JSON_IDS: list[Any] = [*HOSTILE_IDS, None, 0, -1, 1.5, True, [], ["x"], {}, {"a": 1},
                               "\ud800", "x" * 100_000]
BAD_TTLS = ["soon", "5", "-", "1e3s", "1h-", "1.2.3s", "9" * 30 + "h", "h", "1x", " 1h"]
GARBAGE_LINES = 200
SEED = 20240611


def _token(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        return "".join(rng.choice("abcXYZ019./\\-_{}[]\":,\x00\x1c\t\x7f\u00e9\u2028\U0001f600")
                       for _ in range(rng.randrange(1, 12)))
    if kind == 1:
        return rng.choice(HOSTILE_IDS) or "x"
    if kind == 2:
        return str(rng.randrange(-10 ** 6, 10 ** 20))
    return rng.choice(["list", "status", "results", "cancel", "release", "force-release",
                       "submit", "localhost", "cat", "solo", "0", "-5", "params", "ttl"])


def _garbage_submit(rng: random.Random) -> dict[str, Any]:
    """A submit object that must be refused (so no unit is ever created)."""
    obj: dict[str, Any] = {"command": "work", "subcommand": "submit"}
    for _ in range(rng.randrange(4)):
        obj[rng.choice(["params", "x", "secret_", "tlsclient", "Params"])] = _token(rng)
    mode = rng.randrange(8)
    if mode == 0:    # a non-string value somewhere
        obj.update(node="localhost", worktype="cat")
        obj[rng.choice(["node", "worktype", "params", "ttl", "signwork", "x", "tlsclient"])] = \
            rng.choice([None, 5, 1.5, True, [], ["a"], {"a": "b"}])
    elif mode == 1:  # no node or no work type
        obj.pop("node", None)
        obj[rng.choice(["node", "worktype"])] = rng.choice(["", "localhost", "cat"])
    elif mode == 2:  # a work type this node does not have
        obj.update(node=rng.choice(["localhost", "solo", "SOLO"]),
                   worktype="nosuch-" + _token(rng))
    elif mode == 3:  # runtime params the work type does not allow
        obj.update(node="localhost", worktype="cat", params=_token(rng) + "x")
    elif mode == 4:  # a ttl that is no duration
        obj.update(node=_token(rng) + "peer", worktype="cat", ttl=rng.choice(BAD_TTLS))
    elif mode == 5:  # ttl and signwork are for remote work only
        obj.update(node="localhost", worktype="cat",
                   **rng.choice([{"ttl": "1h"}, {"signwork": "true"}, {"signwork": "TRUE"}]))
    elif mode == 6:  # signwork without a signing key
        obj.update(node="peer" + _token(rng), worktype="cat", signwork="true")
    else:            # secrets over a non-TLS connection
        obj.update(node="peer" + _token(rng), worktype="cat", secret_pw="x")
        obj.pop("tlsclient", None)
    return obj


def _garbage_json(rng: random.Random) -> dict[str, Any]:
    command = rng.choice(["status", "work", "work", "work", "Work", "stats", "nosuch", ""])
    obj: dict[str, Any] = {"command": command}
    if command == "work":
        sub = rng.choice(["list", "status", "results", "cancel", "release", "force-release",
                          "LIST", "", "bogus", None, 5, ["list"]])
        obj["subcommand"] = sub
        destructive = sub in ("cancel", "release", "force-release")
        ids = HOSTILE_JSON_IDS if destructive else HOSTILE_JSON_IDS + READ_ONLY_IDS
        if rng.random() < 0.9:
            obj["unitid"] = rng.choice(ids)
        if rng.random() < 0.5:
            obj["startpos"] = rng.choice([0, -1, 10 ** 30, 1.5, "0", "x", None, [], "9" * 5000])
        if rng.random() < 0.3:
            obj["signature"] = rng.choice(["", "x", 5, None, "a.b.c"])
    elif command == "status" and rng.random() < 0.7:
        obj["requested_fields"] = rng.choice([5, None, "Version", ["Version", 5], [["x"]],
                                              ["NodeID"], [], {"a": 1}])
    for _ in range(rng.randrange(3)):
        obj[_token(rng)] = rng.choice([_token(rng), 5, None, [1, {"a": []}]])
    return obj


def garbage_lines(rng: random.Random, count: int) -> list[bytes]:
    """Request lines that each deserve an ERROR or a harmless reply (never a new unit)."""
    lines: list[bytes] = []
    while len(lines) < count:
        kind = rng.randrange(10)
        if kind == 0:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
        elif kind == 1:
            words = [rng.choice(["status", "STATUS", "stats", "nosuch", "{", "work"])]
            raw = " ".join(words + [_token(rng) for _ in range(rng.randrange(1, 5))]).encode()
        elif kind in (2, 3):
            sub = rng.choice(["list", "status", "results", "cancel", "release", "force-release",
                              "bogus", "LIST", "Status", ""])
            destructive = sub.lower() in ("cancel", "release", "force-release")
            ids = HOSTILE_IDS if destructive else HOSTILE_IDS + READ_ONLY_IDS
            words = ["work", sub, rng.choice(ids)]
            words += [_token(rng) for _ in range(rng.randrange(3))]
            raw = rng.choice([" ", "  "]).join(words).encode()
        elif kind == 4:
            words = rng.choice([[], [_token(rng)], ["localhost", "nosuch-" + _token(rng)],
                                ["localhost", "cat", _token(rng) + "x"],
                                ["solo", "cat", "a", "b"]])
            raw = " ".join(["work", "submit", *words]).encode()
        elif kind in (5, 6):
            raw = json.dumps(_garbage_json(rng), ensure_ascii=rng.random() < 0.5).encode(
                "utf-8", "surrogatepass")
        elif kind == 7:
            raw = json.dumps(_garbage_submit(rng)).encode()
        elif kind == 8:
            text = json.dumps(rng.choice([_garbage_json, _garbage_submit])(rng))
            cut = rng.randrange(len(text))
            raw = rng.choice([text[:cut], text[:cut] + "\x01" + text[cut:],
                              text.replace(",", ",,", 1), text + " x",
                              text.replace('"', "'")]).encode()
        else:
            raw = rng.choice([
                b'{"command":"status","a":' + b"[" * 50_000,
                b'{"command":"status","n":' + b"7" * 5000 + b"}",
                b'{"command":"status","n":NaN}',
                b'{"command":"\\ud800"}',
                b'{"command":"work","subcommand":"status","unitid":"\\udc00"}',
                b"x" * 200_000,
                b"work status " + b"a" * 100_000,
                b"\xef\xbb\xbfstatus",
                b"status\r\r",
                b"\x00\x00\x00",
                b"work\tlist",
                b"work results valid001 " + b"9" * 5000,
            ])
        raw = raw.replace(b"\n", b" ")
        if raw.replace(b"\r", b"").strip():  # a blank line gets no reply at all
            lines.append(raw)
    return lines


def _tree(root: Path) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root)
            for d, dirs, files in os.walk(root) for n in dirs + files
            if not n.startswith(".status.")}


class RawSession:
    """A control connection that returns reply lines as they are (no parsing)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(20)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        assert GREETING_PATTERN.fullmatch(self.file.readline().decode().strip())

    def send(self, raw: bytes) -> bytes:
        self.file.write(raw + b"\n")
        self.file.flush()
        return self.file.readline()

    def drain(self) -> bytes:
        return self.file.read()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _plant(units_root: Path, unit_id: str, status: bytes | None) -> None:
    unit = units_root / unit_id
    unit.mkdir(parents=True, exist_ok=True)
    if status is None:
        (unit / "status").mkdir()
    else:
        (unit / "status").write_bytes(status)


def _check_reply(raw: bytes, reply: bytes) -> None:
    where = f"request {raw[:120]!r} got {reply[:300]!r}"
    assert reply.endswith(b"\n"), where          # an answer, not a dropped session
    text = reply.decode("utf-8")                   # always valid UTF-8
    assert not text.startswith("Work unit created"), where
    if text.startswith("ERROR: "):
        assert not text.startswith("ERROR: internal error"), where
        assert len(text.strip()) > len("ERROR:"), where
    elif not text.startswith("Streaming results for work unit "):
        json.loads(text)


def test_node_keeps_serving_through_garbage_and_corrupt_units(mesh: Mesh) -> None:
    node = mesh.add("solo", listen=False, sections=[
        {"work-command": {"worktype": "cat", "command": "cat"}}])
    units_root = node.datadir / "solo"
    for unit_id, status in PLANTED.items():
        _plant(units_root, unit_id, status)
    (units_root / "valid001" / "stdout").write_bytes(b"hi\n")
    mesh.start()

    listed = node.control("work list")
    assert set(listed) == set(PLANTED)
    for unit_id in PLANTED:
        if unit_id.startswith("corrupt"):   # listed as a failed unit that says why
            assert listed[unit_id]["State"] == 3, listed[unit_id]
            assert unit_id in listed[unit_id]["Detail"], listed[unit_id]
    assert listed["valid001"]["StateName"] == "Succeeded"
    assert listed["surrog01"]["Detail"] == "bad \ud800 text"  # escaped, still valid JSON
    files_before = _tree(node.datadir)

    session = RawSession(node.socket)
    try:
        for raw in garbage_lines(random.Random(SEED), GARBAGE_LINES):
            reply = session.send(raw)
            _check_reply(raw, reply)
            if reply.startswith(b"Streaming results"):   # a results stream ends the session
                session.drain()
                session.close()
                session = RawSession(node.socket)
    finally:
        session.close()

    assert node.alive
    assert node.status()["NodeID"] == "solo"
    assert node.control("work list") == listed
    assert _tree(node.datadir) == files_before  # nothing created, nothing removed

    # every unit command on a corrupt unit is a clear error, and the session goes on
    session = RawSession(node.socket)
    try:
        for unit_id in (u for u in PLANTED if u.startswith("corrupt")):
            for line in (f"work status {unit_id}", f"work list {unit_id}",
                         f"work results {unit_id} 0", f"work cancel {unit_id}",
                         f"work release {unit_id}",
                         json.dumps({"command": "work", "subcommand": "status",
                                     "unitid": unit_id})):
                reply = session.send(line.encode())
                _check_reply(line.encode(), reply)
                assert reply.startswith(f"ERROR: unit {unit_id}: ".encode()), (line, reply)
        assert json.loads(session.send(b"work status surrog01"))["StateName"] == "Failed"
    finally:
        session.close()

    # units that turn corrupt while the node runs
    _plant(units_root, "late0001", b'{"State": 1, "Detail": ')
    good = (units_root / "valid001" / "status").read_bytes()
    (units_root / "valid001" / "status").write_bytes(b"\x00" * 10)
    try:
        listed_now = node.control("work list")
        assert listed_now["late0001"]["State"] == 3 and "late0001" in \
            listed_now["late0001"]["Detail"]
        assert "valid001" in listed_now["valid001"]["Detail"]
        with pytest.raises(RuntimeError, match="ERROR: unit valid001: status file is invalid"):
            node.control("work status valid001")
    finally:
        (units_root / "valid001" / "status").write_bytes(good)
    assert node.control("work status valid001")["StateName"] == "Succeeded"
    assert node.alive and node.status()["NodeID"] == "solo"


def test_cancel_and_release_of_malformed_remote_units_are_typed_errors(mesh: Mesh) -> None:
    node = mesh.add("solo", listen=False)
    units_root = node.datadir / "solo"
    _plant(units_root, "remote01", b'{"State":2,"WorkType":"remote","ExtraData":"not an object"}')
    _plant(units_root, "remote02", b'{"State":2,"WorkType":"remote",'
                                   b'"ExtraData":{"RemoteUnitID":"abc"}}')
    mesh.start()
    replies = {}
    session = RawSession(node.socket)
    try:
        for line in (b"work cancel remote01", b"work release remote01",
                     b"work cancel remote02", b"work release remote02",
                     b"work force-release remote02", b"work release ../x"):
            replies[line] = session.send(line)
    finally:
        session.close()
    assert node.alive
    for line, reply in replies.items():
        assert not reply.startswith(b"ERROR: internal error"), (line, reply)
    assert b"lacks RemoteNode" in replies[b"work cancel remote02"]
    assert b"lacks RemoteNode" in replies[b"work release remote02"]
    assert json.loads(replies[b"work force-release remote02"]) == {"released": "remote02"}
    assert replies[b"work release ../x"] == b"ERROR: unknown work unit ../x\n"
    assert node.control("work list") == {}


def test_force_release_removes_a_unit_whose_status_is_damaged(mesh: Mesh) -> None:
    node = mesh.add("solo", listen=False)
    units_root = node.datadir / "solo"
    _plant(units_root, "broken01", b'{"State": "nonsense"')
    mesh.start()
    with pytest.raises(RuntimeError, match="ERROR: unit broken01: status file is invalid"):
        node.control("work release broken01")
    assert node.control("work force-release broken01") == {"released": "broken01"}
    assert not (units_root / "broken01").exists()
