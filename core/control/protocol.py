"""Receptor's control line protocol: parsing request lines and formatting replies."""

from __future__ import annotations

import json
import re

from mesh import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any


class CommandError(Exception):
    """A command failed; the client sees ``ERROR: <message>`` and the session continues."""


class Request:
    """One parsed request line.

    ``params`` holds the JSON object for the JSON form (``{}`` for the text form); ``args`` is
    the verbatim remainder after the command word for the text form (``""`` for JSON).
    (A plain class, not a dataclass: the early control responder parses requests before the
    node has imported dataclasses.)
    """

    __slots__ = ("command", "params", "args", "is_json")

    def __init__(self, command: str, params: dict[str, Any] | None = None, args: str = "",
                 is_json: bool = False) -> None:
        self.command = command
        self.params: dict[str, Any] = {} if params is None else params
        self.args = args
        self.is_json = is_json

    def _key(self) -> tuple[Any, ...]:
        return (self.command, self.params, self.args, self.is_json)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and self._key() == other._key()

    def __repr__(self) -> str:
        return (f"Request(command={self.command!r}, params={self.params!r}, "
                f"args={self.args!r}, is_json={self.is_json!r})")

    def words(self) -> list[str]:
        """The text-form arguments split on single spaces, as Go's ``strings.Split`` does."""
        return self.args.split(" ") if self.args else []


#: What clients match a greeting line against (receptorctl uses the same pattern).
GREETING_PATTERN = re.compile(r"Receptor Control, node (.+)")


def greeting(node_id: str) -> bytes:
    return f"Receptor Control, node {node_id}\n".encode()


def parse_line(raw: bytes) -> Request | None:
    """Parse a request line (without its newline).  Blank lines give ``None``.

    Raises :class:`CommandError` for undecodable or malformed lines, and for JSON that Go's
    decoder refuses or that cannot be echoed back (NaN, very deep nesting, lone surrogates).
    """
    line = raw.replace(b"\r", b"")
    if not line.strip():
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("request is not valid UTF-8") from None
    if text.startswith("{"):
        params = _load_json(text)
        if not isinstance(params, dict):
            raise CommandError("JSON request must be an object")
        command = params.get("command")
        if not isinstance(command, str):
            raise CommandError("JSON request needs a string \"command\" field")
        return Request(command, params, "", True)
    word, _, rest = text.partition(" ")
    return Request(word.lower(), {}, rest, False)


def _reject_constant(name: str) -> Any:
    raise CommandError(f"invalid JSON request: {name} is not a JSON value")


def _load_json(text: str) -> Any:
    """``json.loads`` as strict as Go's decoder, with every failure a CommandError."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise CommandError(f"invalid JSON request: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise CommandError("invalid JSON request: nested too deeply") from None
    except ValueError:  # the only other failure: an integer past Python's digit limit
        raise CommandError("invalid JSON request: a number has too many digits") from None
    if "\\u" in text and _has_lone_surrogate(value):
        # \ud800 decodes to a str that cannot be encoded again (error replies echo it)
        raise CommandError("invalid JSON request: unpaired UTF-16 surrogate escape")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def encode_reply(obj: Any) -> bytes:
    """Compact JSON with sorted keys, as Go marshals the control service's maps.

    Strings that are not valid Unicode (lone surrogates, e.g. from a corrupt status file)
    are sent as ``\\u`` escapes so the line is always valid UTF-8.
    """
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    try:
        return text.encode() + b"\n"
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def encode_error(message: str) -> bytes:
    """``ERROR: <message>`` on one line (line breaks become spaces), always valid UTF-8."""
    text = " ".join(str(message).splitlines())
    return ("ERROR: " + text).encode("utf-8", "backslashreplace") + b"\n"


def go_number(value: float) -> float | int:
    """Render integral floats as ints, as Go's encoding/json does (1.0 → 1)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    return value
