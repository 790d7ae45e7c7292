"""Firewall rules on a running mesh: a rule blocks one node's traffic to one service, and
only that."""

from __future__ import annotations

import socket

from mesh.testing import Mesh, NodeProcess


def connect_line(via: NodeProcess, target: str, service: str = "control") -> bytes:
    """Ask ``via``'s control service to connect to ``target:service``; the first reply line."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(str(via.socket))
        f = sock.makefile("rwb")
        f.readline()
        f.write(f"connect {target} {service}\n".encode())
        f.flush()
        first = f.readline()
        if first == b"Connecting\n":
            return f.readline()  # the remote greeting
        return first


def test_rule_blocks_one_node_from_one_service(mesh: Mesh) -> None:
    mesh.add("target", sections=[])
    mesh.add("alice")
    mesh.add("bob")
    mesh.link("alice", "target")
    mesh.link("bob", "target")
    target = mesh.nodes["target"]
    target.node_extra = {"firewallrules": [
        # rules apply on every node a message crosses (as in Receptor), so name the target
        {"action": "reject", "fromnode": "alice", "tonode": "target", "toservice": "control"},
        {"action": "drop", "fromnode": "/b.b/", "toservice": "nosuch"}]}
    mesh.start()
    mesh.wait_converged()
    blocked = connect_line(mesh.nodes["alice"], "target")
    assert b"blocked by firewall" in blocked
    assert connect_line(mesh.nodes["bob"], "target") == b"Receptor Control, node target\n"
    # alice still reaches other services of the target, and other nodes' control services
    assert mesh.nodes["alice"].control("ping target")["Success"] is True
    assert connect_line(mesh.nodes["alice"], "bob") == b"Receptor Control, node bob\n"
