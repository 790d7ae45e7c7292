"""``mesh control LINE...``: one raw control line to a node, its reply printed.

A real node process (with a plugin that registers a control command of its own, installed as a
tiny distribution) and ``mesh control`` run as a subprocess, as a plugin author would try it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh, NodeProcess, wait_until
from test_plugins import make_dist
from test_startup import HEAVY, imported, mesh_command

#: A plugin whose control command ``units [STATE]`` reads the node's unit store and shows the
#: request it got (``params`` of the JSON form, ``args`` of the text form).
UNITS_PLUGIN = textwrap.dedent('''
    from mesh import hookimpl
    from mesh.control.protocol import CommandError
    from mesh.work.states import state_name


    async def units_command(ctx, request):
        state = request.params.get("state", "") if request.is_json else request.args.strip()
        if not isinstance(state, str):
            raise CommandError('units: "state" must be a string such as "Succeeded"')
        store = ctx.node.work.store
        ids = [u for u in store.ids() if not state or state_name(store.read(u).state) == state]
        return {"NodeID": ctx.node.node_id, "Units": ids, "Params": request.params,
                "Args": request.args}


    @hookimpl
    def mesh_register_control_commands(register):
        register("units", units_command)
''')
GREET = {"work-command": {"worktype": "greet", "command": "echo", "params": "hello"}}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    """One node named ``ctl`` with the units plugin and the work type ``greet``."""
    workdir = Path(tempfile.mkdtemp(prefix="mesh-"))  # short: socket paths are limited
    site = make_dist(workdir / "site", "mesh-plugin-units", "1.0",
                     {"units": "mesh_plugin_units"}, {"mesh_plugin_units": UNITS_PLUGIN}).root
    cluster = Mesh(workdir)
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    cluster.add("ctl", listen=False, sections=[GREET], plugins=["units"],
                env={"PYTHONPATH": pythonpath})
    try:
        cluster.start()
        yield cluster.nodes["ctl"]
    finally:
        cluster.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def control(node: NodeProcess, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mesh", "control", "--socket", str(node.socket),
                           *words], capture_output=True, text=True, timeout=60)


def submit_greet(node: NodeProcess) -> str:
    """A ``greet`` unit submitted with ``mesh control`` (no payload follows the line), once
    it has succeeded."""
    result = control(node, "work", "submit", "ctl", "greet")
    assert result.returncode == 0, result.stderr
    header, reply = result.stdout.splitlines()
    unit_id = json.loads(reply)["unitid"]
    assert header == f"Work unit created with ID {unit_id}. Send stdin data and EOF."
    wait_until(lambda: node.control(f"work status {unit_id}")["StateName"] == "Succeeded",
               what=f"unit {unit_id} to succeed")
    return unit_id


def test_text_command_prints_the_reply_as_indented_json(node: NodeProcess) -> None:
    result = control(node, "status")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("{\n    ")
    assert json.loads(result.stdout)["NodeID"] == "ctl"


def test_json_command_is_sent_as_it_is(node: NodeProcess) -> None:
    unit_id = submit_greet(node)
    result = control(node, '{"command":"work","subcommand":"list"}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[unit_id]["WorkType"] == "greet"
    result = control(node, '{"command":"status","requested_fields":["NodeID"]}')
    assert json.loads(result.stdout) == {"NodeID": "ctl"}


def test_error_reply_goes_to_stderr_and_fails(node: NodeProcess) -> None:
    result = control(node, "frobnicate", "now")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == "mesh: Unknown command\n"
    result = control(node, "work", "status", "nosuchunit")
    assert result.returncode == 1 and "unknown work unit nosuchunit" in result.stderr


def test_plugin_command_in_text_and_json_form(node: NodeProcess) -> None:
    unit_id = submit_greet(node)
    result = control(node, "units", "Succeeded")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert unit_id in reply["Units"]
    assert (reply["Params"], reply["Args"]) == ({}, "Succeeded")

    line = {"command": "units", "state": "Failed", "limit": 5, "tags": ["a"]}
    result = control(node, json.dumps(line))
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert unit_id not in reply["Units"]
    assert (reply["Params"], reply["Args"]) == (line, "")  # the whole object, types kept

    result = control(node, '{"command":"units","state":2}')
    assert result.returncode == 1
    assert 'units: "state" must be a string' in result.stderr


def test_streamed_reply_is_copied_as_received(node: NodeProcess) -> None:
    unit_id = submit_greet(node)
    result = control(node, "work", "results", unit_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Streaming results for work unit {unit_id}\nhello\n"


def test_usage_errors(node: NodeProcess) -> None:
    assert control(node).returncode == 2  # no line at all
    result = control(node, "")
    assert result.returncode == 2 and "give a control command" in result.stderr
    result = control(node, "status\nwork list")
    assert result.returncode == 2 and "one line" in result.stderr


def test_control_imports_no_quic_tls_or_asyncio(node: NodeProcess, mesh_dir: Path) -> None:
    mesh_command(mesh_dir, "control", "status", "--socket", str(node.socket))  # builds the index
    result, modules = mesh_command(mesh_dir, "control", "units", "--socket", str(node.socket))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["NodeID"] == "ctl"
    assert not imported(modules, *HEAVY, "asyncio", "structlog", "mesh_builtin",
                        "mesh_plugin_units", "mesh.net", "mesh.work.workceptor")
