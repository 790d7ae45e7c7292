"""A withdrawn service stays withdrawn: a replay of its older advert is dropped, not stored and
not flooded on (Receptor forgets a service at its cancel, so the replay brings it back).

The pure tombstone table first, then a real ``mesh node`` process with two raw link-protocol
peers (tests/raw_peer.py): "intruder" advertises, withdraws and replays a service of its own,
"watcher" sees what the node floods on.
"""

from __future__ import annotations

import time

from raw_peer import RawPeer

from mesh.net import messages as m
from mesh.net.control_limits import ADS_PER_NODE, AdTombstones, ControlCaps
from mesh.testing import Mesh, wait_until

SERVICE = "replayed"


# ------------------------------------------------------------------------------------------------
# the pure part


def test_tombstones_cover_older_times_and_are_bounded_and_expire() -> None:
    stones = AdTombstones(ControlCaps(max_nodes=10))  # max_ads = 40
    stones.add(("n", "s"), 100, now=0.0)
    assert stones.covers(("n", "s"), 100) and stones.covers(("n", "s"), 99)
    assert not stones.covers(("n", "s"), 101) and not stones.covers(("n", "t"), 1)
    stones.discard(("n", "s"))
    assert not stones.covers(("n", "s"), 1) and len(stones) == 0

    # per node: the node's oldest goes first
    for i in range(ADS_PER_NODE + 1):
        stones.add(("n", f"s{i}"), 1, now=float(i))
    assert len(stones) == ADS_PER_NODE
    assert not stones.covers(("n", "s0"), 1) and stones.covers(("n", f"s{ADS_PER_NODE}"), 1)
    # in all: the oldest of all goes first
    for i in range(20):
        stones.add((f"m{i}", "s"), 1, now=100.0 + i)
    assert len(stones) == 40
    assert not stones.covers(("n", "s1"), 1) and stones.covers(("m19", "s"), 1)

    # expiry by age (oldest first) and by forgotten node
    stones.sweep(110.0, max_age=5.0, forgotten={"m19"})
    assert all(not stones.covers(("n", f"s{i}"), 1) for i in range(ADS_PER_NODE + 1))
    assert [i for i in range(20) if stones.covers((f"m{i}", "s"), 1)] == list(range(5, 19))
    stones.sweep(1000.0, max_age=5.0)
    assert len(stones) == 0


# ------------------------------------------------------------------------------------------------
# a real node


def advert(node_id: str, time_ns: int, *, cancel: bool = False) -> bytes:
    return m.encode_service_advertisement(m.ServiceAdvertisement(
        node_id=node_id, service=SERVICE, time_ns=time_ns, conn_type=1,
        tags=None if cancel else {"type": "replay test"}, cancel=cancel))


def listed(target_status: dict, node_id: str) -> bool:
    return any(ad["NodeID"] == node_id and ad["Service"] == SERVICE
               for ad in target_status["Advertisements"])


def flooded(watcher: RawPeer, node_id: str) -> list[tuple[int, bool]]:
    """(time_ns, cancel) of the adverts of SERVICE the target has sent to ``watcher``, each
    once (the database a new link gets may repeat one flooded just before)."""
    watcher.ping_barrier()  # the target's forwards were queued before its reply
    found = []
    while True:
        try:
            raw = watcher.next_message(
                lambda msg: msg[:1] == bytes([m.MSG_SERVICE_ADVERTISEMENT]), timeout=0.01)
        except TimeoutError:
            return found
        ad = m.decode_service_advertisement(raw[1:])
        if ad.node_id == node_id and ad.service == SERVICE and \
                (ad.time_ns, ad.cancel) not in found:
            found.append((ad.time_ns, ad.cancel))


def test_a_replayed_advert_of_a_withdrawn_service_stays_dropped(mesh: Mesh) -> None:
    target = mesh.add("target")
    mesh.start()
    # (a node answers its control socket before its listeners are bound)
    wait_until(lambda: target.log_events("node_started"), timeout=30, what="target listening")
    watcher = RawPeer(mesh.ports["target"], node_id="watcher")
    intruder = RawPeer(mesh.ports["target"])
    try:
        assert watcher.handshake() == "target"
        assert intruder.handshake() == "target"
        origin = intruder.node_id
        t0 = time.time_ns()

        intruder.send(advert(origin, t0))
        intruder.ping_barrier()
        assert listed(target.status(), origin)
        intruder.send(advert(origin, t0 + 1000, cancel=True))
        intruder.ping_barrier()
        assert not listed(target.status(), origin)
        assert flooded(watcher, origin) == [(t0, False), (t0 + 1000, True)]

        # the replay of the older advert, and of the cancel, change nothing and go nowhere
        intruder.send(advert(origin, t0))
        intruder.ping_barrier()
        assert not listed(target.status(), origin)
        assert flooded(watcher, origin) == []
        intruder.send(advert(origin, t0 + 1000, cancel=True))
        intruder.ping_barrier()
        assert flooded(watcher, origin) == []

        # a genuinely newer advert brings the service back, and is flooded on
        intruder.send(advert(origin, t0 + 2000))
        intruder.ping_barrier()
        assert listed(target.status(), origin)
        assert flooded(watcher, origin) == [(t0 + 2000, False)]
        assert target.alive and target.status()["NodeID"] == "target"
    finally:
        intruder.close()
        watcher.close()
