"""Who may link to whom: duplicate node IDs, allowedpeers, cost agreement, IPv6 and redial.

Every test runs real ``mesh node`` processes on loopback and reads their JSON log files.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from mesh.testing import Mesh, NodeProcess, free_port, wait_until


def peers(node: NodeProcess) -> dict[str, float]:
    return {c["NodeID"]: c["Cost"] for c in node.status()["Connections"]}


def ping(node: NodeProcess, target: str) -> dict[str, Any]:
    return node.control(f"ping {target}")


# ------------------------------------------------------------------------------------------------
# (a) duplicate node IDs


def test_duplicate_node_id_newer_node_stops_with_exit_code_3(mesh: Mesh) -> None:
    """dup(1) - relay - relay2 - dup(2): the newer "dup" is told to stop and exits with 3.

    The second "dup" links to a different relay: a node refuses a second link from a node ID it
    is already linked to (see the next test), so the two would never learn about each other.
    While it ran, the second "dup"'s update made relay2 drop relay's edge to "dup" (§2.3).  In
    Receptor the route comes back with relay's next periodic update (<= 10 s); here every node
    that sees the first "dup" settle the conflict (its update with SuspectedDuplicate) floods
    its own update again, relay's edge to "dup" included.
    """
    mesh.add("relay")
    mesh.add("relay2")
    first = mesh.add("dup", listen=False)
    mesh.link("dup", "relay")
    mesh.link("relay2", "relay")
    mesh.start()
    mesh.wait_converged()

    second = NodeProcess("dup", mesh.workdir / "dup-second",
                         [{"tcp-peer": {"address": f"127.0.0.1:{mesh.ports['relay2']}"}}])
    mesh.nodes["dup-second"] = second  # stopped and removed by the fixture
    second.start(wait=False)
    assert second.proc is not None
    code = second.proc.wait(timeout=60)
    assert code == 3, f"exit code {code}: {second.log_tail()}"
    assert not second.socket.exists(), "a node stopped as a duplicate removes its control socket"

    stopped = second.log_events("duplicate_node_id")
    assert stopped, second.log_tail()
    assert stopped[0]["node_id"] == "dup"
    assert stopped[0]["level"] == "error"
    assert second.log_events("node_stopping", reason="duplicate node ID")
    assert first.log_events("duplicate_node_id_detected", node_id="dup")

    # The first "dup" is unharmed and reachable again through the relays.
    assert first.alive
    assert peers(first) == {"relay": 1}
    relay, relay2 = mesh.nodes["relay"], mesh.nodes["relay2"]
    wait_until(lambda: relay.routes().get("dup") == "dup", timeout=30, what="relay → dup")
    wait_until(lambda: relay2.routes().get("dup") == "relay", timeout=30,
               what="relay2 → dup via relay")
    wait_until(lambda: first.routes().get("relay2") == "relay", timeout=30,
               what="dup → relay2 via relay")
    wait_until(lambda: ping(relay2, "dup").get("Success"), timeout=30,
               what="ping from relay2 to the first dup")
    assert ping(relay2, "dup")["From"] == "dup"


def test_second_link_with_the_same_node_id_is_rejected(mesh: Mesh) -> None:
    """A second "dup" dialing the same relay is refused ("already connected"), keeps running."""
    mesh.add("relay")
    first = mesh.add("dup", listen=False)
    mesh.link("dup", "relay")
    mesh.start()
    mesh.wait_converged()

    second = NodeProcess("dup", mesh.workdir / "dup-second",
                         [{"tcp-peer": {"address": f"127.0.0.1:{mesh.ports['relay']}"}}])
    mesh.nodes["dup-second"] = second
    second.start()
    relay = mesh.nodes["relay"]
    relay.wait_for_event("link_rejected", count=2, peer="dup", reason="already connected to dup")
    assert second.log_events("link_rejected_by_peer") or \
        second.log_events("connection_lost", reason="remote node rejected the connection")
    assert second.alive and first.alive
    assert peers(relay) == {"dup": 1}
    assert not relay.log_events("connection_lost", peer="dup")
    assert not first.log_events("connection_lost")
    assert ping(relay, "dup")["Success"]


# ------------------------------------------------------------------------------------------------
# (b) allowedpeers


def test_allowedpeers_admits_only_listed_nodes(mesh: Mesh) -> None:
    gate = mesh.add("gate")
    gate.sections[0]["tcp-listener"]["allowedpeers"] = ["friend"]
    mesh.add("friend", listen=False)
    stranger = mesh.add("stranger", listen=False)
    mesh.link("friend", "gate")
    mesh.link("stranger", "gate")
    # allowedpeers on the dialing side: "picky" only accepts a node that "open" is not.
    mesh.add("open")
    picky = mesh.add("picky", listen=False)
    mesh.link("picky", "open")
    picky.sections[-1]["tcp-peer"]["allowedpeers"] = ["someone-else"]
    mesh.start()

    wait_until(lambda: peers(gate) == {"friend": 1}, timeout=30, what="friend linked to gate")
    wait_until(lambda: gate.routes() == {"friend": "friend"}, timeout=30, what="gate routes")
    # The stranger is turned away on every redial, and the gate never lets it in.
    gate.wait_for_event("link_rejected", count=2, peer="stranger",
                   reason="peer not in allowedpeers")
    wait_until(lambda: stranger.log_events("link_rejected_by_peer")
               or stranger.log_events("connection_lost",
                           reason="remote node rejected the connection"),
               timeout=30, what="stranger sees the rejection")
    assert not gate.log_events("connection_established", peer="stranger")
    assert "stranger" not in gate.status()["KnownConnectionCosts"]
    assert peers(gate) == {"friend": 1}
    assert stranger.alive

    # The dialer's own allowedpeers list works the same way.
    picky.wait_for_event("link_rejected", count=2, peer="open", reason="peer not in allowedpeers")
    assert not picky.log_events("connection_established")
    assert peers(picky) == {}
    assert "picky" not in peers(mesh.nodes["open"])


# ------------------------------------------------------------------------------------------------
# (c) cost agreement


def test_link_costs_must_agree(mesh: Mesh) -> None:
    hub = mesh.add("hub")
    mesh.add("agree", listen=False)
    disagree = mesh.add("disagree", listen=False)
    mesh.link("agree", "hub", cost=2.5)  # hub gets nodecost {agree: 2.5}
    hub.sections[0]["tcp-listener"]["nodecost"]["disagree"] = 1.5
    disagree.sections.append({"tcp-peer": {"address": f"127.0.0.1:{mesh.ports['hub']}",
                                           "cost": 3.0}})
    mesh.start()

    wait_until(lambda: peers(hub).get("agree") == 2.5, timeout=30, what="agree linked at 2.5")
    wait_until(lambda: peers(mesh.nodes["agree"]) == {"hub": 2.5}, timeout=30,
               what="agree's side at 2.5")
    wait_until(lambda: hub.status()["KnownConnectionCosts"].get("agree") == {"hub": 2.5},
               timeout=30, what="agree's update with cost 2.5")
    # Routes are computed ~100 ms after a link comes up, on each side.
    wait_until(lambda: hub.routes().get("agree") == "agree"
               and mesh.nodes["agree"].routes() == {"hub": "hub"}, timeout=30,
               what="routes between hub and agree")

    def disagreement() -> list[dict[str, Any]]:
        return [e for node in (hub, disagree) for e in node.log_events(
            "link_rejected",
            reason=lambda r: isinstance(r, str) and "we disagree about the connection cost" in r)]

    found = wait_until(disagreement, timeout=30, what="cost disagreement teardown")
    assert found[0]["peer"] in ("hub", "disagree")
    assert {"1.5", "3.0"} <= set(found[0]["reason"].replace(",", " ").replace(")", " ").split())
    hub.wait_for_event("connection_lost", peer="disagree")
    assert not hub.log_events("connection_lost", peer="agree")
    assert ping(hub, "agree")["Success"]


# ------------------------------------------------------------------------------------------------
# (d) IPv6


def _free_v6_port() -> int:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
            return sock.getsockname()[1]
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")


def test_link_over_ipv6_loopback(mesh: Mesh) -> None:
    port = _free_v6_port()
    six = mesh.add("six", listen=False,
                   sections=[{"tcp-listener": {"port": port, "bindaddr": "::1"}}])
    dialer = mesh.add("dialer6", listen=False,
                      sections=[{"tcp-peer": {"address": f"[::1]:{port}"}}])
    mesh.start()
    mesh.wait_converged()
    assert peers(six) == {"dialer6": 1}
    assert peers(dialer) == {"six": 1}
    established = six.wait_for_event("connection_established", peer="dialer6")
    assert "::1" in established[0]["address"]
    reply = ping(dialer, "six")
    assert reply["Success"] and reply["From"] == "six"


# ------------------------------------------------------------------------------------------------
# (e) redial until a listener appears


def test_peer_redials_until_listener_appears(mesh: Mesh) -> None:
    port = free_port()
    early = mesh.add("early", listen=False,
                     sections=[{"tcp-peer": {"address": f"127.0.0.1:{port}"}}])
    early.start()
    failures = early.wait_for_event("backend_dial_failed", count=2,
                              backend=f"tcp-peer 127.0.0.1:{port}")
    for failure in failures:
        assert isinstance(failure["retry_in"], (int, float)) and failure["retry_in"] > 0
        assert failure["error"]
    assert failures[1]["retry_in"] > failures[0]["retry_in"] * 0.5  # backoff, with jitter
    assert early.alive and peers(early) == {}

    late = mesh.add("late", listen=False,
                    sections=[{"tcp-listener": {"port": port, "bindaddr": "127.0.0.1"}}])
    late.start()
    wait_until(lambda: peers(early) == {"late": 1}, timeout=60, what="link after the listener "
               "appeared")
    wait_until(lambda: early.routes() == {"late": "late"}, timeout=30, what="route to late")
    assert ping(early, "late")["Success"]
    assert peers(late) == {"early": 1}


def test_node_hash_collision_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two node IDs with one 64-bit hash (forced here: a real one takes ~2^32 names) are an
    error in the log, where Receptor silently sends the second node's traffic to the first."""
    from structlog.testing import capture_logs

    from mesh.net import netceptor
    from mesh.net.endpoint import RouteError

    monkeypatch.setattr(netceptor, "node_hash", lambda node: 42)
    net = netceptor.Netceptor("alpha")
    with capture_logs() as events:
        try:  # with beta's hash taken by alpha, the message is alpha's own
            net.send_datagram(b"x", "beta", "ping", from_service="test")
        except RouteError:
            pass
    (collision,) = [e for e in events if e["event"] == "node_hash_collision"]
    assert (collision["peer"], collision["known"]) == ("beta", "alpha")
    assert "rename one" in collision["detail"]
