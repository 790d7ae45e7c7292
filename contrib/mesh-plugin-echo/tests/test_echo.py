"""Tests of the echo work type, with the fixtures mesh ships for plugin authors.

``unit_store``, ``unit_handle``, ``register_plugin`` and ``mesh_cluster`` come from
``mesh.pytest_plugin``, which pytest loads through mesh's ``pytest11`` entry point.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import mesh_plugin_echo
from mesh.config.errors import SectionValueError
from mesh.plugins import PluginHost
from mesh.testing import Mesh, WatchedUnit, wait_until
from mesh.work.states import UnitState
from mesh.work.worktype import WorkError
from mesh_plugin_echo import EchoWorkType, WorkEchoConfig

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")


def echo(prefix: str = "") -> EchoWorkType:
    return EchoWorkType(WorkEchoConfig(worktype="echo", prefix=prefix))


# -- registration ----------------------------------------------------------------------------


def test_registers_the_work_echo_section(register_plugin: Callable[..., PluginHost]) -> None:
    host = register_plugin(mesh_plugin_echo)
    registered = host.work_types["work-echo"]
    assert registered.factory is EchoWorkType
    assert [key.name for key in registered.spec.keys] == ["worktype", "prefix"]
    assert registered.spec.build("echo") == WorkEchoConfig(worktype="echo")  # the bare key


def test_empty_worktype_is_refused(register_plugin: Callable[..., PluginHost]) -> None:
    spec = register_plugin(mesh_plugin_echo).section_specs()["work-echo"]
    with pytest.raises(SectionValueError, match="worktype"):
        spec.build({"worktype": " "})


# -- the work type, driven directly ------------------------------------------------------------


def test_echoes_each_line_with_the_prefix(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = echo("> ")
    unit = unit_handle(wt, stdin=b"one\ntwo\nno newline")

    async def main() -> None:
        await wt.start(unit)
        status = await unit.final()
        assert (status.state, status.detail) == (UnitState.SUCCEEDED, "Echoed 3 lines")
        assert status.stdout_size == len(unit.stdout)

    asyncio.run(main())
    assert unit.stdout == b"> one\n> two\n> no newline"
    assert any(seen.state == UnitState.RUNNING for seen in unit.seen)


def test_empty_input(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = echo("> ")
    unit = unit_handle(wt)

    async def main() -> None:
        await wt.start(unit)
        assert (await unit.final()).detail == "Echoed 0 lines"

    asyncio.run(main())
    assert unit.stdout == b""


def test_params_are_refused() -> None:
    with pytest.raises(WorkError, match="extra params provided but not allowed"):
        echo().check_params({"params": "-n"})


def test_cancel_stops_the_copy(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = echo()
    unit = unit_handle(wt, stdin=b"x\n" * 1_000_000)  # a thousand batches

    async def main() -> None:
        await wt.start(unit)
        await unit.until(lambda s: s.stdout_size > 0, what="some output")
        await wt.cancel(unit)
        # the kernel records Canceled once cancel() returned; the copy must write no more
        unit.update(lambda s: setattr(s, "state", UnitState.CANCELED))
        size = unit.status().stdout_size
        await asyncio.sleep(0.05)
        assert unit.status().state == UnitState.CANCELED
        assert len(unit.stdout) == size < 2_000_000

    asyncio.run(main())


def test_restart_marks_a_running_unit_failed(unit_handle: Callable[..., WatchedUnit]) -> None:
    unit = unit_handle(echo())
    unit.update(lambda s: setattr(s, "state", UnitState.RUNNING))  # as a stopped node left it
    asyncio.run(echo().restart(unit))
    status = unit.status()
    assert status.state == UnitState.FAILED
    assert status.detail.startswith("Failed to restart: echo runs inside the node process")


# -- end to end: two real nodes ----------------------------------------------------------------


def test_echo_through_the_mesh(mesh_cluster: Callable[..., Mesh]) -> None:
    cluster = mesh_cluster(2, sections={"node2": [{"work-echo": {"worktype": "echo",
                                                                 "prefix": "node2: "}}]},
                           plugins=["mesh-plugin-echo"])
    cluster.wait_until_work_types("node1", "node2", ["echo"])
    result = subprocess.run(
        [RECEPTORCTL, "--socket", str(cluster.nodes["node1"].socket), "work", "submit",
         "--node", "node2", "--payload", "-", "--follow", "echo"],
        input=b"hello\nmesh\n", capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"node2: hello\nnode2: mesh\n"
    [unit] = cluster.nodes["node2"].control("work list").values()
    assert (unit["WorkType"], unit["StateName"], unit["Detail"]) == ("echo", "Succeeded",
                                                                     "Echoed 2 lines")


def test_work_limits_maxstdout_stops_an_echo(mesh_cluster: Callable[..., Mesh]) -> None:
    """The node stops an in-process unit whose stdout outgrows ``maxstdout`` (echo does not
    check it): Failed with the limit in its Detail, its stdout cut at the limit."""
    cluster = mesh_cluster(1, sections={"node1": [{"work-echo": {"worktype": "echo"}},
                                                  {"work-limits": {"maxstdout": "100K"}}]},
                           plugins=["mesh-plugin-echo"])
    node = cluster.nodes["node1"]
    payload = b"".join(b"line %07d\n" % i for i in range(200_000))  # 2.4 MB
    result = subprocess.run(
        [RECEPTORCTL, "--socket", str(node.socket), "work", "submit", "--node", "localhost",
         "--payload", "-", "echo"], input=payload, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [(unit_id, unit)] = wait_until(
        lambda: [(k, u) for k, u in node.control("work list").items()
                 if u["StateName"] in ("Succeeded", "Failed")],
        timeout=60, what="the echo unit to end")
    assert (unit["StateName"], unit["Detail"]) == (
        "Failed", "stdout larger than the limit of 102400 bytes (work-limits maxstdout)")
    stdout = (node.datadir / "node1" / unit_id / "stdout").read_bytes()
    assert stdout == payload[:102400]
    assert (unit["StdoutSize"], unit["StdoutFinalSize"]) == (102400, 102400)
    assert unit["StdoutSHA256"] == hashlib.sha256(stdout).hexdigest()
