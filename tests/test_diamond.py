"""Diamond: controller01 → relayer01 (cost 1) / relayer02 (cost 2) → executor01.

Killing relayer01 moves the route to relayer02; restarting it moves the route back.
"""

from __future__ import annotations

import time

from mesh.testing import Mesh, wait_until


def test_route_fails_over_and_back(mesh: Mesh) -> None:
    mesh.add("controller01")
    mesh.add("relayer01")
    mesh.add("relayer02")
    mesh.add("executor01", listen=False)
    mesh.link("relayer01", "controller01", cost=1.0)
    mesh.link("relayer02", "controller01", cost=2.0)
    mesh.link("executor01", "relayer01")
    mesh.link("executor01", "relayer02")
    mesh.start()
    mesh.wait_converged()
    controller = mesh.nodes["controller01"]
    wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=30,
               what="route via relayer01")

    start = time.monotonic()
    mesh.nodes["relayer01"].kill()
    wait_until(lambda: controller.routes().get("executor01") == "relayer02", timeout=30,
               what="route via relayer02")
    failover = time.monotonic() - start

    start = time.monotonic()
    mesh.nodes["relayer01"].start()
    wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=60,
               what="route back via relayer01")
    failback = time.monotonic() - start
    print(f"\nroute failover after SIGKILL of relayer01: {failover:.2f} s; "
          f"failback after restart: {failback:.2f} s")
