"""Duplicate node IDs: one forged accusation raises an alarm but never stops a node; a genuine
duplicate (an older live node with the same ID) still makes the newer one stop.

Real ``mesh node`` processes on loopback; the forger is a raw TCP peer speaking the link
protocol (tests/test_link_robustness.py's RawPeer).
"""

from __future__ import annotations

import random
import re
import time
import urllib.error
import urllib.request
from typing import Any

from raw_peer import RawPeer

from mesh.net import messages as m
from mesh.net.duplicate_watch import (EVIDENCE_SPAN, EVIDENCE_UPDATES, MAX_EPOCHS, SETTLE_DURATION,
                                      SETTLE_GAP, SETTLE_INTERVAL, DuplicateWatch)
from mesh.testing import Mesh, NodeProcess, free_port, wait_until


def scrape(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} not in metrics"
    return float(match.group(1))


def events(node: NodeProcess, event: str, **fields: Any) -> list[dict[str, Any]]:
    return node.log_events(event, **fields)


def target_update(peer: RawPeer, min_sequence: int = 0, timeout: float = 15.0) -> m.RoutingUpdate:
    """The next routing update originated by the target (with a sequence > ``min_sequence``)."""
    def wanted(message: bytes) -> bool:
        if message[:1] != bytes([m.MSG_ROUTING_UPDATE]):
            return False
        update = m.decode_routing_update(message[1:])
        return update.node_id == peer.peer_id and update.update_sequence > min_sequence

    return m.decode_routing_update(peer.next_message(wanted, timeout, "target's update")[1:])


# ------------------------------------------------------------------------------------------------
# the pure bookkeeping


def test_watch_needs_several_updates_over_time_and_bounds_settling() -> None:
    watch = DuplicateWatch("n", own_epoch=1000)
    assert watch.accused(peer="p", epoch=900, now=0.0).reassert
    later = watch.accused(peer="p", epoch=900, now=1.0)
    assert not later.reassert and later.reassert_in == 4.0  # rate-limited, then again
    assert watch.alarm(2.0) and "peer p" in watch.alarm(2.0)
    # one burst of many updates, or replays of one, prove nothing
    assert not any(watch.heard_older(peer="p", epoch=900, sequence=s, now=0.1 * s,
                                     accuses_us=True) for s in range(1, 20))
    assert not any(watch.heard_older(peer="q", epoch=800, sequence=5, now=float(t),
                                     accuses_us=True) for t in range(0, 30, 5))
    steps = [EVIDENCE_SPAN * i / (EVIDENCE_UPDATES - 1) for i in range(EVIDENCE_UPDATES)]
    # the older process's own updates (replayable: under route-auth they still verify) do not
    assert not any(watch.heard_older(peer="x", epoch=600, sequence=i + 1, now=50.0 + t,
                                     accuses_us=False) for i, t in enumerate(steps))
    # EVIDENCE_UPDATES increasing sequences over EVIDENCE_SPAN seconds that accuse us do
    verdicts = [watch.heard_older(peer=peer, epoch=700, sequence=i + 1, now=100.0 + t,
                                  accuses_us=True)
                for i, (t, peer) in enumerate(zip(steps, ["x", "y", "x"]))]
    assert verdicts[-1] and not any(verdicts[:-1])
    assert "heard via peers x, y" in watch.stop_message(700)
    # the older side: each newer epoch it tracks is answered SETTLE_GAP apart, the smallest
    # first; then one settle update per interval in all while they are heard
    sent = []
    for epoch in range(2000, 2050):  # a flood of invented newer epochs
        watch.heard_newer(peer="p", epoch=epoch, sequence=1, now=200.0)
    for tick in range(0, 400):
        now = 200.0 + tick / 2
        epoch = watch.settle_due(now)
        if epoch:
            sent.append((now, epoch))
    assert sent[:MAX_EPOCHS] == [(200.0 + SETTLE_GAP * i, 2000 + i) for i in range(MAX_EPOCHS)]
    assert len(sent) <= SETTLE_DURATION / SETTLE_INTERVAL + 1 + MAX_EPOCHS
    later = [at for at, _ in sent[MAX_EPOCHS - 1:]]
    assert all(b - a >= SETTLE_INTERVAL for a, b in zip(later, later[1:]))
    # a forger repeating one epoch with higher sequences is answered each time (SETTLE_GAP
    # after the last answer), for as long as it keeps sending
    watch = DuplicateWatch("n", own_epoch=1000)
    answers = []
    for second in range(0, 120):
        watch.heard_newer(peer="p", epoch=3000, sequence=second + 1, now=float(second))
        if watch.settle_due(float(second) + SETTLE_GAP):
            answers.append(second)
    assert answers == list(range(0, 120))
    assert watch.next_settle_in(500.0) is None


# ------------------------------------------------------------------------------------------------
# (a) a single forged accusation


def test_forged_accusation_raises_an_alarm_and_the_node_keeps_serving(mesh: Mesh) -> None:
    port = free_port()
    target = mesh.add("target", sections=[{"metrics": {"port": port}}])
    mesh.add("neighbour", listen=False)
    mesh.link("neighbour", "target")
    mesh.start()
    mesh.wait_converged()
    assert scrape(port, "/health") == (200, "ok\n")

    peer = RawPeer(mesh.ports["target"])
    try:
        assert peer.handshake() == "target"
        own = target_update(peer)  # every node learns the target's epoch from its floods
        wait_until(lambda: "intruder" in target.routes(), timeout=15, what="route to intruder")
        peer.ping_barrier()
        peer.sequence += 1
        peer.send(m.encode_routing_update(m.RoutingUpdate(
            node_id="target", update_id=f"{random.getrandbits(40):010x}"[:8],
            update_epoch=own.update_epoch - 12345, update_sequence=1, connections={},
            forwarding_node="intruder", suspected_duplicate=own.update_epoch)))
        peer.ping_barrier()  # the target has handled the accusation

        # It floods its own fresh update at once, so that others restore their record of it.
        fresh = target_update(peer, own.update_sequence, timeout=10)
        assert fresh.update_epoch == own.update_epoch and not fresh.suspected_duplicate
        alarm = wait_until(lambda: events(target, "duplicate_node_id_suspected"), timeout=15,
                           what="duplicate_node_id_suspected")[0]
        assert (alarm["level"], alarm["peer"]) == ("error", "intruder")

        # still running and serving: status, a ping through the mesh, and in-band
        assert target.alive, target.log_tail()
        assert target.status()["NodeID"] == "target"
        reply = mesh.nodes["neighbour"].control("ping target")
        assert reply["Success"] and reply["From"] == "target"
        peer.ping_barrier()
        assert not events(target, "node_stopping") and not events(target, "duplicate_node_id")

        status, body = scrape(port, "/health")
        assert status == 200
        assert body.startswith("degraded\nduplicate_node_id: ") and "intruder" in body, body
        metrics = scrape(port, "/metrics")[1]
        assert sample(metrics, "mesh_alarm", 'node="target",alarm="duplicate_node_id"') == 1
        assert sample(metrics, "mesh_duplicate_id_suspicions_total", 'node="target"') == 1
    finally:
        peer.close()
    assert target.alive


# ------------------------------------------------------------------------------------------------
# (b) a genuine duplicate


def test_genuine_duplicate_the_newer_node_stops_and_names_the_fix(mesh: Mesh) -> None:
    """dup(1) - hub - {relay2, relay3} - dup(2): the second "dup" hears the first's settle
    updates through both relays and stops within ~30 s; the first keeps running."""
    mesh.add("hub")
    mesh.add("relay2")
    mesh.add("relay3")
    first = mesh.add("dup", listen=False)
    mesh.link("dup", "hub")
    mesh.link("relay2", "hub")
    mesh.link("relay3", "hub")
    mesh.start()
    mesh.wait_converged()

    second = NodeProcess("dup", mesh.workdir / "dup-second",
                         [{"tcp-peer": {"address": f"127.0.0.1:{mesh.ports['relay2']}"}},
                          {"tcp-peer": {"address": f"127.0.0.1:{mesh.ports['relay3']}"}}])
    mesh.nodes["dup-second"] = second  # stopped and removed by the fixture
    started = time.monotonic()
    second.start(wait=False)
    assert second.proc is not None
    code = second.proc.wait(timeout=90)
    took = time.monotonic() - started
    print(f"the newer duplicate stopped after {took:.1f}s")
    assert code == 3, f"exit code {code}: {second.log_tail()}"
    assert took < 45, f"took {took:.1f}s"

    (stopped,) = events(second, "duplicate_node_id")
    detail = stopped["detail"]
    assert detail.startswith("another node with node ID dup (epoch ")
    assert "was running first: give this node another id in its node section, or stop the " \
           "other one" in detail
    assert re.search(r"heard via peers (relay2, relay3|relay3, relay2)\)", detail) or \
        re.search(r"heard via peers relay[23]\)", detail), detail
    assert events(second, "node_stopping", reason="duplicate node ID")
    assert events(first, "duplicate_node_id_detected", node_id="dup")
    assert not events(first, "duplicate_node_id")

    assert first.alive
    hub = mesh.nodes["hub"]
    wait_until(lambda: hub.routes().get("dup") == "dup", timeout=30, what="hub → dup")
    wait_until(lambda: mesh.nodes["relay3"].control("ping dup").get("Success"), timeout=30,
               what="ping from relay3 to the first dup")
