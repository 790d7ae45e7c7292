"""A flapping relay must not cause a routing storm.

The bound: every node originates at most one routing update per coalescing window (0.1 s)
plus the 10 s refresh, and re-floods each update once per link, so on the diamond a node
receives at most about (nodes × links × 10) updates per second however fast a link flaps.
We flap relayer01 (SIGKILL, restart) and require the controller to stay far below that:
at most 40 routing updates per second on average over the flapping period.
"""

from __future__ import annotations

import time

from demo_topologies import build_diamond
from mesh.testing import Mesh, wait_until

FLAPS = 6
BOUND_PER_SECOND = 40.0


def test_flapping_relay_keeps_routing_updates_bounded(mesh: Mesh) -> None:
    build_diamond(mesh)
    mesh.start()
    mesh.wait_converged()
    controller = mesh.nodes["controller01"]
    relay = mesh.nodes["relayer01"]
    before = controller.control("stats")["RoutingUpdatesReceived"]
    start = time.monotonic()
    for _ in range(FLAPS):
        relay.kill()
        wait_until(lambda: "relayer01" not in controller.routes(), timeout=30,
                   what="relayer01 gone")
        relay.start()
        wait_until(lambda: controller.routes().get("relayer01") == "relayer01", timeout=30,
                   what="relayer01 back")
    elapsed = time.monotonic() - start
    received = controller.control("stats")["RoutingUpdatesReceived"] - before
    rate = received / elapsed
    print(f"\n{FLAPS} flaps in {elapsed:.1f} s: {received} routing updates received by "
          f"controller01 ({rate:.1f}/s, bound {BOUND_PER_SECOND}/s)")
    assert rate <= BOUND_PER_SECOND
    wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=30,
               what="final route via relayer01")
