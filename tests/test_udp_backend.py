"""The udp backend between real node processes on loopback.

near (udp-listener) ← mid (udp-peer, udp-listener) ← far (udp-peer, work-command ``cat``):
routes, ping, remote work and a 5 MB result stream over two UDP links; hostile datagrams at a
listener; liveness when either end of a UDP link is killed and restarted; IPv6.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from mesh.net import messages as m
from backend_helpers import (CAT, check_5mib_round_trip, connected, receptorctl, submit_follow,
                             udp_port, unexpected_errors)
from mesh.testing import Mesh, wait_until


def udp_link(mesh: Mesh, dialer: str, listener: str, port: int, host: str = "127.0.0.1") -> None:
    """``listener`` gets a udp-listener on ``port``; ``dialer`` a udp-peer to it."""
    mesh.nodes[listener].sections.append(
        {"udp-listener": {"port": port, "bindaddr": host}})
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    mesh.nodes[dialer].sections.append({"udp-peer": {"address": address}})


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    cluster = Mesh(Path(tempfile.mkdtemp(prefix="mesh-udp-")))
    cluster.add("near", listen=False)
    cluster.add("mid", listen=False)
    cluster.add("far", listen=False, sections=[CAT])
    cluster.ports["near"] = udp_port()
    cluster.ports["mid"] = udp_port()
    udp_link(cluster, "mid", "near", cluster.ports["near"])
    udp_link(cluster, "far", "mid", cluster.ports["mid"])
    try:
        cluster.start()
        cluster.wait_converged()
        cluster.wait_until_work_types("near", "far", ["cat"])
        yield cluster
        assert not unexpected_errors(cluster)
    finally:
        cluster.cleanup()


def test_routes_converge_and_ping_crosses_two_udp_links(line: Mesh) -> None:
    near = line.nodes["near"]
    assert near.routes() == {"mid": "mid", "far": "mid"}
    out = receptorctl(near, "ping", "far", "--count", "3", "--delay", "0.1").decode()
    assert out.count("Reply from far in") == 3
    out = receptorctl(near, "traceroute", "far").decode().splitlines()
    assert [line.split(" in ")[0] for line in out] == ["0: near", "1: mid", "2: far"]


def test_remote_work_over_udp(line: Mesh) -> None:
    assert submit_follow(line.nodes["near"], "far", "--payload-literal", "hi") == b"hi\n"


def test_5mb_result_stream_is_byte_exact(line: Mesh, tmp_path: Path) -> None:
    # The payload crosses both UDP links to far, and the result comes back the same way.
    check_5mib_round_trip(line, tmp_path, "2 UDP hops")


def test_hostile_datagrams_do_not_hurt_the_listener(line: Mesh) -> None:
    near, mid = line.nodes["near"], line.nodes["mid"]
    target = ("127.0.0.1", line.ports["near"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        raw.settimeout(0.2)
        label = f"udp 127.0.0.1:{raw.getsockname()[1]}"
        for junk in (b"", b"\x00", b"\x00garbage", os.urandom(1000), b"\x04", b"\x03[]",
                     os.urandom(65507)):
            raw.sendto(junk, target)
        # None of that opened a session: only a routing update may.
        raw.sendto(b"\x01{not json", target)
        # That one did: near answers with its own routing updates (the handshake), then gives
        # up after 11 of them, as it would with a neighbour that never answers.
        def closed() -> list[dict[str, Any]]:
            return [r for r in near.log_events("udp_session_closed") if r.get("peer") == label]

        updates: list[bytes] = []

        def drained_and_closed() -> bool:
            try:
                updates.append(raw.recvfrom(70000)[0])
            except socket.timeout:
                return bool(closed())
            return False

        wait_until(drained_and_closed, timeout=30, interval=0,
                   what="near to drop the half-open session")
        assert {data[:1] for data in updates} == {bytes([m.MSG_ROUTING_UPDATE])}
        assert 1 <= len(updates) <= 11
        assert len(closed()) == 1
        opened = [r for r in near.log_events("udp_session_opened") if r.get("peer") == label]
        assert len(opened) == 1, "junk datagrams opened sessions"
    assert near.alive and mid.alive
    assert near.routes() == {"mid": "mid", "far": "mid"}
    out = receptorctl(near, "ping", "far", "--count", "1").decode()
    assert "Reply from far in" in out


def test_ipv6_udp_link(mesh: Mesh) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        port = udp_port("::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    mesh.add("six", listen=False)
    mesh.add("seven", listen=False)
    udp_link(mesh, "seven", "six", port, host="::1")
    mesh.start()
    mesh.wait_converged(timeout=30)
    out = receptorctl(mesh.nodes["six"], "ping", "seven", "--count", "1").decode()
    assert "Reply from seven in" in out
    established = mesh.nodes["six"].log_events("connection_established")
    assert established and established[0]["address"].startswith("udp [::1]:")
    assert not unexpected_errors(mesh)


@pytest.mark.parametrize("victim", ["dialer", "listener"])
def test_killed_end_drops_the_link_and_restart_relinks(mesh: Mesh, victim: str) -> None:
    port = udp_port()
    mesh.add("lis", listen=False)
    mesh.add("dia", listen=False)
    udp_link(mesh, "dia", "lis", port)
    mesh.start()
    mesh.wait_converged(timeout=30)
    name = "dia" if victim == "dialer" else "lis"
    survivor = mesh.nodes["lis" if name == "dia" else "dia"]
    node = mesh.nodes[name]

    start = time.monotonic()
    node.kill()
    # UDP has no connection to break: the node's keepalive timeout has to notice.
    wait_until(lambda: not connected(survivor, name), timeout=30,
               what=f"{survivor.name} to drop the link to {name}")
    dropped = time.monotonic() - start

    start = time.monotonic()
    node.start()
    mesh.wait_converged(timeout=60)
    relinked = time.monotonic() - start
    assert survivor.routes() == {name: name}
    out = receptorctl(survivor, "ping", name, "--count", "1").decode()
    assert f"Reply from {name} in" in out
    assert not unexpected_errors(mesh)
    print(f"\nudp link: {victim} killed → link dropped after {dropped:.2f} s; "
          f"restarted → routes back after {relinked:.2f} s")
