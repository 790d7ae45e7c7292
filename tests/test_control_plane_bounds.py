"""A bounded control plane: one peer announcing 50,000 invented nodes (routing updates and
adverts) leaves a node serving, with at most ``maxnodes`` known nodes, bounded memory and a
few summary log lines.

Real ``mesh node`` processes on loopback; the flooder is a raw TCP peer speaking the link
protocol (tests/test_link_robustness.py's RawPeer).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from raw_peer import RawPeer, frame

from mesh.net import messages as m
from mesh.net.control_limits import (ADS_PER_NODE, DEFAULT_MAX_NODES, ControlCaps,
                                     ControlLimits, LIMIT_LOG_INTERVAL, AdTable)
from mesh.testing import Mesh, NodeProcess, wait_until

INVENTED = 50_000
INVENTED_ADS = 5_000


def rss_kib(node: NodeProcess) -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def invented_nodes(peer: RawPeer) -> bytes:
    """50,000 routing updates of invented nodes, each listing a link to ``peer``, and 5,000
    adverts, as one byte string of frames."""
    epoch = peer.epoch
    chunks = []
    for i in range(INVENTED):
        chunks.append(frame(m.encode_routing_update(m.RoutingUpdate(
            node_id=f"fake{i:05d}", update_id=f"{random.getrandbits(40):010x}"[:8],
            update_epoch=epoch, update_sequence=1, connections={peer.node_id: 1.0},
            forwarding_node=peer.node_id))))
    now = time.time_ns()
    for i in range(INVENTED_ADS):
        chunks.append(frame(m.encode_service_advertisement(m.ServiceAdvertisement(
            node_id=f"fake{i % 100:05d}", service=f"s{i}", time_ns=now, conn_type=1,
            tags={"type": "Control Service"}))))
    return b"".join(chunks)


# ------------------------------------------------------------------------------------------------
# the pure parts


def test_budget_and_drop_log_are_bounded() -> None:
    limits = ControlLimits(ControlCaps(max_nodes=10))
    burst = int(limits.caps.burst)
    assert all(limits.within_budget("p", 0.0) for _ in range(burst))
    assert not limits.within_budget("p", 0.0)
    assert limits.within_budget("p", 1.0)  # refilled at caps.rate per second
    logged = [limits.note_drop("p", "x", t / 100) for t in range(1000)]  # 10 s of drops
    assert logged[0] == 1 and sum(1 for n in logged if n) == 1
    assert limits.flush(LIMIT_LOG_INTERVAL + 1) == [("p", "x", 999)]
    assert limits.totals == {"x": 1000}

    # per link and origin: a node flooding as fast as its flood timer allows (10 per second,
    # a hub whose links keep changing) always passes; a flood of one node's updates does not
    assert all(limits.origin_within_budget("p", "hub", "update", t / 10) for t in range(600))
    passed = sum(limits.origin_within_budget("p", "x", "update", 100 + t / 1000)
                 for t in range(1000))
    assert passed < 100
    assert limits.origin_within_budget("q", "x", "update", 100.5)  # another link's own budget

    ads = AdTable(ControlCaps(max_nodes=10))
    for i in range(ADS_PER_NODE):
        assert not ads.refuses(("n", f"s{i}"), node_admitted=True)
        ads[("n", f"s{i}")] = i
    assert ads.refuses(("n", "more"), node_admitted=True)
    assert ads.refuses(("m", "s"), node_admitted=False)
    ads.pop(("n", "s0"))
    del ads[("n", "s1")]
    assert ads.per_node == {"n": ADS_PER_NODE - 2}


# ------------------------------------------------------------------------------------------------
# a real node flooded with invented nodes


@pytest.mark.parametrize("maxnodes", [1000, pytest.param(None, marks=pytest.mark.slow)],
                         ids=["maxnodes-1000", "default"])
def test_invented_nodes_leave_the_node_bounded_and_serving(mesh: Mesh,
                                                           maxnodes: int | None) -> None:
    target = mesh.add("target")
    if maxnodes is not None:
        target.node_extra["maxnodes"] = maxnodes
    mesh.add("left", listen=False)
    mesh.add("right", listen=False)
    mesh.link("left", "target")
    mesh.link("right", "target")
    mesh.start()
    mesh.wait_converged()
    cap = maxnodes or DEFAULT_MAX_NODES

    peer = RawPeer(mesh.ports["target"])
    try:
        assert peer.handshake() == "target"
        wait_until(lambda: "intruder" in target.routes(), timeout=15, what="route to intruder")
        peer.ping_barrier()
        before = rss_kib(target)
        flood = invented_nodes(peer)
        started = time.monotonic()
        peer.send_raw(flood)
        peer.ping_barrier(timeout=120)  # the target has handled all of it
        took = time.monotonic() - started

        status = target.status()
        after = rss_kib(target)
        growth = (after - before) / 1024
        print(f"maxnodes={cap}: {INVENTED} invented nodes handled in {took:.1f}s, "
              f"known nodes {len(status['KnownConnectionCosts'])}, adverts "
              f"{len(status['Advertisements'])}, RSS {before / 1024:.1f} -> "
              f"{after / 1024:.1f} MiB (+{growth:.1f})")
        assert len(status["KnownConnectionCosts"]) <= cap
        assert len(status["Advertisements"]) <= 4 * cap
        assert growth < (40 if cap <= 1000 else 150), f"RSS grew {growth:.1f} MiB"

        # still serving: a ping across the target, and the target's own control service
        reply = mesh.nodes["left"].control("ping right")
        assert reply["Success"] and reply["From"] == "right", reply
        assert target.alive and target.status()["NodeID"] == "target"
        limit_lines = target.log_events("control_plane_limit")
        assert 1 <= len(limit_lines) < 20, len(limit_lines)
        assert {line["peer"] for line in limit_lines} == {"intruder"}
        if maxnodes is not None:
            assert any(line["what"] == "routing update of a new node" for line in limit_lines)
    finally:
        peer.close()


def test_nodes_one_peer_keeps_reachable_do_not_lock_out_a_joining_node(mesh: Mesh) -> None:
    """At the node cap, filled by invented nodes that one peer keeps reachable (each lists
    the peer, the peer lists them all), a node joining through another link is still let in:
    the link that brought the most nodes gives one up."""
    target = mesh.add("target")
    target.node_extra["maxnodes"] = 40
    mesh.add("relay")
    mesh.link("target", "relay")
    mesh.start()
    mesh.wait_converged()
    peer = RawPeer(mesh.ports["target"])
    try:
        assert peer.handshake() == "target"
        fakes = [f"fake{i:02d}" for i in range(60)]
        peer.send(peer.routing_update({"target": 1.0, **{name: 1.0 for name in fakes}}))
        for name in fakes:
            peer.send(peer.routing_update({peer.node_id: 1.0}, node_id=name))
        peer.ping_barrier()
        wait_until(lambda: len(target.routes()) >= 37, timeout=15, what="invented nodes routed")
        assert len(target.status()["KnownConnectionCosts"]) == 40  # the cap is full

        joiner = mesh.add("joiner", listen=False)
        mesh.link("joiner", "relay")
        joiner.start()
        wait_until(lambda: "joiner" in target.routes(), timeout=30, what="a route to joiner")
        assert target.control("ping joiner")["Success"]
        assert len(target.status()["KnownConnectionCosts"]) <= 40
        assert any(line["what"] == "node forgotten for a node joining through another link"
                   for line in target.log_events("control_plane_limit", peer=peer.node_id))
    finally:
        peer.close()
