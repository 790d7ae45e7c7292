"""Idle means idle: keepalives only on silent links, and routing that is quiet until it changes.

Real node processes on loopback.  Keepalives are counted by the node (``stats``
``KeepalivesSent``); the routing database a new neighbour gets is seen in its ``status``.
"""

from __future__ import annotations

import threading
import time

import pytest

from mesh.net.links import KEEPALIVE_AFTER
from mesh.net.netceptor import MESH_ROUTE_REFRESH
from mesh.testing import ControlSession, Mesh, NodeProcess, wait_until


def keepalives(node: NodeProcess) -> int:
    return node.control("stats")["KeepalivesSent"]


def wait_linked(mesh: Mesh) -> None:
    mesh.start()
    mesh.wait_converged()


def test_keepalives_go_only_to_links_that_are_silent(mesh: Mesh) -> None:
    mesh.add("quiet")
    mesh.add("talker", listen=False)
    mesh.link("talker", "quiet")
    wait_linked(mesh)
    talker = mesh.nodes["talker"]

    # Idle: the link carries nothing but keepalives, one per KEEPALIVE_AFTER or so.
    window = 4 * KEEPALIVE_AFTER
    before = keepalives(talker)
    time.sleep(window)  # the figure under test is a count over time
    idle = keepalives(talker) - before
    assert idle >= 3, f"{idle} keepalives in {window:g}s of silence"

    # Busy: pings leave at least every 0.1 s, so no interval passes without traffic.
    stop = threading.Event()

    def ping_loop() -> None:
        with ControlSession(talker.socket) as session:
            while not stop.is_set():
                session.command("ping quiet")
                stop.wait(0.1)

    pinger = threading.Thread(target=ping_loop, daemon=True)
    pinger.start()
    try:
        time.sleep(1.0)  # the pings are flowing
        before = keepalives(talker)
        time.sleep(window)
        busy = keepalives(talker) - before
    finally:
        stop.set()
        pinger.join(timeout=30)
    assert busy <= 1, f"{busy} keepalives on a link that carried a ping every 0.1 s"


def test_a_new_node_gets_the_routing_database_from_its_first_neighbour(mesh: Mesh) -> None:
    # A line n1 - n2 - n3 - n4 that has converged and gone quiet.
    names = ["n1", "n2", "n3", "n4"]
    for name in names:
        mesh.add(name)
    for dialer, listener in zip(names[1:], names):
        mesh.link(dialer, listener)
    wait_linked(mesh)

    # n5 joins at the far end.  Nobody floods a fresh update because of it, except n4 and
    # n5 themselves (their links changed): n5 learns n1, n2 and n3 from n4's database.
    # The deadline falls well before the line's first periodic refresh (MESH_ROUTE_REFRESH
    # after its start), the only other way n5 could learn them.
    late = mesh.add("n5", listen=False)
    mesh.link("n5", "n4")
    late.start()
    wait_until(lambda: set(late.routes()) >= set(names) and
               set(late.status()["KnownConnectionCosts"]) >= set(names),
               timeout=MESH_ROUTE_REFRESH / 8, what="n5 to know the whole line")
    wait_until(lambda: "n5" in mesh.nodes["n1"].routes(), timeout=MESH_ROUTE_REFRESH / 8,
               what="n1 to route to n5")


def test_the_link_timeout_follows_the_keepalive_the_peer_announced() -> None:
    """Go peers: Receptor's idle timeout; mesh peers that announce their keepalive period
    (MeshKeepalive): that period plus a margin, three periods on a lossy link; mesh peers of
    an earlier version, which announce none: the timeout that version needed."""
    from types import SimpleNamespace

    from mesh.net import messages
    from mesh.net.links import LEGACY_MESH_LINK_TIMEOUT, MESH_LINK_TIMEOUT, link_timeout

    def timeout(mesh_peer: bool, keepalive: float | None, reliable: bool = True) -> float:
        link = SimpleNamespace(mesh_peer=mesh_peer, peer_keepalive=keepalive,
                               session=SimpleNamespace(reliable=reliable))
        return link_timeout(link, 21.0)  # type: ignore[arg-type]

    assert timeout(False, None) == 21.0
    assert timeout(True, None) == LEGACY_MESH_LINK_TIMEOUT
    assert timeout(True, KEEPALIVE_AFTER) == pytest.approx(MESH_LINK_TIMEOUT)
    assert timeout(True, KEEPALIVE_AFTER, reliable=False) == pytest.approx(3 * KEEPALIVE_AFTER)
    update = messages.RoutingUpdate("a", "u", 1, 1, {}, "a", max_datagram=60000,
                                    keepalive_ms=1200)
    decoded = messages.decode_routing_update(messages.encode_routing_update(update)[1:])
    assert decoded.keepalive_ms == 1200
