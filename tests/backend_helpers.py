"""Helpers shared by the backend tests (udp, websocket, mixed): receptorctl calls, free UDP
ports, link checks and a scan of node logs for unhandled errors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from mesh.testing import Mesh, NodeProcess, free_port

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
CAT = {"work-command": {"worktype": "cat", "command": "cat"}}


def udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free a moment ago."""
    return free_port(host)


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


def check_5mib_round_trip(line: Mesh, tmp_path: Path, hops: str) -> None:
    """5 MiB of random bytes from near to far and back as the result, byte-exact; prints the
    rate (``hops`` names the links, e.g. "2 UDP hops")."""
    payload = os.urandom(5 * 1024 * 1024)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    start = time.monotonic()
    out = submit_follow(line.nodes["near"], "far", "--payload", str(source))
    elapsed = time.monotonic() - start
    assert len(out) == len(payload)
    assert out == payload
    print(f"\n5 MiB payload out + 5 MiB result back over {hops}: {elapsed:.2f} s "
          f"({2 * len(payload) / elapsed / 1e6:.1f} MB/s both ways)")


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
