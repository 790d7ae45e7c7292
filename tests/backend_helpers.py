"""Helpers shared by the backend tests (udp, websocket, mixed): receptorctl calls, free UDP
ports, link checks and a scan of node logs for unhandled errors."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from mesh.testing import Mesh, NodeProcess

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
CAT = {"work-command": {"worktype": "cat", "command": "cat"}}


def udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def receptorctl(node: NodeProcess, *args: str, timeout: float = 120) -> bytes:
    result = subprocess.run([RECEPTORCTL, "--socket", str(node.socket), *args],
                            capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"receptorctl {args[:4]} failed ({result.returncode}): "
                             f"{result.stdout[-2000:]!r} {result.stderr[-2000:]!r}")
    return result.stdout


def submit_follow(node: NodeProcess, target: str, *payload_args: str) -> bytes:
    """``work submit --rm --follow`` of ``cat`` on ``target``; returns the unit's output.

    receptorctl prints the results, then ``(UNITID, released)`` for ``--rm``.
    """
    out = receptorctl(node, "work", "submit", "--node", target, *payload_args, "--rm",
                      "--follow", "cat")
    match = re.search(rb"\(\w+, released\)\n\Z", out)
    assert match, f"no release line at the end of {out[-200:]!r}"
    return out[:match.start()]


def connected(node: NodeProcess, peer: str) -> bool:
    return any(c["NodeID"] == peer for c in node.status()["Connections"] or [])


def unexpected_errors(mesh: Mesh) -> list[str]:
    """Tracebacks and crashed tasks in the nodes' logs (a backend must handle its errors)."""
    found = []
    for node in mesh.nodes.values():
        text = node.log_path.read_text(errors="replace") if node.log_path.exists() else ""
        for marker in ("Traceback", "Exception in callback", "exception was never retrieved",
                       "_crashed"):
            if marker in text:
                found.append(f"{node.name}: {marker}")
    return found
