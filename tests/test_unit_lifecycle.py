"""unit-lifecycle: finished units are released after `retention`; units that never start fail
after `pendingttl`."""

from __future__ import annotations

import json
import socket

from mesh.testing import Mesh, wait_until


def test_retention_and_pending_ttl(mesh: Mesh) -> None:
    node = mesh.add("solo", listen=False, sections=[
        {"unit-lifecycle": {"retention": "2s", "pendingttl": "2s"}},
        {"work-command": {"worktype": "cat", "command": "cat"}}])
    mesh.start()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(node.socket))
        f = sock.makefile("rwb")
        f.readline()
        f.write(b'{"command":"work","subcommand":"submit","node":"localhost","worktype":"cat"}\n')
        f.flush()
        stalled = f.readline().decode().split("ID ")[1].split(".")[0]
        # the payload never ends: after pendingttl the unit fails, saying why
        wait_until(lambda: node.control(f"work status {stalled}")["State"] == 3, timeout=30,
                   what="stalled unit expired")
        assert "pendingttl" in node.control(f"work status {stalled}")["Detail"]
        sock.shutdown(socket.SHUT_WR)
        assert f.readline().startswith(b"ERROR: ")
    # a finished unit (the expired one too) is released after retention
    wait_until(lambda: stalled not in node.control("work list"), timeout=30,
               what="expired unit released")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(node.socket))
        f = sock.makefile("rwb")
        f.readline()
        f.write(b'{"command":"work","subcommand":"submit","node":"localhost","worktype":"cat"}\n')
        f.flush()
        f.readline()
        f.write(b"hello\n")
        f.flush()
        sock.shutdown(socket.SHUT_WR)
        unit_id = json.loads(f.readline())["unitid"]
    wait_until(lambda: node.control(f"work status {unit_id}")["State"] == 2, timeout=30)
    wait_until(lambda: unit_id not in node.control("work list"), timeout=30,
               what="finished unit released after retention")
    assert not (node.datadir / "solo" / unit_id).exists()
