"""The detached runner's public interface, driven as a third-party work type drives it.

``mesh_builtin.detached_runner.DetachedRunner`` runs an argv per unit under a runner process that
outlives the node; ``on_end`` (``CommandWorkType.runner_ended``) runs once the runner is gone.
The command and container tests cover the runner's own behaviour in depth; these check the
contract a plugin relies on: the argv is given directly, and when the end hook runs.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from typing import Any, Callable

from mesh.testing import WatchedUnit, session_members, wait_until
from mesh.work.states import UnitState
from mesh.work.worktype import UnitHandle, WorkType
from mesh_builtin.command import CommandWorkType, WorkCommandConfig
from mesh_builtin.detached_runner import DetachedRunner
from mesh_builtin.runner_processes import alive, wait_gone

WAIT = 30.0


class ProcessWorkType(WorkType):
    """A work type of its own (no CommandWorkType) that runs ``argv`` for every unit."""

    def __init__(self, argv: list[str]) -> None:
        super().__init__("proc")
        self.argv = argv
        self.ended: list[tuple[str, UnitState]] = []  # (unit ID, its state when on_end ran)
        self.runner = DetachedRunner(on_end=self.on_end)

    async def on_end(self, unit: UnitHandle) -> None:
        self.ended.append((unit.unit_id, unit.status().state))

    async def start(self, unit: UnitHandle) -> None:
        await self.runner.start(unit, self.argv)

    async def cancel(self, unit: UnitHandle) -> None:
        await self.runner.cancel(unit)

    async def restart(self, unit: UnitHandle) -> None:
        await self.runner.restart(unit)


class WorkerWorkType(CommandWorkType):
    """A CommandWorkType whose argv is built per unit, as mesh-plugin-ansible-runner's is."""

    def __init__(self) -> None:
        super().__init__(WorkCommandConfig(worktype="worker", command="unused"))
        #: per runner_ended call: (runner alive a moment later, command alive)
        self.ended: list[tuple[bool, bool]] = []

    async def start(self, unit: UnitHandle) -> None:
        await self.runner.start(unit, ["sh", "-c", "sleep 1000", "worker", unit.unit_id])

    async def runner_ended(self, unit: UnitHandle) -> None:
        runner, child = running_pids(unit)
        await wait_gone(runner, WAIT)  # SIGKILLed: it dies without anyone's help
        self.ended.append((alive(runner), alive(child)))


def running_pids(unit: UnitHandle) -> tuple[int, int]:
    """(runner, command) PIDs of a Running unit."""
    status = unit.status()
    return status.extra_data["Pid"], int(status.detail.removeprefix("Running: PID "))


def is_running(status: Any) -> bool:
    return status.state == UnitState.RUNNING


def test_a_work_type_of_its_own_runs_its_argv(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = ProcessWorkType(["sh", "-c", "cat; echo done"])
    unit = unit_handle(wt, stdin=b"in\n")

    async def main() -> None:
        await wt.start(unit)
        assert (await unit.final(timeout=WAIT)).detail == "exit status 0"
        await asyncio.wait_for(wt.runner.settle(unit.unit_id), WAIT)

    asyncio.run(main())
    assert unit.stdout == b"in\ndone\n"
    assert any(s.extra_data == {"Pid": s.extra_data["Pid"], "Params": "-c 'cat; echo done'"}
               for s in unit.seen if is_running(s))
    # on_end ran once, after the final state was recorded; the unit is no longer watched
    assert wt.ended == [(unit.unit_id, UnitState.SUCCEEDED)]
    assert not wt.runner.is_watched(unit.unit_id)


def test_a_final_unit_is_not_started(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = ProcessWorkType(["sh", "-c", "echo ran"])
    unit = unit_handle(wt)
    unit.fail("canceled while preparing")
    asyncio.run(wt.start(unit))
    assert unit.status().detail == "canceled while preparing"
    assert unit.stdout == b"" and not wt.runner.is_watched(unit.unit_id)


def test_cancel_calls_the_end_hook_between_runner_and_command(
        unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = WorkerWorkType()
    unit = unit_handle(wt)

    async def main() -> tuple[int, int]:
        await wt.start(unit)
        running = await unit.until(is_running, timeout=WAIT, what="Running")
        assert running.extra_data["Params"] == shlex.join(["-c", "sleep 1000", "worker",
                                                           unit.unit_id])
        pids = running_pids(unit)
        await wt.cancel(unit)
        return pids

    runner, child = asyncio.run(main())
    # once, with the runner killed and the command not stopped yet; both are gone after cancel
    assert wt.ended == [(False, True)]
    assert not alive(runner) and not alive(child)


def test_restart_calls_the_end_hook_when_the_runner_is_gone(
        unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = ProcessWorkType(["sleep", "1000"])
    unit = unit_handle(wt)

    async def first_node() -> tuple[int, int]:
        await wt.start(unit)
        await unit.until(is_running, timeout=WAIT, what="Running")
        return running_pids(unit)  # the loop ends: the node "stops" without cancel

    runner, child = asyncio.run(first_node())
    members = session_members(runner)
    os.kill(runner, signal.SIGKILL)
    wait_until(lambda: not alive(runner), timeout=WAIT, what="the runner to die")

    restarted = ProcessWorkType(["unused"])
    asyncio.run(restarted.restart(unit))
    assert restarted.ended == [(unit.unit_id, UnitState.RUNNING)]  # before the unit failed
    status = unit.status()
    assert (status.state, status.detail) == (
        UnitState.FAILED,
        f"Failed to restart: runner process {runner} is gone (node restarted while the unit ran)")
    assert child in members and not alive(child), "the command was left running"
    assert wt.ended == []
