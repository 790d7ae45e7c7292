"""One route over three backends: west —tcp— relay1 —udp— relay2 —websocket— east.

Remote work submitted on west runs on east and its output comes back across all three links.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from backend_helpers import CAT, receptorctl, udp_port, unexpected_errors
from mesh.testing import Mesh, NodeProcess, free_port


def link_kinds(node: NodeProcess) -> set[str]:
    """Backends of the links ``node`` established, from the session labels in its log."""
    kinds = set()
    for text in node.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(text)
        except ValueError:
            continue
        if record.get("event") == "connection_established":
            kinds.add(record["address"].split()[0])
    return kinds


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    cluster = Mesh(Path(tempfile.mkdtemp(prefix="mesh-mixed-")))
    tcp, udp, ws = free_port(), udp_port(), free_port()
    cluster.add("west", listen=False, sections=[
        {"tcp-listener": {"port": tcp, "bindaddr": "127.0.0.1"}}])
    cluster.add("relay1", listen=False, sections=[
        {"tcp-peer": {"address": f"127.0.0.1:{tcp}"}},
        {"udp-listener": {"port": udp, "bindaddr": "127.0.0.1"}}])
    cluster.add("relay2", listen=False, sections=[
        {"udp-peer": {"address": f"127.0.0.1:{udp}"}},
        {"ws-listener": {"port": ws, "bindaddr": "127.0.0.1"}}])
    cluster.add("east", listen=False, sections=[
        CAT, {"ws-peer": {"address": f"ws://127.0.0.1:{ws}/"}}])
    try:
        cluster.start()
        cluster.wait_converged()
        cluster.wait_until_work_types("west", "east", ["cat"])
        yield cluster
        assert not unexpected_errors(cluster)
    finally:
        cluster.cleanup()


def test_route_crosses_tcp_udp_and_websocket(line: Mesh) -> None:
    west = line.nodes["west"]
    assert west.routes() == {"relay1": "relay1", "relay2": "relay1", "east": "relay1"}
    hops = receptorctl(west, "traceroute", "east").decode().splitlines()
    assert [hop.split(" in ")[0] for hop in hops] == \
        ["0: west", "1: relay1", "2: relay2", "3: east"]
    # each relay's two links really are of the kinds configured
    for name, kinds in (("relay1", {"tcp", "udp"}), ("relay2", {"udp", "ws"})):
        assert link_kinds(line.nodes[name]) == kinds


def test_remote_work_end_to_end(line: Mesh, tmp_path: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    out = receptorctl(line.nodes["west"], "work", "submit", "--node", "east", "--payload",
                      str(source), "--rm", "--follow", "cat")
    match = re.search(rb"\(\w+, released\)\n\Z", out)
    assert match, out[-200:]
    assert out[:match.start()] == payload
