"""Control clients that misbehave or vanish leak nothing, and limits answer clearly."""

from __future__ import annotations

import socket

from mesh.testing import Mesh, wait_resources_back

CLIENTS = 200


def test_vanishing_clients_leak_no_tasks_or_files(mesh: Mesh) -> None:
    node = mesh.add("solo", listen=False, sections=[
        {"work-command": {"worktype": "cat", "command": "cat"}}])
    mesh.start()
    unit = node.control('{"command":"work","subcommand":"list"}')
    assert unit == {}
    before = node.control("stats")
    for i in range(CLIENTS):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(30)
            sock.connect(str(node.socket))
            sock.recv(100)
            if i % 3 == 0:
                sock.sendall(b"stat")                      # a line that never ends
            elif i % 3 == 1:
                sock.sendall(b"work results nosuchunit 0\n")  # an error, then gone
            else:
                sock.sendall(b'{"command": "status", "requested_fields": 5}\n')

    wait_resources_back(node, before)
    assert node.alive
    assert node.control("work list") == {}
