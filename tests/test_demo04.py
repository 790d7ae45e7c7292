"""Demo 04's ten-node topology: one view of the mesh everywhere, and work across it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from demo_topologies import DEMO04_LINKS, build_demo04
from mesh.testing import Mesh, wait_until

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
GATHER = {"work-command": {"worktype": "gather-hostname", "command": "hostname"}}


@pytest.fixture(scope="module")
def demo04():
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-d04-")))
    try:
        build_demo04(mesh, [GATHER])
        for node in mesh.nodes.values():
            node.log_level = "info"
        mesh.start()
        mesh.wait_converged(timeout=90)
        yield mesh
    finally:
        mesh.cleanup()


def test_every_node_sees_the_same_known_connections(demo04: Mesh) -> None:
    def views() -> list[dict]:
        return [n.status()["KnownConnectionCosts"] for n in demo04.nodes.values()]

    expected: dict[str, dict[str, int]] = {}
    for dialer, listener in DEMO04_LINKS:
        expected.setdefault(dialer, {})[listener] = 1
        expected.setdefault(listener, {})[dialer] = 1

    def same() -> bool:
        return all(view == expected for view in views())

    wait_until(same, timeout=60, what="the same, complete Known Connections on all ten nodes")


def test_work_from_west_controller_to_east_executor(demo04: Mesh) -> None:
    demo04.wait_until_work_types("west-controller01", "east-executor01", ["gather-hostname"])
    sock = str(demo04.nodes["west-controller01"].socket)
    result = subprocess.run([RECEPTORCTL, "--socket", sock, "work", "submit", "--node",
                             "east-executor01", "--no-payload", "--rm", "--follow",
                             "gather-hostname"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    import socket

    assert result.stdout.splitlines()[0] == socket.gethostname()
    route = demo04.nodes["west-controller01"].routes()
    assert route["east-executor01"] in ("west-relayer01", "west-relayer02")
