"""Resilience figures on the diamond (controller01 → relayer01 cost 1 / relayer02 cost 2 →
executor01), with real node processes.

* convergence: time from relayer01's death (SIGKILL, or SIGSTOP for a silent failure) to
  the controller's route via relayer02, and from its return (restart, or SIGCONT) to the
  route via relayer01 again;
* catch-up (seed case 3): both relays die mid-job, the job finishes on the executor, one
  relay returns: time from its restart to the controller's unit being Succeeded with all
  output.

    .venv/bin/python bench/resilience_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import statistics
import tempfile
import time
from pathlib import Path

from mesh.testing import Mesh, NodeProcess, build_diamond, wait_until

ECHO_SLEEP = {"work-command": {
    "worktype": "echo-sleep", "command": "sh",
    "params": "-c 'for i in $(seq 1 12); do echo \"$i $(date +%T.%N)\"; sleep 0.25; done'"}}


def started_diamond() -> Mesh:
    mesh = build_diamond(Mesh(Path(tempfile.mkdtemp(prefix="mesh-rb-"))), [ECHO_SLEEP])
    for node in mesh.nodes.values():
        node.log_level = "info"
    mesh.start()
    mesh.wait_converged()
    return mesh


def via(mesh: Mesh, relay: str) -> bool:
    return mesh.nodes["controller01"].routes().get("executor01") == relay


def convergence(how: str) -> tuple[float, float]:
    mesh = started_diamond()
    relay = mesh.nodes["relayer01"]
    try:
        wait_until(lambda: via(mesh, "relayer01"), timeout=30)
        start = time.perf_counter()
        relay.kill() if how == "SIGKILL" else relay.signal(signal.SIGSTOP)
        wait_until(lambda: via(mesh, "relayer02"), timeout=60, interval=0.01)
        down = time.perf_counter() - start
        start = time.perf_counter()
        relay.start() if how == "SIGKILL" else relay.signal(signal.SIGCONT)
        wait_until(lambda: via(mesh, "relayer01"), timeout=60, interval=0.01)
        return down, time.perf_counter() - start
    finally:
        relay.signal(signal.SIGCONT)
        mesh.cleanup()


def catch_up() -> float:
    mesh = started_diamond()
    controller = mesh.nodes["controller01"]
    try:
        mesh.wait_until_work_types("controller01", "executor01", ["echo-sleep"])
        unit_id = submit_echo_sleep(controller)
        wait_until(lambda: controller.control(f"work status {unit_id}")["StdoutSize"] > 0,
                   timeout=30)
        remote_id = controller.control(f"work status {unit_id}")["ExtraData"]["RemoteUnitID"]
        status_file = mesh.nodes["executor01"].datadir / "executor01" / remote_id / "status"
        mesh.nodes["relayer01"].kill()
        mesh.nodes["relayer02"].kill()
        wait_until(lambda: json.loads(status_file.read_text())["State"] == 2, timeout=60)
        start = time.perf_counter()
        mesh.nodes["relayer02"].start()
        wait_until(lambda: controller.control(f"work status {unit_id}")["State"] == 2,
                   timeout=120, interval=0.01)
        return time.perf_counter() - start
    finally:
        mesh.cleanup()


def submit_echo_sleep(controller: NodeProcess) -> str:
    """Submit echo-sleep for executor01 on the controller's control socket; its unit ID."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(controller.socket))
        f = sock.makefile("rwb")
        f.readline()
        f.write(b'{"command":"work","subcommand":"submit","node":"executor01",'
                b'"worktype":"echo-sleep"}\n')
        f.flush()
        created = f.readline().decode()
        assert "Work unit created" in created, created
        sock.shutdown(socket.SHUT_WR)
        return json.loads(f.readline())["unitid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for how in ("SIGKILL", "SIGSTOP"):
        samples = [convergence(how) for _ in range(args.runs)]
        rows.append((f"relay {how}: new route", [d for d, _ in samples]))
        rows.append((f"relay {'restart' if how == 'SIGKILL' else 'SIGCONT'}: old route back",
                     [u for _, u in samples]))
    rows.append(("case 3 catch-up after a relay returns", [catch_up() for _ in range(args.runs)]))
    print(f"\nresilience on the diamond, {args.runs} runs each (seconds)")
    print(f"{'measure':<40} | {'median':>7} | {'min':>6} | {'max':>6}")
    print(f"{'-' * 40}-+-{'-' * 7}-+-{'-' * 6}-+-{'-' * 6}")
    for name, values in rows:
        print(f"{name:<40} | {statistics.median(values):>7.2f} | {min(values):>6.2f} | "
              f"{max(values):>6.2f}")


if __name__ == "__main__":
    main()
