"""Property tests for ``work submit`` parameters (text and JSON forms).

The ``work`` command runs against a stub work manager that records what a work type would be
given and then refuses, so every request ends in a CommandError: the properties are about
which error, and about the params that reach the work type.
"""

from __future__ import annotations

import asyncio
import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.control.protocol import CommandError, Request, parse_line
from mesh.control.server import CommandContext
from mesh.work.control_commands import _submit_params, work_command
from mesh.work.params import CONTROL_KEYS, is_reserved_param, split_params
from mesh.work.worktype import WorkError

from json_strategies import PROPS, json_values

LIKELY_KEYS = ["command", "subcommand", "node", "worktype", "tlsclient", "ttl", "signwork",
               "signature", "params", "secret_token", "Secret_X", "unitid"]
KEYS = st.sampled_from(LIKELY_KEYS) | st.text(max_size=10)
STRING_VALUES = (st.sampled_from(["", "localhost", "stub", "remote1", "cat", "true", "TRUE",
                                  "false", "1h", "30s", "-5m", "0", "bogus", "x y"])
                 | st.text(max_size=16))
JSON_VALUES = json_values(STRING_VALUES, keys=st.text(max_size=5), max_leaves=6)
#: Mostly strings (so requests get past the type check), sometimes anything.
PARAM_VALUES = st.integers(0, 9).flatmap(lambda n: JSON_VALUES if n == 0 else STRING_VALUES)
#: A node and a work type (usually strings), then anything, possibly overriding them.
SUBMIT_OBJECTS = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"node": st.sampled_from(["localhost", "STUB", "remote1"])
                           | PARAM_VALUES,
                           "worktype": st.sampled_from(["cat", "echo"]) | PARAM_VALUES}),
    st.dictionaries(KEYS, PARAM_VALUES, max_size=6))
NAMED_KEY = re.compile(r"submit parameters must all be strings and (.*) is not", re.S)


class StubWork:
    """Stands in for the Workceptor: records each creation attempt, then refuses it."""

    def __init__(self) -> None:
        self.work_types: dict[str, Any] = {}
        self.created: list[tuple[str, str, dict[str, str]]] = []
        self.remote = SimpleNamespace(create=self._create_remote)

    def is_local(self, node: str) -> bool:
        return node.lower() in ("localhost", "stub")

    def create_local(self, work_type: str, params: dict[str, str]) -> str:
        self.created.append(("local", work_type, params))
        raise WorkError("stub: not creating units")

    def _create_remote(self, node: str, work_type: str, params: dict[str, str],
                       **options: Any) -> str:
        self.created.append((node, work_type, params))
        raise WorkError("stub: not creating units")


def run_work_command(request: Request) -> tuple[CommandError, StubWork]:
    """Run ``work`` on ``request``; it must raise CommandError and nothing else."""
    work = StubWork()
    node = SimpleNamespace(node_id="stub", work=work, signer=None, verifier=None,
                           netceptor=SimpleNamespace(advertisements=lambda: []))
    ctx = CommandContext(node, SimpleNamespace(kind="unix", peer="test"))
    with pytest.raises(CommandError) as info:
        asyncio.run(work_command(ctx, request))
    assert str(info.value)
    return info.value, work


def non_string_keys(obj: dict[str, Any]) -> set[str]:
    return {k for k, v in obj.items() if not isinstance(v, str) and k not in
            ("command", "subcommand")}


# -- the helpers ----------------------------------------------------------------------------

@PROPS
@given(SUBMIT_OBJECTS)
def test_json_params_are_strings_or_a_command_error_naming_the_key(obj: dict[str, Any]) -> None:
    obj = {**obj, "command": "work", "subcommand": "submit"}
    bad = non_string_keys(obj)
    try:
        params = _submit_params(Request("work", obj, "", True), [])
    except CommandError as exc:
        match = NAMED_KEY.fullmatch(str(exc))
        assert match is not None and match.group(1) in bad, str(exc)
        return
    assert not bad
    assert params == obj


@PROPS
@given(st.lists(st.text(max_size=8), max_size=6))
def test_text_params_are_node_worktype_and_joined_rest(words: list[str]) -> None:
    try:
        params = _submit_params(Request("work", {}, "", False), words)
    except CommandError as exc:
        assert len(words) < 2 and "node and a work type" in str(exc)
        return
    assert params["node"] == words[0] and params["worktype"] == words[1]
    assert params.get("params") == (" ".join(words[2:]) if words[2:] else None)


@PROPS
@given(st.dictionaries(KEYS, STRING_VALUES, max_size=8))
def test_split_params_keeps_exactly_the_work_params(params: dict[str, str]) -> None:
    work_params = split_params(params)
    assert work_params == {k: v for k, v in params.items() if k not in CONTROL_KEYS}
    assert not set(work_params) & set(CONTROL_KEYS)
    assert all(isinstance(v, str) for v in work_params.values())


# -- through the parser and the work command -------------------------------------------------

@PROPS
@given(SUBMIT_OBJECTS, st.booleans())
def test_json_submit_reaches_the_work_type_with_exactly_its_string_params(
        obj: dict[str, Any], spaced: bool) -> None:
    obj = {**obj, "command": "work", "subcommand": "submit"}
    separators = (", ", ": ") if spaced else (",", ":")
    request = parse_line(json.dumps(obj, separators=separators).encode())
    assert request is not None and request.params == obj
    error, work = run_work_command(request)
    bad = non_string_keys(obj)
    if bad:
        match = NAMED_KEY.fullmatch(str(error))
        assert match is not None and match.group(1) in bad, str(error)
        assert work.created == []
        return
    for _, work_type, params in work.created:
        assert work_type == obj["worktype"] and obj["node"]
        assert params == split_params(obj)
        assert all(isinstance(v, str) for v in params.values())
    if not work.created:
        assert "stub:" not in str(error)


@PROPS
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                               blacklist_categories=["Cs"]), max_size=8),
                max_size=6))
def test_text_submit_passes_the_rest_of_the_line_as_params(words: list[str]) -> None:
    line = " ".join(["work", "submit", *words])
    request = parse_line(line.encode())
    assert request is not None
    error, work = run_work_command(request)
    tokens = line.split(" ")[2:]  # as Go's strings.Split, empty words kept
    if len(tokens) < 2 or not tokens[0] or not tokens[1]:
        assert work.created == [] and "node" in str(error)
        return
    assert len(work.created) == 1
    node, work_type, params = work.created[0]
    assert work_type == tokens[1] and node in ("local", tokens[0])
    assert params == ({"params": " ".join(tokens[2:])} if tokens[2:] else {})


@pytest.mark.parametrize("obj, message", [
    ({"node": "localhost", "worktype": "cat", "x": 5}, "x is not"),
    ({"node": "localhost", "worktype": "cat", "params": ["a"]}, "params is not"),
    ({"node": "localhost", "worktype": "cat", "ttl": None}, "ttl is not"),
    ({"node": ["localhost"], "worktype": "cat"}, "node is not"),
    ({"node": "localhost", "worktype": {"a": 1}}, "worktype is not"),
    ({"node": "localhost", "worktype": "cat", "signwork": True}, "signwork is not"),
    ({"worktype": "cat"}, "needs both node and worktype"),
    ({"node": "localhost", "worktype": ""}, "needs both node and worktype"),
    ({"node": "remote1", "worktype": "cat", "ttl": "soon"}, "bad ttl"),
    ({"node": "localhost", "worktype": "cat", "ttl": "1h"}, "remote work only"),
    ({"node": "localhost", "worktype": "cat", "signwork": "True"}, "remote work only"),
    ({"node": "remote1", "worktype": "cat", "secret_pw": "x"}, "non-TLS"),
    ({"node": "remote1", "worktype": "cat", "signwork": "true"}, "work-signing"),
])
def test_refused_submits_say_why(obj: dict[str, Any], message: str) -> None:
    request = parse_line(json.dumps({"command": "work", "subcommand": "submit", **obj}).encode())
    error, work = run_work_command(request)
    assert message in str(error) and work.created == []


def test_huge_ttl_is_a_bad_ttl_error() -> None:
    request = parse_line(json.dumps({"command": "work", "subcommand": "submit",
                                     "node": "remote1", "worktype": "cat",
                                     "ttl": "1" * 5000 + "s"}).encode())
    error, _ = run_work_command(request)
    assert "bad ttl" in str(error)


def test_the_cli_refuses_every_control_key_but_the_signature() -> None:
    # ``mesh work submit --param signature=TOKEN`` sends a signature made elsewhere
    assert [key for key in CONTROL_KEYS if not is_reserved_param(key.upper())] == ["signature"]
    assert not any(map(is_reserved_param, ["params", "secret_x", "unitid", "Signature"]))
