"""Forged routing updates of another node, without route-auth: the forged node outbids them.

A raw peer linked to "target" forges "neighbour"'s routing update (neighbour's real epoch,
learned from the target's database, a higher sequence, no connections).  The target believes
it and floods it on; neighbour gets its own update back with a sequence it never sent, floods a
newer one, and the target's route to neighbour comes back.  (With route-auth the forgery is
dropped before any of this: tests/test_route_auth.py.)  A forged sequence near the top of the
sequence space (which a forger could take whole) is answered with a new epoch instead.
"""

from __future__ import annotations

import random

import pytest

from mesh.net import messages as m
from mesh.testing import Mesh, wait_until
from raw_peer import RawPeer


def neighbour_update(peer: RawPeer) -> m.RoutingUpdate:
    """neighbour's update as the target forwards it (in the database a new link gets)."""
    def wanted(message: bytes) -> bool:
        return message[:1] == bytes([m.MSG_ROUTING_UPDATE]) and \
            m.decode_routing_update(message[1:]).node_id == "neighbour"

    return m.decode_routing_update(peer.next_message(wanted, 15, "neighbour's update")[1:])


@pytest.mark.parametrize("jump", [1000, 2 ** 63])
def test_a_forged_update_is_outbid_by_its_node(mesh: Mesh, jump: int) -> None:
    target = mesh.add("target")
    neighbour = mesh.add("neighbour", listen=False)
    mesh.link("neighbour", "target")
    mesh.start()
    mesh.wait_converged()
    peer = RawPeer(mesh.ports["target"])
    try:
        assert peer.handshake() == "target"
        real = neighbour_update(peer)
        assert real.connections == {"target": 1.0}
        peer.send(m.encode_routing_update(m.RoutingUpdate(
            node_id="neighbour", update_id=f"{random.getrandbits(40):010x}"[:8],
            update_epoch=real.update_epoch, update_sequence=real.update_sequence + jump,
            connections={}, forwarding_node=peer.node_id)))
        peer.ping_barrier()  # the target has taken the forgery
        forged = wait_until(lambda: neighbour.log_events("routing_update_forged"), timeout=30,
                            what="neighbour noticing its forged update")[0]
        assert forged["peer"] == "target" and forged["level"] == "warning"
        # near the top of the sequence space it takes a new epoch instead of outbidding
        assert ("taking a new epoch" in forged["detail"]) == (jump >= 2 ** 63), forged
        wait_until(lambda: target.status()["KnownConnectionCosts"].get("neighbour")
                   == {"target": 1.0} and target.routes().get("neighbour") == "neighbour",
                   timeout=30, what="the target's record of neighbour restored")
        assert neighbour.alive and target.alive
    finally:
        peer.close()
