"""Work units survive node restarts (SIGKILL, then start again) on the line
controller01 - relayer01 - executor01."""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Iterator

import pytest

from mesh.testing import Mesh, NodeProcess, wait_until
from work_helpers import (json_out, pid_alive, receptorctl, remote_id, running_line, status,
                          submitted_unit, unit_dir, wait_state, work_types)

INTERVAL = 0.5  # echo-sleep: 12 lines, one every half second (about 6 s in all)


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    with running_line("mesh-wrestart-",
                      executor_sections=work_types(interval=INTERVAL)) as cluster:
        yield cluster


@pytest.fixture
def nodes(line: Mesh) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """(controller01, executor01), both running again after the test."""
    yield line.nodes["controller01"], line.nodes["executor01"]
    for node in line.nodes.values():
        if not node.alive:
            node.start()
    line.wait_converged()


def stdout_size(node: NodeProcess, unit_id: str) -> int:
    try:
        return (unit_dir(node, unit_id) / "stdout").stat().st_size
    except FileNotFoundError:
        return 0


def start_echo_sleep(ctl: NodeProcess, exe: NodeProcess) -> tuple[str, str, dict]:
    """Submit echo-sleep from the controller; wait until the executor runs it and some output
    reached the controller.  Returns (unit, remote unit, remote status)."""
    unit_id = submitted_unit(receptorctl(ctl, "work", "submit", "--node", "executor01",
                                         "--no-payload", "echo-sleep"))
    remote = remote_id(ctl, unit_id)
    running = wait_state(exe, remote, {1})
    wait_until(lambda: stdout_size(ctl, unit_id) > 0, timeout=30,
               what="first output on the controller")
    return unit_id, remote, running


def assert_complete(ctl: NodeProcess, exe: NodeProcess, unit_id: str, remote: str) -> None:
    done = wait_state(ctl, unit_id, {2, 3, 4}, timeout=90)
    assert (done["State"], done["Detail"]) == (2, "exit status 0"), done
    executor_stdout = (unit_dir(exe, remote) / "stdout").read_bytes()
    lines = executor_stdout.decode().splitlines()
    assert [int(x.split()[0]) for x in lines] == list(range(1, 13))
    # the controller's copy is byte-identical, and so is what receptorctl streams
    assert (unit_dir(ctl, unit_id) / "stdout").read_bytes() == executor_stdout
    assert receptorctl(ctl, "work", "results", unit_id).stdout == executor_stdout
    assert done["StdoutSize"] == len(executor_stdout)


def test_unit_keeps_running_across_executor_sigkill(nodes) -> None:
    ctl, exe = nodes
    unit_id, remote, running = start_echo_sleep(ctl, exe)
    runner = running["ExtraData"]["Pid"]
    exe.kill()
    # the detached runner goes on writing output while its node is down
    size = stdout_size(exe, remote)
    wait_until(lambda: stdout_size(exe, remote) > size, timeout=30,
               what="output growing while the executor is down")
    assert pid_alive(runner)
    exe.start()
    after = status(exe, remote)
    assert after["State"] in (1, 2), after
    assert_complete(ctl, exe, unit_id, remote)
    assert status(exe, remote)["Detail"] == "exit status 0"


def test_controller_sigkill_reattaches_to_remote_unit(nodes) -> None:
    ctl, exe = nodes
    unit_id, remote, _ = start_echo_sleep(ctl, exe)
    ctl.kill()
    # the remote unit is not disturbed by the controller going away
    wait_until(lambda: stdout_size(exe, remote) > 3 * 23, timeout=30,
               what="executor output while the controller is down")
    assert status(exe, remote)["State"] == 1
    ctl.start()
    assert_complete(ctl, exe, unit_id, remote)


def test_controller_restart_after_remote_finished(nodes) -> None:
    """The rest of the output is fetched although the unit ended while we were down."""
    ctl, exe = nodes
    unit_id, remote, _ = start_echo_sleep(ctl, exe)
    ctl.kill()
    wait_state(exe, remote, {2}, timeout=60)
    ctl.start()
    assert_complete(ctl, exe, unit_id, remote)


def test_running_unit_whose_runner_is_gone_fails_after_restart(nodes) -> None:
    ctl, exe = nodes
    unit_id, remote, running = start_echo_sleep(ctl, exe)
    runner = running["ExtraData"]["Pid"]
    shell = int(running["Detail"].rsplit(" ", 1)[1])
    exe.kill()
    os.kill(runner, signal.SIGKILL)  # the runner dies while its node is down
    wait_until(lambda: not pid_alive(runner), timeout=15, what="runner gone")
    on_disk = status_file(exe, remote)
    assert on_disk["State"] == 1  # still recorded Running
    exe.start()
    failed = wait_state(exe, remote, {3}, timeout=30)
    assert re.fullmatch(rf"Failed to restart: runner process {runner} is gone \(.+\)",
                        failed["Detail"]), failed
    # whatever the command left running was stopped
    wait_until(lambda: not pid_alive(shell), timeout=15, what="orphaned shell stopped")
    # and the controller mirrors the failure
    mirrored = wait_state(ctl, unit_id, {3}, timeout=60)
    assert mirrored["Detail"] == failed["Detail"]
    out = receptorctl(ctl, "work", "results", unit_id, check=False)
    assert out.returncode == 1
    assert b"Remote unit failed: Failed to restart: runner process" in out.stderr


def status_file(node: NodeProcess, unit_id: str) -> dict:
    return json.loads((unit_dir(node, unit_id) / "status").read_text())


def test_force_release_while_executor_is_down(nodes) -> None:
    ctl, exe = nodes
    unit_id, remote, _ = start_echo_sleep(ctl, exe)
    exe.kill()
    out = receptorctl(ctl, "work", "release", "--force", unit_id)
    assert f"({unit_id}, released)" in out.stdout.decode()
    assert not unit_dir(ctl, unit_id).exists()
    assert unit_id not in json_out(receptorctl(ctl, "work", "list"))
    exe.start()
    # the executor's unit is left alone (as in Receptor): it finishes and can be released there
    wait_state(exe, remote, {2}, timeout=60)
    receptorctl(exe, "work", "release", remote)


def test_release_while_executor_is_down_completes_later(nodes) -> None:
    ctl, exe = nodes
    unit_id = submitted_unit(receptorctl(ctl, "work", "submit", "--node", "executor01",
                                         "--payload-literal", "keep me", "echo-reply"))
    wait_state(ctl, unit_id, {2})
    remote = remote_id(ctl, unit_id)
    exe.kill()
    out = receptorctl(ctl, "work", "release", unit_id)
    assert f"({unit_id}, release pending)" in out.stdout.decode()
    pending = status(ctl, unit_id)
    assert pending["ExtraData"]["LocalReleased"] is True
    assert unit_dir(exe, remote).exists()
    exe.start()
    wait_until(lambda: not unit_dir(ctl, unit_id).exists() and
               not unit_dir(exe, remote).exists(), timeout=60,
               what="pending release completed on both nodes")
