"""A 3-node line (controller01 - relayer01 - executor01) driven by the real receptorctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.testing import Mesh, free_port, wait_until

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")


def receptorctl(socket: str, *args: str, stdin: bytes | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([RECEPTORCTL, "--socket", socket, *args], input=stdin,
                            capture_output=True, timeout=120)
    out = subprocess.CompletedProcess(result.args, result.returncode,
                                      result.stdout.decode(errors="replace"),
                                      result.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise AssertionError(f"receptorctl {args} failed ({result.returncode}): "
                             f"{out.stdout}\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory):
    import tempfile

    cluster = Mesh(Path(tempfile.mkdtemp(prefix="mesh-line-")))
    tcp_port = free_port()
    cluster.add("controller01", sections=[
        {"control-service": {"service": "ctltcp", "tcplisten": f"127.0.0.1:{tcp_port}"}}])
    cluster.add("relayer01")
    cluster.add("executor01")
    cluster.link("relayer01", "controller01")
    cluster.link("executor01", "relayer01")
    cluster.tcp_port = tcp_port  # type: ignore[attr-defined]
    try:
        cluster.start()
        cluster.wait_converged()
        yield cluster
    finally:
        cluster.cleanup()


def test_status_shows_known_connections_and_routes(line: Mesh) -> None:
    sock = str(line.nodes["controller01"].socket)
    out = receptorctl(sock, "status").stdout
    assert "Node ID: controller01" in out
    assert "Known Node   Known Connections" in out
    assert "controller01 relayer01: 1" in out
    assert "relayer01    controller01: 1 executor01: 1" in out
    assert "executor01   relayer01: 1" in out
    assert "Route        Via\nexecutor01   relayer01\nrelayer01    relayer01" in out
    status = json.loads(receptorctl(sock, "status", "--json").stdout)
    assert set(status) == {"Version", "SystemCPUCount", "SystemMemoryMiB", "NodeID",
                           "Connections", "RoutingTable", "Advertisements",
                           "KnownConnectionCosts"}
    assert status["RoutingTable"] == {"executor01": "relayer01", "relayer01": "relayer01"}
    assert status["KnownConnectionCosts"]["relayer01"] == {"controller01": 1, "executor01": 1}


def test_every_node_advertises_its_control_service(line: Mesh) -> None:
    def ads() -> set[str]:
        status = line.nodes["controller01"].status()
        return {ad["NodeID"] for ad in status["Advertisements"] if ad["Service"] == "control"}

    wait_until(lambda: ads() == {"controller01", "relayer01", "executor01"}, timeout=30,
               what="control service adverts")


def test_ping_and_traceroute(line: Mesh) -> None:
    sock = str(line.nodes["controller01"].socket)
    out = receptorctl(sock, "ping", "executor01", "--count", "2", "--delay", "0.1").stdout
    assert out.count("Reply from executor01 in") == 2
    out = receptorctl(sock, "traceroute", "executor01").stdout
    assert out.splitlines()[0].startswith("0: controller01 in")
    assert out.splitlines()[1].startswith("1: relayer01 in")
    assert out.splitlines()[2].startswith("2: executor01 in")
    failed = receptorctl(sock, "ping", "nosuchnode", "--count", "1", check=False)
    assert failed.returncode == 2
    assert "no route to node" in failed.stdout + failed.stderr


def test_version_reload_and_work_list(line: Mesh) -> None:
    sock = str(line.nodes["controller01"].socket)
    assert "receptor     " in receptorctl(sock, "version").stdout
    assert "Reload successful" in receptorctl(sock, "reload").stdout
    assert json.loads(receptorctl(sock, "work", "list").stdout) == {}


def test_over_tcp_control_listener(line: Mesh) -> None:
    address = f"tcp://127.0.0.1:{line.tcp_port}"  # type: ignore[attr-defined]
    out = receptorctl(address, "status").stdout
    assert "Node ID: controller01" in out
    assert "Reply from relayer01" in receptorctl(address, "ping", "relayer01", "--count",
                                                 "1").stdout


def test_connect_to_remote_control_service(line: Mesh) -> None:
    sock = str(line.nodes["controller01"].socket)
    out = receptorctl(sock, "work", "list", "--node", "executor01")
    assert json.loads(out.stdout) == {}
    # raw connect, as receptorctl's connect_to_service does: the remote greeting follows
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX) as raw:
        raw.settimeout(60)
        raw.connect(sock)
        f = raw.makefile("rwb")
        assert f.readline().startswith(b"Receptor Control, node controller01")
        f.write(b"connect executor01 control \n")
        f.flush()
        assert f.readline() == b"Connecting\n"
        assert f.readline() == b"Receptor Control, node executor01\n"
        f.write(b"status\n")
        f.flush()
        assert json.loads(f.readline())["NodeID"] == "executor01"
        f.write(b"bogus\n")
        f.flush()
        assert f.readline() == b"ERROR: Unknown command\n"


def test_mesh_cli_status_and_ping(line: Mesh) -> None:
    sock = str(line.nodes["controller01"].socket)
    env = {**os.environ, "MESH_SOCKET": sock}
    out = subprocess.run([sys.executable, "-m", "mesh", "status"], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Route        Via\nexecutor01   relayer01" in out
    assert "controller01 control   Stream" in out
    out = subprocess.run([sys.executable, "-m", "mesh", "ping", "executor01", "--count", "1"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.startswith("Reply from executor01 in")
