"""Payloads that do not arrive whole: over ``maxpayload``, or cut off by a client that vanishes.

Either way the unit is Failed with a Detail that says why, the client (if still there) gets an
ERROR line, and nothing leaks: 200 vanishing clients leave the node's tasks and open files
where they were.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path

from mesh.testing import (ControlSession, Mesh, NodeProcess, free_port, wait_resources_back,
                          wait_until)
from work_helpers import receptorctl, status, submitted_unit, wait_state

LIMIT = 1 << 20
CAT = {"work-command": {"worktype": "cat", "command": "cat"}}
CLIENTS = 200


def _open_submit(node: NodeProcess, payload_part: bytes, *, tcp_port: int | None = None,
                 ) -> tuple[socket.socket, str]:
    """Start a local ``cat`` submit and send part of a payload; returns the socket and unit."""
    if tcp_port is None:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(str(node.socket))
    else:
        sock = socket.create_connection(("127.0.0.1", tcp_port), timeout=30)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(json.dumps({"command": "work", "subcommand": "submit", "node": "localhost",
                             "worktype": "cat"}).encode() + b"\n")
    created = reader.readline().decode()
    assert created.startswith("Work unit created with ID "), created
    reader.close()
    sock.sendall(payload_part)
    return sock, created.split()[5].rstrip(".")


def _units(node: NodeProcess) -> dict[str, dict]:
    return node.control('{"command":"work","subcommand":"list"}')


def test_payload_over_maxpayload_fails_the_unit(mesh: Mesh, tmp_path: Path) -> None:
    node = mesh.add("limited", listen=False, sections=[
        CAT, {"work-limits": {"maxpayload": "1M"}}])
    mesh.start()
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 * LIMIT))
    refused = receptorctl(node, "work", "submit", "cat", "--payload", str(big), check=False)
    assert refused.returncode != 0
    assert b"payload larger than the limit of 1048576 bytes (work-limits maxpayload)" in \
        refused.stdout + refused.stderr
    (unit_id, unit), = _units(node).items()
    assert unit["StateName"] == "Failed"
    assert "payload larger than the limit" in unit["Detail"]
    assert (node.datadir / "limited" / unit_id / "stdin").stat().st_size == 0

    exact = tmp_path / "exact"
    exact.write_bytes(os.urandom(LIMIT))
    unit_id = submitted_unit(receptorctl(node, "work", "submit", "cat", "--payload", str(exact)))
    wait_state(node, unit_id, {2})
    assert receptorctl(node, "work", "results", unit_id).stdout == exact.read_bytes()


def test_executor_limit_reaches_the_controller_client(mesh: Mesh, tmp_path: Path) -> None:
    mesh.add("controller01")
    executor = mesh.add("executor01", sections=[CAT, {"work-limits": {"maxpayload": LIMIT}}])
    mesh.link("executor01", "controller01")
    mesh.start()
    mesh.wait_until_work_types("controller01", "executor01", ["cat"])
    controller = mesh.nodes["controller01"]
    big = tmp_path / "big"
    big.write_bytes(os.urandom(2 * LIMIT))
    refused = receptorctl(controller, "work", "submit", "cat", "--node", "executor01",
                          "--payload", str(big), check=False)
    assert refused.returncode != 0
    assert b"work-limits maxpayload" in refused.stdout + refused.stderr
    (remote_unit, remote), = _units(executor).items()
    assert remote["StateName"] == "Failed" and "maxpayload" in remote["Detail"]
    assert executor.alive and controller.alive


def test_vanishing_submitters_fail_their_units_and_leak_nothing(mesh: Mesh,
                                                                tmp_path: Path) -> None:
    tcp_port = free_port()
    node = mesh.add("solo", listen=False, sections=[CAT])
    node.sections.append({"control-service": {"service": "", "tcplisten": f"127.0.0.1:{tcp_port}"}})
    mesh.start()
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(5_000_000))
    finished = submitted_unit(receptorctl(node, "work", "submit", "cat", "--payload",
                                          str(payload)))
    wait_state(node, finished, {2})
    before = node.control("stats")

    vanished: dict[str, str] = {}
    for i in range(CLIENTS):
        kind = ("unix-close", "tcp-reset", "results")[i % 3]
        if kind == "results":  # follow a 5 MB result and vanish after the first bytes
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(30)
                sock.connect(str(node.socket))
                sock.recv(100)
                sock.sendall(f"work results {finished} 0\n".encode())
                sock.recv(65536)
            continue
        sock, unit_id = _open_submit(node, b"partial payload " * 100,
                                     tcp_port=tcp_port if kind == "tcp-reset" else None)
        if kind == "tcp-reset":  # SO_LINGER 0: close sends RST
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        vanished[unit_id] = kind

    def all_failed() -> bool:
        return all(status(node, u)["State"] == 3 for u in vanished)

    wait_until(all_failed, timeout=60, what="every unit of a vanished submitter Failed")
    for unit_id, kind in vanished.items():
        detail = status(node, unit_id)["Detail"]
        assert detail.startswith("Error receiving payload"), (kind, detail)
        if kind == "unix-close":
            assert "client disconnected before the payload was complete" in detail, detail

    wait_resources_back(node, before)
    assert node.alive
    assert status(node, finished)["StateName"] == "Succeeded"
    # a well-behaved client (half-close, then read the reply) is still served
    unit_id = submitted_unit(receptorctl(node, "work", "submit", "cat", "--payload-literal", "ok"))
    wait_state(node, unit_id, {2})
    with ControlSession(node.socket) as session:
        assert session.command(f"work status {unit_id}")["StdoutSize"] == 3
