"""The seed's failure cases on the diamond, with real processes (kill = SIGKILL).

controller01 is linked to relayer01 (cost 1) and relayer02 (cost 2); both are linked to
executor01, which runs `echo-sleep`: twelve numbered timestamp lines, one every 0.5 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from demo_topologies import build_diamond
from mesh.testing import Mesh, NodeProcess, wait_until

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
ECHO_SLEEP = {"work-command": {
    "worktype": "echo-sleep", "command": "sh",
    "params": "-c 'for i in $(seq 1 12); do echo \"$i $(date +%T.%N)\"; sleep 0.5; done'"}}


def ctl(node: NodeProcess, *args: str, check: bool = True) -> str:
    result = subprocess.run([RECEPTORCTL, "--socket", str(node.socket), *args],
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"receptorctl {args}: {result.returncode} {result.stdout} "
                             f"{result.stderr}")
    return result.stdout


def diamond(mesh: Mesh) -> Mesh:
    build_diamond(mesh, [ECHO_SLEEP])
    mesh.start()
    mesh.wait_converged()
    mesh.wait_until_work_types("controller01", "executor01", ["echo-sleep"])
    return mesh


def submit(controller: NodeProcess) -> str:
    out = ctl(controller, "work", "submit", "--node", "executor01", "--no-payload", "echo-sleep")
    assert "Result: Job Started" in out
    return out.split("Unit ID: ")[1].split()[0]


def unit(node: NodeProcess, unit_id: str) -> dict[str, Any]:
    return node.control(f"work status {unit_id}")


def local_stdout(node: NodeProcess, unit_id: str) -> bytes:
    path = node.datadir / node.name / unit_id / "stdout"
    return path.read_bytes() if path.exists() else b""


def remote_dir(mesh: Mesh, unit_id: str) -> Path:
    remote_id = unit(mesh.nodes["controller01"], unit_id)["ExtraData"]["RemoteUnitID"]
    executor = mesh.nodes["executor01"]
    return executor.datadir / "executor01" / remote_id


def lines(node: NodeProcess, unit_id: str) -> int:
    return local_stdout(node, unit_id).count(b"\n")


def wait_succeeded(node: NodeProcess, unit_id: str, timeout: float = 90) -> dict[str, Any]:
    return wait_until(lambda: (s := unit(node, unit_id))["State"] == 2 and s, timeout=timeout,
                      what=f"unit {unit_id} Succeeded on {node.name}")


def test_persistence_and_release_all(mesh: Mesh) -> None:
    diamond(mesh)
    controller = mesh.nodes["controller01"]
    unit_id = submit(controller)
    status = wait_succeeded(controller, unit_id)
    assert status["Detail"] == "exit status 0"
    local = controller.datadir / "controller01" / unit_id
    remote = remote_dir(mesh, unit_id)
    for directory in (local, remote):
        assert {"status", "stdin", "stdout"} <= {p.name for p in directory.iterdir()}
    assert local_stdout(controller, unit_id).count(b"\n") == 12
    assert (local / "stdout").read_bytes() == (remote / "stdout").read_bytes()
    on_disk = json.loads((local / "status").read_text())
    assert on_disk["State"] == 2 and on_disk["WorkType"] == "remote"
    assert on_disk["ExtraData"]["RemoteNode"] == "executor01"
    assert json.loads((remote / "status").read_text())["WorkType"] == "echo-sleep"
    out = ctl(controller, "work", "release", "--all")
    assert f"({unit_id}, released)" in out
    assert not local.exists()
    wait_until(lambda: not remote.exists(), timeout=30, what="executor unit dir removed")


def test_relay_dies_mid_job(mesh: Mesh) -> None:
    diamond(mesh)
    controller = mesh.nodes["controller01"]
    unit_id = submit(controller)
    wait_until(lambda: lines(controller, unit_id) >= 3, timeout=30, what="first lines")
    mesh.nodes["relayer01"].kill()
    wait_until(lambda: controller.routes().get("executor01") == "relayer02", timeout=30,
               what="route via relayer02")
    wait_succeeded(controller, unit_id)
    assert lines(controller, unit_id) == 12
    assert local_stdout(controller, unit_id) == (remote_dir(mesh, unit_id) / "stdout").read_bytes()
    mesh.nodes["relayer01"].start()
    wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=60,
               what="route back via relayer01")


def test_both_relays_die_mid_job(mesh: Mesh) -> None:
    diamond(mesh)
    controller = mesh.nodes["controller01"]
    unit_id = submit(controller)
    wait_until(lambda: lines(controller, unit_id) >= 2, timeout=30, what="first lines")
    remote = remote_dir(mesh, unit_id)
    mesh.nodes["relayer01"].kill()
    mesh.nodes["relayer02"].kill()
    received = lines(controller, unit_id)
    # the job finishes on the executor while the controller is cut off
    wait_until(lambda: json.loads((remote / "status").read_text())["State"] == 2, timeout=60,
               what="executor unit finished")
    status = unit(controller, unit_id)
    assert status["State"] == 1, status
    assert 2 <= lines(controller, unit_id) < 12
    assert lines(controller, unit_id) >= received
    wait_until(lambda: "unreachable" in unit(controller, unit_id)["Detail"], timeout=30,
               what="Detail says the remote is unreachable")
    mesh.nodes["relayer02"].start()
    wait_succeeded(controller, unit_id)
    assert local_stdout(controller, unit_id) == (remote / "stdout").read_bytes()
    assert lines(controller, unit_id) == 12


def test_controller_dies_mid_job(mesh: Mesh) -> None:
    diamond(mesh)
    controller = mesh.nodes["controller01"]
    unit_id = submit(controller)
    wait_until(lambda: lines(controller, unit_id) >= 2, timeout=30, what="first lines")
    remote = remote_dir(mesh, unit_id)
    controller.kill()
    controller.start()
    wait_succeeded(controller, unit_id)
    assert local_stdout(controller, unit_id) == (remote / "stdout").read_bytes()
    assert lines(controller, unit_id) == 12


def test_executor_dies_mid_job(mesh: Mesh) -> None:
    diamond(mesh)
    controller = mesh.nodes["controller01"]
    executor = mesh.nodes["executor01"]
    unit_id = submit(controller)
    wait_until(lambda: lines(controller, unit_id) >= 2, timeout=30, what="first lines")
    remote = remote_dir(mesh, unit_id)
    executor.kill()
    wait_until(lambda: "unreachable" in unit(controller, unit_id)["Detail"], timeout=30,
               what="Detail says the remote is unreachable")
    assert unit(controller, unit_id)["State"] == 1
    out = ctl(controller, "work", "release", unit_id)
    assert f"({unit_id}, release pending)" in out
    executor.start()
    wait_until(lambda: not remote.exists(), timeout=60, what="release reached the executor")
    wait_until(lambda: not (controller.datadir / "controller01" / unit_id).exists(),
               timeout=30, what="controller unit removed")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_convergence_times(mesh: Mesh, how: str) -> None:
    diamond(mesh)
    controller = mesh.nodes["controller01"]
    relay = mesh.nodes["relayer01"]
    wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=30)
    start = time.monotonic()
    if how == "SIGKILL":
        relay.kill()
    else:
        relay.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: controller.routes().get("executor01") == "relayer02", timeout=30,
                   interval=0.02, what="route via relayer02")
        down = time.monotonic() - start
        start = time.monotonic()
        if how == "SIGKILL":
            relay.start()
        else:
            relay.signal(signal.SIGCONT)
        wait_until(lambda: controller.routes().get("executor01") == "relayer01", timeout=60,
                   interval=0.02, what="route back via relayer01")
        up = time.monotonic() - start
    finally:
        relay.signal(signal.SIGCONT)
    print(f"\n{how}: new route after {down:.2f} s, old route back after {up:.2f} s")
    # generous bounds: a regression to Receptor's 21 s idle timeout fails; the figures
    # themselves come from bench/resilience_bench.py
    limit = 5.0 if how == "SIGKILL" else 15.0
    assert down < limit
