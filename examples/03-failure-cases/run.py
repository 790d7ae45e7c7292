#!/usr/bin/env python3
"""Demo 03, failure cases: nodes crash (kill -9) while a job runs, and the mesh copes.

The diamond: controller01 is linked to relayer01 (cost 1) and relayer02 (cost 2); both relays
are linked to executor01, which runs echo-sleep (twelve numbered timestamp lines, 0.3 s apart).
For each case the script performs the failure, then prints what it EXPECTED beside what it
OBSERVED; it exits non-zero if any observation differs.

1. persistence: unit directories hold status, stdin and stdout; release --all removes them
2. a relay dies mid-job: the route moves to relayer02 and the job finishes
3. both relays die mid-job: the controller keeps the unit Running and catches up when one returns
4. the controller dies mid-job and restarts: Succeeded, with the full stdout
5. the executor dies mid-job: Detail says unreachable, release is pending until it returns

    .venv/bin/python examples/03-failure-cases/run.py [--keep]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from example_mesh import Demo, state_name, submitted_unit_id  # noqa: E402

LINES = 12


class Diamond:
    """Observations on the diamond's one job at a time."""

    def __init__(self, demo: Demo) -> None:
        assert demo.mesh is not None
        self.demo = demo
        self.controller = demo.mesh.node("controller01")
        self.executor = demo.mesh.node("executor01")

    def submit(self) -> str:
        out = self.demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                           "--no-payload", "echo-sleep").stdout
        return submitted_unit_id(out)

    def status(self, unit_id: str) -> dict[str, Any]:
        return self.demo.unit_status("controller01", unit_id)

    def stdout(self, unit_id: str) -> bytes:
        path = self.controller.unit_dir(unit_id) / "stdout"
        return path.read_bytes() if path.exists() else b""

    def lines(self, unit_id: str) -> int:
        return self.stdout(unit_id).count(b"\n")

    def remote_id(self, unit_id: str) -> str:
        return self.status(unit_id)["ExtraData"]["RemoteUnitID"]

    def remote_dir(self, unit_id: str) -> Path:
        return self.executor.unit_dir(self.remote_id(unit_id))

    def remote_stdout(self, remote_dir: Path) -> bytes:
        path = remote_dir / "stdout"
        return path.read_bytes() if path.exists() else b""

    def remote_state(self, remote_dir: Path) -> int | None:
        try:
            return json.loads((remote_dir / "status").read_text())["State"]
        except (OSError, ValueError, KeyError):
            return None

    def wait_lines(self, unit_id: str, count: int) -> None:
        self.demo.wait(lambda: self.lines(unit_id) >= count, timeout=30,
                       what=f"{count} lines of {unit_id} on controller01")
        print(f"... {self.lines(unit_id)} of {LINES} lines have reached controller01")

    def summary(self, unit_id: str) -> str:
        status = self.status(unit_id)
        return (f"{state_name(status)}, {self.lines(unit_id)} lines, "
                f"Detail: {status.get('Detail', '')}")

    def expect_finished(self, unit_id: str, remote_dir: Path, timeout: float = 60) -> None:
        self.demo.within(lambda: self.status(unit_id)["State"] == 2, timeout)
        same = self.stdout(unit_id) == self.remote_stdout(remote_dir)
        self.demo.expect(
            "the job finishes on controller01",
            f"Succeeded, {LINES} lines, Detail: exit status 0; same stdout as on executor01",
            f"{self.summary(unit_id)}; "
            f"{'same' if same else 'DIFFERENT'} stdout as on executor01",
            self.status(unit_id)["State"] == 2 and self.lines(unit_id) == LINES and same)

    def expect_route(self, via: str, timeout: float, title: str) -> None:
        took = self.demo.within(lambda: self.demo.route("controller01", "executor01") == via,
                                timeout)
        observed = f"executor01 via {self.demo.route('controller01', 'executor01')}"
        if took is not None:
            observed += f" (after {took:.1f} s)"
        self.demo.expect(title, f"executor01 via {via}", observed, took is not None)


def case_persistence(demo: Demo, d: Diamond) -> None:
    demo.step("case 1: persistence — the unit directories, then release --all")
    unit_id = d.submit()
    demo.wait(lambda: d.status(unit_id)["State"] == 2, what="unit Succeeded", timeout=60)
    remote = d.remote_dir(unit_id)
    here = demo.sh("controller01", "ls", f"data/controller01/{unit_id}").stdout.decode().split()
    there = demo.sh("controller01", "ls", f"data/executor01/{remote.name}").stdout.decode().split()
    demo.expect("each side keeps status, stdin and stdout",
                "controller01: status stdin stdout\nexecutor01: status stdin stdout",
                f"controller01: {' '.join(here)}\nexecutor01: {' '.join(there)}",
                {"status", "stdin", "stdout"} <= set(here) & set(there))
    demo.sh("controller01", "cat", f"data/controller01/{unit_id}/status")
    on_disk = json.loads((d.controller.unit_dir(unit_id) / "status").read_text())
    demo.expect("the controller's status file", "State 2 (Succeeded), WorkType remote",
                f"State {on_disk.get('State')} ({state_name(on_disk)}), "
                f"WorkType {on_disk.get('WorkType')}",
                on_disk.get("State") == 2 and on_disk.get("WorkType") == "remote")
    out = demo.sh("controller01", "mesh", "work", "results", unit_id).stdout
    count = out.count(b"\n")
    same = out == d.remote_stdout(remote)
    demo.expect("work results", f"{LINES} lines, as on executor01",
                f"{count} lines, {'as' if same else 'NOT as'} on executor01",
                count == LINES and same)
    out = demo.sh("controller01", "mesh", "work", "release", "--all").stdout.decode()
    gone = demo.within(lambda: not remote.exists() and not d.controller.unit_dir(unit_id).exists(),
                       20)
    demo.expect("release --all removes both directories",
                f"({unit_id}, released); both directories gone",
                f"{out.strip()}; "
                f"{'both directories gone' if gone is not None else 'directories still there'}",
                f"({unit_id}, released)" in out and gone is not None)


def case_relay_dies(demo: Demo, d: Diamond) -> None:
    demo.step("case 2: relayer01 dies mid-job")
    demo.sh("controller01", "mesh", "traceroute", "executor01")
    unit_id = d.submit()
    d.wait_lines(unit_id, 3)
    remote = d.remote_dir(unit_id)
    demo.kill("relayer01")
    d.expect_route("relayer02", 10, "the route moves to the cost-2 path")
    demo.sh("controller01", "mesh", "traceroute", "executor01", check=False)
    d.expect_finished(unit_id, remote)
    demo.restart("relayer01")
    d.expect_route("relayer01", 30, "the route returns to relayer01 when it is back")
    demo.sh("controller01", "mesh", "work", "release", unit_id)


def case_both_relays_die(demo: Demo, d: Diamond) -> None:
    demo.step("case 3: both relays die mid-job")
    unit_id = d.submit()
    d.wait_lines(unit_id, 2)
    remote = d.remote_dir(unit_id)
    demo.kill("relayer01")
    demo.kill("relayer02")
    received = d.lines(unit_id)
    finished = demo.within(lambda: d.remote_state(remote) == 2, 30)
    demo.expect("the job still finishes on executor01, cut off from controller01",
                "executor01's unit Succeeded",
                f"executor01's unit State {d.remote_state(remote)}", finished is not None)
    demo.within(lambda: "unreachable" in d.status(unit_id).get("Detail", ""), 30)
    status = d.status(unit_id)
    lines = d.lines(unit_id)
    demo.expect("controller01 keeps the unit Running and says why",
                f"Running, fewer than {LINES} lines, Detail: ... unreachable ...",
                d.summary(unit_id),
                status["State"] == 1 and received <= lines < LINES
                and "unreachable" in status.get("Detail", ""))
    demo.restart("relayer02")
    d.expect_finished(unit_id, remote)
    demo.restart("relayer01")
    d.expect_route("relayer01", 30, "relayer01 takes the route back")
    demo.sh("controller01", "mesh", "work", "release", unit_id)


def case_controller_dies(demo: Demo, d: Diamond) -> None:
    demo.step("case 4: controller01 dies mid-job and restarts")
    unit_id = d.submit()
    d.wait_lines(unit_id, 2)
    remote = d.remote_dir(unit_id)
    demo.kill("controller01")
    demo.restart("controller01")
    d.expect_finished(unit_id, remote)
    demo.sh("controller01", "mesh", "work", "results", unit_id)
    demo.sh("controller01", "mesh", "work", "release", unit_id)


def case_executor_dies(demo: Demo, d: Diamond) -> None:
    demo.step("case 5: executor01 dies mid-job")
    unit_id = d.submit()
    d.wait_lines(unit_id, 2)
    remote = d.remote_dir(unit_id)
    demo.kill("executor01")
    demo.within(lambda: "unreachable" in d.status(unit_id).get("Detail", ""), 30)
    status = d.status(unit_id)
    demo.expect("controller01 reports the executor unreachable",
                "Running, Detail: ... executor01 unreachable ...",
                f"{state_name(status)}, Detail: {status.get('Detail', '')}",
                status["State"] == 1 and "unreachable" in status.get("Detail", ""))
    out = demo.sh("controller01", "mesh", "work", "release", unit_id).stdout.decode()
    demo.expect("release waits for the executor", f"({unit_id}, release pending)",
                out.strip(), f"({unit_id}, release pending)" in out)
    demo.restart("executor01")
    gone = demo.within(lambda: not remote.exists()
                       and not d.controller.unit_dir(unit_id).exists(), 30)
    demo.expect("the release completes once executor01 is back",
                "unit gone on executor01 and on controller01",
                f"executor01: {'gone' if not remote.exists() else 'still there'}, "
                f"controller01: "
                f"{'gone' if not d.controller.unit_dir(unit_id).exists() else 'still there'}"
                + (f" (after {gone:.1f} s)" if gone is not None else ""),
                gone is not None)
    demo.sh("controller01", "mesh", "work", "list")


def body(demo: Demo) -> None:
    demo.start()
    mesh = demo.mesh
    assert mesh is not None
    mesh.wait_converged(timeout=30)
    mesh.wait_until_work_types("controller01", "executor01", ["echo-sleep"], timeout=30)
    d = Diamond(demo)
    d.expect_route("relayer01", 15, "the cheapest route to executor01")
    for case in (case_persistence, case_relay_dies, case_both_relays_die,
                 case_controller_dies, case_executor_dies):
        case(demo, d)


if __name__ == "__main__":
    sys.exit(Demo(__file__, "Demo 03: failure cases",
                  "The diamond controller01 -> relayer01 (cost 1) / relayer02 (cost 2) -> "
                  "executor01 on 127.0.0.1, with nodes killed (SIGKILL) and restarted while "
                  "echo-sleep runs. Each check prints what was EXPECTED beside what was "
                  "OBSERVED.").run(body))
