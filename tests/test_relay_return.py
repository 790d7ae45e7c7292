"""Liveness and redial on the diamond (controller01 → relayer01 cost 1 / relayer02 cost 2 →
executor01, executor01 dials both relays), read from the nodes' JSON logs.

* a silent relay (SIGSTOP) is declared dead within the 2.5 s target;
* a link that had settled is redialed after a quarter of a second when it ends, not after
  the backoff's first second;
* while a lost neighbour's host refuses dials (the node is restarting), they are repeated
  every quarter second;
* a relay that returns is redialed as soon as the executor hears of it through the rest of
  the mesh, not when its backoff (grown while the relay was away) runs out.
"""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Any

from demo_topologies import build_diamond
from mesh.testing import Mesh, NodeProcess, wait_until

#: Longer than a link must have been up to be redialed quickly (``Backoff.settled``).
SETTLED = 1.5


def started(mesh: Mesh) -> Mesh:
    build_diamond(mesh)
    mesh.start()
    mesh.wait_converged()
    wait_until(lambda: mesh.nodes["controller01"].routes().get("executor01") == "relayer01",
               timeout=30, what="controller01's route via relayer01")
    return mesh


def at(event: dict[str, Any]) -> float:
    """The wall-clock time of a log event."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def events_since(node: NodeProcess, since: float, event: str,
                 **fields: Any) -> list[dict[str, Any]]:
    return [e for e in node.log_events(event, **fields) if at(e) >= since]


def test_a_silent_relay_is_declared_dead_within_the_target(mesh: Mesh) -> None:
    started(mesh)
    controller, relay = mesh.nodes["controller01"], mesh.nodes["relayer01"]
    stopped_at = time.time()
    relay.signal(signal.SIGSTOP)
    try:
        lost = wait_until(lambda: events_since(controller, stopped_at, "connection_lost",
                                               peer="relayer01"),
                          timeout=30, what="controller01 to drop its link to relayer01")[0]
        # the 2 s timeout itself (the time it took is a figure of bench/resilience_bench.py)
        assert lost["reason"] == "idle timeout (2s without traffic)", lost
        wait_until(lambda: controller.routes().get("executor01") == "relayer02", timeout=30,
                   what="controller01's route via relayer02")
    finally:
        relay.signal(signal.SIGCONT)


def kill_settled_relay(mesh: Mesh) -> tuple[NodeProcess, float]:
    """Start the diamond, let executor01's link to relayer01 settle, SIGKILL relayer01:
    (executor01, when it was killed)."""
    started(mesh)
    executor, relay = mesh.nodes["executor01"], mesh.nodes["relayer01"]
    linked = executor.log_events("connection_established", peer="relayer01")[-1]
    wait_until(lambda: time.time() - at(linked) > SETTLED, timeout=30,
               what="the link to relayer01 to settle")
    killed_at = time.time()
    relay.kill()
    return executor, killed_at


def test_a_settled_link_is_redialed_quickly_when_it_ends(mesh: Mesh) -> None:
    executor, killed_at = kill_settled_relay(mesh)
    ended = wait_until(lambda: events_since(executor, killed_at, "backend_session_ended",
                                            peer="relayer01"),
                       timeout=30, what="executor01's session with relayer01 to end")[0]
    assert ended["retry_in"] < 0.5, ended


def test_a_refused_dial_after_a_settled_link_is_repeated_quickly(mesh: Mesh) -> None:
    """While the lost neighbour's host refuses (the node is restarting), the dialer tries
    every quarter second instead of backing off to seconds, logging one warning a second."""
    executor, killed_at = kill_settled_relay(mesh)
    address = f"127.0.0.1:{mesh.ports['relayer01']}"
    failures = wait_until(
        lambda: (f := events_since(executor, killed_at, "backend_dial_failed",
                                   peer=address)) and len(f) >= 8 and f,
        timeout=30, what="executor01 to fail eight dials to relayer01")[:8]
    assert all(f["retry_in"] <= 0.3 for f in failures), failures  # 0.25 s ±20 %
    assert sum(f["level"] == "warning" for f in failures) <= 2, failures  # others at debug


def test_a_returning_relay_is_redialed_as_soon_as_it_is_heard_of(mesh: Mesh) -> None:
    started(mesh)
    controller, executor = mesh.nodes["controller01"], mesh.nodes["executor01"]
    relay = mesh.nodes["relayer01"]
    address = f"127.0.0.1:{mesh.ports['relayer01']}"
    killed_at = time.time()
    relay.kill()
    # Let executor01's backoff grow to 3 s or more, then bring the relay back right after a
    # failed dial: without word from the mesh, the next dial would come 3 s later.
    failed = wait_until(lambda: [e for e in events_since(executor, killed_at,
                                                         "backend_dial_failed", peer=address)
                                 if e["retry_in"] >= 3.0],
                        timeout=60, what="executor01's redial backoff to reach 3 s")[0]
    relay.start(wait=False)
    relinked = wait_until(lambda: events_since(executor, at(failed), "connection_established",
                                               peer="relayer01"),
                          timeout=60, what="executor01 to link to relayer01 again")[0]
    assert at(relinked) < at(failed) + failed["retry_in"], \
        f"redialed {at(relinked) - at(failed):.2f} s after a failed dial whose backoff was " \
        f"{failed['retry_in']} s"
    assert events_since(executor, at(failed), "redial_early", peer="relayer01")
    wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=30,
               what="controller01's route back via relayer01")
