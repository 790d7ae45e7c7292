"""How a node fails to start, and what it leaves behind when it stops.

A listener (tcp, udp or websocket) or a control listener whose address is taken is a start
failure: exit status 1 and one ``mesh: ...`` line naming the section and the address, as
Go Receptor's ``Error: listen tcp 0.0.0.0:PORT: bind: address already in use``.  The same
failure on ``reload`` only fails the reload.  Every clean stop (SIGTERM, SIGINT, a duplicate
node ID, a failed start) removes the control socket file, so that ``mesh status`` says the
node is not running rather than ``Connection refused``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mesh.testing import Mesh, NodeProcess, free_port, wait_until

MESH = [sys.executable, "-m", "mesh"]
RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
NOT_RUNNING = "does not exist (is the node running?"


def hold_port(kind: int, port: int, host: str = "0.0.0.0") -> socket.socket:
    """A socket of ``kind`` (SOCK_STREAM listening, or SOCK_DGRAM) bound to ``host:port``."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind((host, port))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


def run_node(config: Path) -> subprocess.CompletedProcess[str]:
    """``mesh node -c config`` to its end (JSON log lines and any ``mesh:`` line on stderr)."""
    return subprocess.run([*MESH, "node", "-c", str(config)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "MESH_LOG_FORMAT": "json"})


def message_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not JSON log events."""
    lines = []
    for line in stderr.splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return lines


def status_of(sock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MESH, "status", "--socket", str(sock)], capture_output=True,
                          text=True, timeout=60)


def assert_not_running(sock: Path) -> None:
    """No socket file is left, and ``mesh status`` says so kindly."""
    assert not sock.exists(), f"{sock} was left behind"
    status = status_of(sock)
    assert status.returncode == 1
    assert NOT_RUNNING in status.stderr, status.stderr
    assert "refused" not in status.stderr


# -- a listener that cannot bind at start ------------------------------------------------------

LISTENERS = {"tcp-listener": socket.SOCK_STREAM, "udp-listener": socket.SOCK_DGRAM,
             "ws-listener": socket.SOCK_STREAM}


@pytest.mark.parametrize("section", sorted(LISTENERS))
def test_a_listener_whose_port_is_taken_stops_the_start(mesh_dir: Path, section: str) -> None:
    port = free_port()
    sock = mesh_dir / "n.sock"
    config = mesh_dir / "n.yml"
    config.write_text(yaml.safe_dump([
        {"node": {"id": "busy", "datadir": str(mesh_dir / "data")}},
        {"control-service": {"filename": str(sock)}},
        {"tcp-peer": {"address": f"127.0.0.1:{free_port()}"}},  # unreachable: no failure
        {section: {"port": port}}]))
    with hold_port(LISTENERS[section], port):
        result = run_node(config)
    assert result.returncode == 1, result.stderr
    assert message_lines(result.stderr) == [
        f"mesh: {section} 0.0.0.0:{port}: cannot listen: address already in use"]
    assert "Traceback" not in result.stderr and "backend_failed" not in result.stderr
    assert "node_started" not in result.stderr
    assert_not_running(sock)


def test_a_control_listener_whose_port_is_taken_stops_the_start(mesh_dir: Path) -> None:
    port = free_port()
    sock = mesh_dir / "n.sock"
    config = mesh_dir / "n.yml"
    config.write_text(yaml.safe_dump([
        {"node": {"id": "busy", "datadir": str(mesh_dir / "data")}},
        {"control-service": {"filename": str(sock), "tcplisten": f"127.0.0.1:{port}"}}]))
    with hold_port(socket.SOCK_STREAM, port, "127.0.0.1"):
        result = run_node(config)
    assert result.returncode == 1, result.stderr
    assert message_lines(result.stderr) == [
        f"mesh: control-service 127.0.0.1:{port}: cannot listen: address already in use"]
    assert_not_running(sock)  # bound (early) before the tcp listener failed


# -- reload ------------------------------------------------------------------------------------


def reload(node: NodeProcess) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RECEPTORCTL, "--socket", str(node.socket), "reload"],
                          capture_output=True, text=True, timeout=60)


def accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return True


def test_reload_with_a_port_in_use_replies_an_error_and_keeps_running(mesh: Mesh) -> None:
    alpha = mesh.add("alpha")
    mesh.add("beta", listen=False)
    mesh.link("beta", "alpha")
    alpha.sections.append({"tcp-peer": {"address": f"127.0.0.1:{free_port()}"}})  # nobody
    mesh.start()
    mesh.wait_converged()

    port = free_port()
    alpha.sections.append({"tcp-listener": {"port": port}})
    alpha.write_config()
    with hold_port(socket.SOCK_STREAM, port):
        result = reload(alpha)
        assert result.returncode == 4, result.stdout + result.stderr
        assert (f"tcp-listener 0.0.0.0:{port}: cannot listen: address already in use "
                f"ERRORCODE 4") in result.stdout + result.stderr
        assert alpha.alive
        assert alpha.control("ping beta")["Success"]
        assert alpha.log_events("reload_failed")

    # The port is free again: the next reload starts the listener it could not start.
    result = reload(alpha)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Reload successful" in result.stdout
    wait_until(lambda: accepts(port), what=f"alpha listening on {port}")
    assert [c["NodeID"] for c in alpha.status()["Connections"]] == ["beta"]


# -- the control socket file after a stop ------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_node_removes_its_control_socket(mesh: Mesh, sig: signal.Signals) -> None:
    node = mesh.add("solo", listen=False)
    mesh.start()

    # Killed, it cannot clean up: the next start replaces the stale socket file.
    node.kill()
    assert node.socket.exists()
    node.start()
    assert node.status()["NodeID"] == "solo"

    node.signal(sig)
    assert node.proc is not None and node.proc.wait(timeout=30) == 0, node.log_tail()
    assert_not_running(node.socket)
