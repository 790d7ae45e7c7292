"""Resilience figures on the diamond (controller01 → relayer01 cost 1 / relayer02 cost 2 →
executor01), with real node processes, watched from outside with receptorctl's library.

* convergence: time from relayer01's death (SIGKILL, or SIGSTOP for a silent failure) to the
  controller's route via relayer02, and from its return (restart, i.e. exec, or SIGCONT) to
  the route via relayer01 again;
* case 03: both relays die mid-job, the job finishes on the executor, the controller reports
  the remote unreachable, relayer02 returns: time from its restart (exec) to the controller's
  unit being Succeeded with all the output;
* case 04: the controller is killed mid-job, the job finishes on the executor, the
  controller is restarted: time from its restart (exec) to its unit being Succeeded with all
  the output.

Each figure is measured once per run, each time on a fresh diamond; the table shows the
median of the runs, min-max, the target (issue 14) and met/missed.

Usage::

    .venv/bin/python bench/resilience_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from control_clients import ReceptorctlClient
from figures import Figure, Target, render

from mesh.testing import Mesh, NodeProcess, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from demo_topologies import build_diamond  # noqa: E402  (the demos' topologies)

ECHO_SLEEP = {"work-command": {
    "worktype": "echo-sleep", "command": "sh",
    "params": "-c 'for i in $(seq 1 12); do echo \"$i $(date +%T.%N)\"; sleep 0.25; done'"}}
LINES = 12
SUCCEEDED = 2
#: receptorctl sets no timeouts: a node that stops answering fails the bench, not hangs it.
CLIENT_TIMEOUT = 60.0
#: How often a waited-for condition is polled while a figure's clock runs.
POLL = 0.01


def started_diamond() -> Mesh:
    mesh = build_diamond(Mesh(Path(tempfile.mkdtemp(prefix="mesh-rb-"))), [ECHO_SLEEP])
    for node in mesh.nodes.values():
        node.log_level = "info"
    try:
        mesh.start()
        mesh.wait_converged()
    except BaseException:
        mesh.cleanup()
        raise
    return mesh


def rc(node: NodeProcess) -> ReceptorctlClient:
    return ReceptorctlClient(node.socket)


def via(controller: NodeProcess, relay: str) -> bool:
    routes = rc(controller).command("status")["RoutingTable"]
    return bool(routes.get("executor01") == relay)


def timed(action: Callable[[], Any], condition: Callable[[], Any], what: str,
          acted_on: NodeProcess) -> float:
    """Seconds from ``action`` on ``acted_on`` (started on the clock) until ``condition``
    holds; a timeout names ``acted_on``'s state and log."""
    start = time.perf_counter()
    action()
    try:
        wait_until(condition, timeout=60, interval=POLL, what=what)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; {acted_on.name} alive: {acted_on.alive}; its log:\n"
                           f"{acted_on.log_tail()}") from None
    return time.perf_counter() - start


def convergence(how: str) -> tuple[float, float]:
    """(death -> route via relayer02, return -> route via relayer01) seconds."""
    mesh = started_diamond()
    controller, relay = mesh.nodes["controller01"], mesh.nodes["relayer01"]
    try:
        wait_until(lambda: via(controller, "relayer01"), timeout=30, what="route via relayer01")
        down = timed(relay.kill if how == "SIGKILL" else lambda: relay.signal(signal.SIGSTOP),
                     lambda: via(controller, "relayer02"), "route via relayer02", relay)
        up = timed(lambda: relay.start(wait=False) if how == "SIGKILL"
                   else relay.signal(signal.SIGCONT),
                   lambda: via(controller, "relayer01"), "route back via relayer01", relay)
        return down, up
    finally:
        relay.signal(signal.SIGCONT)
        mesh.cleanup()


class Job:
    """An echo-sleep unit submitted on the controller for executor01."""

    def __init__(self, mesh: Mesh) -> None:
        self.controller = mesh.nodes["controller01"]
        self.executor = mesh.nodes["executor01"]
        mesh.wait_until_work_types("controller01", "executor01", ["echo-sleep"])
        self.unit_id = rc(self.controller).submit("executor01", "echo-sleep")
        status = wait_until(lambda: (s := self.status())["StdoutSize"] > 0 and s, timeout=30,
                            what="first output at the controller")
        self.remote_id = str(status["ExtraData"]["RemoteUnitID"])

    def status(self) -> dict[str, Any]:
        return dict(rc(self.controller).command(f"work status {self.unit_id}"))

    def remote_status(self) -> dict[str, Any]:
        return dict(rc(self.executor).command(f"work status {self.remote_id}"))

    def wait_remote_finished(self) -> int:
        """Wait until the job has finished on the executor; its stdout size."""
        status = wait_until(lambda: (s := self.remote_status())["State"] == SUCCEEDED and s,
                            timeout=60, what="the job finished on executor01")
        return int(status["StdoutSize"])

    def complete(self, size: int) -> bool:
        """Succeeded at the controller with all ``size`` bytes of output."""
        status = self.status()
        return status["State"] == SUCCEEDED and status["StdoutSize"] == size

    def check_output(self) -> None:
        local = self.controller.datadir / "controller01" / self.unit_id / "stdout"
        remote = self.executor.datadir / "executor01" / self.remote_id / "stdout"
        if local.read_bytes() != remote.read_bytes() or local.read_bytes().count(b"\n") != LINES:
            raise RuntimeError(f"unit {self.unit_id}: the controller's output differs from "
                               "the executor's")


def case_03() -> float:
    """Both relays die mid-job; seconds from relayer02's restart to Succeeded."""
    mesh = started_diamond()
    try:
        job = Job(mesh)
        mesh.nodes["relayer01"].kill()
        mesh.nodes["relayer02"].kill()
        size = job.wait_remote_finished()
        wait_until(lambda: "unreachable" in job.status()["Detail"], timeout=30,
                   what="Detail says the remote is unreachable")
        elapsed = timed(lambda: mesh.nodes["relayer02"].start(wait=False),
                        lambda: job.complete(size), "unit Succeeded at the controller",
                        mesh.nodes["relayer02"])
        job.check_output()
        return elapsed
    finally:
        mesh.cleanup()


def case_04() -> float:
    """The controller dies mid-job; seconds from its restart to Succeeded."""
    mesh = started_diamond()
    try:
        job = Job(mesh)
        job.controller.kill()
        size = job.wait_remote_finished()
        elapsed = timed(lambda: job.controller.start(wait=False),
                        lambda: job.complete(size), "unit Succeeded at the controller",
                        job.controller)
        job.check_output()
        return elapsed
    finally:
        mesh.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs; each row is their median")
    args = parser.parse_args()
    socket.setdefaulttimeout(CLIENT_TIMEOUT)
    kill_down = Figure("relay SIGKILLed -> rerouted", "s")
    restart_up = Figure("relay restarted -> old route back", "s", Target("<=", 1.0))
    stop_down = Figure("relay SIGSTOPped (silent) -> rerouted", "s", Target("<=", 2.5))
    cont_up = Figure("relay SIGCONTed -> old route back", "s")
    case3 = Figure("case 03: a relay returns -> unit Succeeded", "s", Target("<=", 2.0),
                   note="both relays died mid-job; relayer02 restarted")
    case4 = Figure("case 04: controller restarted -> unit Succeeded", "s", Target("<=", 1.0),
                   note="controller SIGKILLed mid-job")
    for _ in range(args.runs):
        for how, down, up in (("SIGKILL", kill_down, restart_up),
                              ("SIGSTOP", stop_down, cont_up)):
            d, u = convergence(how)
            down.add(d)
            up.add(u)
        case3.add(case_03())
        case4.add(case_04())
    print(f"resilience on the diamond; client: receptorctl's library; {args.runs} runs, "
          "median and min-max over runs")
    print(render([restart_up, stop_down, case3, case4, kill_down, cont_up]))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
