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
from mesh.testing import Mesh, NodeProcess, wait_until
from raw_peer import RawPeer


def neighbour_update(peer: RawPeer) -> m.RoutingUpdate:
    """neighbour's update as the target forwards it (in the database a new link gets)."""
    def wanted(message: bytes) -> bool:
        return message[:1] == bytes([m.MSG_ROUTING_UPDATE]) and \
            m.decode_routing_update(message[1:]).node_id == "neighbour"

    return m.decode_routing_update(peer.next_message(wanted, 15, "neighbour's update")[1:])


def linked_pair(mesh: Mesh) -> tuple[NodeProcess, NodeProcess, RawPeer, m.RoutingUpdate]:
    """neighbour - target - raw peer; and neighbour's real update, as the peer got it."""
    target = mesh.add("target")
    neighbour = mesh.add("neighbour", listen=False)
    mesh.link("neighbour", "target")
    mesh.start()
    mesh.wait_converged()
    peer = RawPeer(mesh.ports["target"])
    try:
        assert peer.handshake() == "target"
        return target, neighbour, peer, neighbour_update(peer)
    except BaseException:
        peer.close()
        raise


def forge(peer: RawPeer, *, epoch: int, sequence: int) -> None:
    """Send neighbour's routing update with ``epoch`` and ``sequence``, and no links."""
    peer.send(m.encode_routing_update(m.RoutingUpdate(
        node_id="neighbour", update_id=f"{random.getrandbits(40):010x}"[:8],
        update_epoch=epoch, update_sequence=sequence, connections={},
        forwarding_node=peer.node_id)))


@pytest.mark.parametrize("jump", [1000, 2 ** 63])
def test_a_forged_update_is_outbid_by_its_node(mesh: Mesh, jump: int) -> None:
    target, neighbour, peer, real = linked_pair(mesh)
    try:
        assert real.connections == {"target": 1.0}
        forge(peer, epoch=real.update_epoch, sequence=real.update_sequence + jump)
        peer.ping_barrier()  # the target has taken the forgery
        forged = wait_until(lambda: neighbour.log_events("routing_update_forged"), timeout=30,
                            what="neighbour noticing its forged update")[0]
        assert forged["peer"] == "target" and forged["level"] == "warning"
        # near the top of the sequence space it takes a new epoch instead of outbidding
        assert ("taking a new epoch" in forged["detail"]) == (jump >= 2 ** 63), forged
        wait_until(lambda: target.status()["KnownConnectionCosts"].get("neighbour")
                   == {"target": 1.0} and target.routes().get("neighbour") == "neighbour",
                   timeout=30, what="the target's record of neighbour restored")
        if jump >= 2 ** 63:
            # the next epoch, not a clock reading: an instance of "neighbour" started after
            # this process must stay the newer one (it is the one that stops)
            def renewed(message: bytes) -> bool:
                if message[:1] != bytes([m.MSG_ROUTING_UPDATE]):
                    return False
                update = m.decode_routing_update(message[1:])
                return update.node_id == "neighbour" and update.update_epoch != real.update_epoch

            update = m.decode_routing_update(peer.next_message(renewed, 15, "renewed update")[1:])
            assert update.update_epoch == real.update_epoch + 1
        assert neighbour.alive and target.alive
    finally:
        peer.close()


def test_ever_newer_forged_epochs_do_not_keep_a_record_hijacked(mesh: Mesh) -> None:
    """A forger sends neighbour's update with a new, higher epoch again and again (each one a
    "newer instance" that every node believes).  neighbour answers the epochs it heard with
    its settle update, and the target gives the record back to neighbour although an even
    newer forged epoch holds it (Receptor restores only the very epoch named)."""
    target, neighbour, peer, real = linked_pair(mesh)
    try:
        for step in range(1, 9):
            forge(peer, epoch=real.update_epoch + step * 1000, sequence=1)
        peer.ping_barrier()  # the target has taken every forgery
        wait_until(lambda: neighbour.log_events("duplicate_node_id_detected"), timeout=30,
                   what="neighbour hearing the forged newer epochs")
        wait_until(lambda: target.status()["KnownConnectionCosts"].get("neighbour")
                   == {"target": 1.0}, timeout=20, what="the target's record of neighbour restored")
        assert neighbour.alive and target.alive
    finally:
        peer.close()


def test_a_forger_repeating_one_newer_epoch_cannot_take_the_record_back(mesh: Mesh) -> None:
    """Once neighbour has settled the forged newer epoch, the target ignores further updates
    with that epoch (the forger's higher sequences), so the record stays neighbour's."""
    target, neighbour, peer, real = linked_pair(mesh)
    try:
        forged_epoch = real.update_epoch + 1000
        forge(peer, epoch=forged_epoch, sequence=1)
        peer.ping_barrier()
        wait_until(lambda: target.status()["KnownConnectionCosts"].get("neighbour")
                   == {"target": 1.0}, timeout=20, what="the target's record of neighbour restored")
        for sequence in range(2, 7):
            forge(peer, epoch=forged_epoch, sequence=sequence)
            peer.ping_barrier()  # the target has handled it
            assert target.status()["KnownConnectionCosts"].get("neighbour") == \
                {"target": 1.0}, f"the forged update {sequence} took the record"
        assert neighbour.alive and target.alive
    finally:
        peer.close()
