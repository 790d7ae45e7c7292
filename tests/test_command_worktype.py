"""The builtin ``command`` work type, driven directly with real runner processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Awaitable, Iterator, TypeVar

import pytest

from mesh.testing import (WatchedUnit, kill_runners, make_unit, session_members, wait_until,
                          wait_until_async)

from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.plugins import make_plugin_manager
from mesh.work.states import FINAL, UnitState
from mesh.work.stdout_digest import Digest
from mesh.work.unitstore import UnitStatus, UnitStore
from mesh.work.worktype import UnitHandle, WorkError
from mesh_builtin import command as command_plugin
from mesh_builtin import command_runner, detached_runner
from mesh_builtin.command import CommandWorkType, WorkCommandConfig

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
WAIT = 15.0  # generous bound for anything that should take milliseconds


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- process helpers -------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgrp, session) or None when the process is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[2]), int(fields[3])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


@pytest.fixture
def cleanup(tmp_path: Path) -> Iterator[list[int]]:
    """Kill, by pid, every runner working under tmp_path, its command's session, and listed pids."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    kill_runners(tmp_path)


# -- unit helpers ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> UnitStore:
    return UnitStore(tmp_path / "data", "node1")


async def settle(wt: CommandWorkType, unit: UnitHandle) -> None:
    """Wait until the work type stops watching the unit's runner (it has exited)."""
    await asyncio.wait_for(wt.runner.settle(unit.unit_id), WAIT)


def work_type(command: str, params: str = "", **kwargs: Any) -> CommandWorkType:
    return CommandWorkType(WorkCommandConfig(worktype="test", command=command, params=params,
                                             **kwargs))


def shell(script: str, **kwargs: Any) -> CommandWorkType:
    return work_type("sh", f"-c '{script}'", **kwargs)


def runner_and_child(status: UnitStatus) -> tuple[int, int]:
    assert status.state == UnitState.RUNNING, status
    assert status.detail.startswith("Running: PID "), status
    return status.extra_data["Pid"], int(status.detail.removeprefix("Running: PID "))


# -- config and registration -----------------------------------------------------------------


def test_config_section() -> None:
    spec = SectionSpec("work-command", WorkCommandConfig)
    config = spec.build({"worktype": "echo", "command": "echo", "params": "-n 'a b'",
                         "allowruntimeparams": "true"})
    assert config == WorkCommandConfig("echo", "echo", "-n 'a b'", True, False)
    assert spec.build({"worktype": "x", "command": "x"}) == WorkCommandConfig("x", "x")
    with pytest.raises(SectionValueError, match="missing required key 'command'"):
        spec.build({"worktype": "x"})
    with pytest.raises(SectionValueError) as info:
        spec.build({"worktype": "x", "command": "  "})
    assert info.value.key == "command"
    with pytest.raises(SectionValueError) as info:
        spec.build({"worktype": "x", "command": "sh", "params": "-c 'unclosed"})
    assert info.value.key == "params" and "No closing quotation" in str(info.value)


def test_plugin_registers_work_command() -> None:
    host = make_plugin_manager(entry_points=False, extra=[("command", command_plugin)])
    registered = host.work_types["work-command"]
    assert registered.spec.schema is WorkCommandConfig and registered.spec.doc
    all_documented = all(key.doc for key in registered.spec.keys)
    assert all_documented
    wt = registered.factory(WorkCommandConfig("echo", "echo", verifysignature=True), None)
    assert isinstance(wt, CommandWorkType)
    assert (wt.name, wt.verify_signature) == ("echo", True)


def test_pyproject_declares_the_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'command = "mesh_builtin.command"' in text


# -- params ----------------------------------------------------------------------------------


def test_runtime_params_refused_unless_allowed() -> None:
    wt = work_type("echo", "base")
    assert wt.check_params({}) == {"Pid": 0, "Params": "base"}
    assert wt.check_params({"params": "", "other": "ignored"}) == {"Pid": 0, "Params": "base"}
    with pytest.raises(WorkError) as info:
        wt.check_params({"params": "more"})
    assert str(info.value) == "extra params provided but not allowed"


def test_runtime_params_appended_with_a_space() -> None:
    assert work_type("echo", "base", allowruntimeparams=True).check_params(
        {"params": "'two words'"}) == {"Pid": 0, "Params": "base 'two words'"}
    assert work_type("echo", "", allowruntimeparams=True).check_params(
        {"params": "x"}) == {"Pid": 0, "Params": "x"}
    with pytest.raises(WorkError, match="cannot be split"):
        work_type("echo", allowruntimeparams=True).check_params({"params": "'open"})


def test_runtime_params_reach_the_command(store: UnitStore, cleanup: list[int]) -> None:
    wt = work_type("echo", "configured", allowruntimeparams=True)

    async def main() -> UnitStatus:
        unit = make_unit(store, wt, params={"params": "'two  words' three"})
        await wt.start(unit)
        return await unit.final()

    status = run(main())
    assert (status.state, status.detail) == (UnitState.SUCCEEDED, "exit status 0")
    unit_id = store.ids()[0]
    assert (store.path(unit_id) / "stdout").read_bytes() == b"configured two  words three\n"


# -- running ---------------------------------------------------------------------------------


def test_cat_echoes_stdin_byte_exact(store: UnitStore, cleanup: list[int]) -> None:
    payload = bytes(range(256)) * 64 + os.urandom(5 * 1024 * 1024)
    wt = work_type("cat")

    async def main() -> tuple[WatchedUnit, UnitStatus]:
        unit = make_unit(store, wt, stdin=payload)
        await wt.start(unit)
        assert unit.status().state != UnitState.PENDING  # start returns once the runner runs
        final = await unit.final()
        await settle(wt, unit)
        return unit, final

    unit, status = run(main())
    assert status == UnitStatus(UnitState.SUCCEEDED, "exit status 0", len(payload), "test", None,
                                Digest(len(payload), hashlib.sha256(payload).hexdigest()))
    assert unit.stdout_path.read_bytes() == payload
    assert unit.seen and unit.seen[-1].state == UnitState.SUCCEEDED
    assert sorted(os.listdir(unit.dir)) == ["status", "status.lock", "stdin", "stdout"]


def test_running_status_and_notify_while_output_grows(tmp_path: Path, store: UnitStore,
                                                       cleanup: list[int]) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    wt = shell(f"echo first; cat {gate}; echo second")

    async def main() -> tuple[UnitHandle, UnitStatus, UnitStatus]:
        unit = make_unit(store, wt)
        await wt.start(unit)
        running = await unit.until(lambda s: s.stdout_size == 6, what="StdoutSize 6 while running")
        with open(gate, "wb") as handle:  # let the command finish
            handle.write(b"gate\n")
        return unit, running, await unit.final()

    unit, running, final = run(main())
    runner, child = runner_and_child(running)
    assert running.extra_data == {"Pid": runner, "Params": f"-c 'echo first; cat {gate}; "
                                                           f"echo second'"}
    assert (final.state, final.detail, final.stdout_size) == (UnitState.SUCCEEDED,
                                                              "exit status 0", 18)
    assert unit.stdout_path.read_bytes() == b"first\ngate\nsecond\n"


@pytest.mark.parametrize(("script", "detail"), [
    ("exit 3", "exit status 3"),
    ("echo out; echo err >&2; exit 1", "exit status 1"),
    ("kill -KILL $$", "signal: killed"),
    ("kill -TERM $$", "signal: terminated"),
    ("kill -HUP $$", "signal: hangup"),
])
def test_failures(store: UnitStore, cleanup: list[int], script: str, detail: str) -> None:
    wt = shell(script)

    async def main() -> UnitStatus:
        unit = make_unit(store, wt)
        await wt.start(unit)
        return await unit.final()

    status = run(main())
    assert (status.state, status.detail, status.extra_data) == (UnitState.FAILED, detail, None)
    if "echo" in script:
        assert status.stdout_size == 8
        assert (store.path(store.ids()[0]) / "stdout").read_bytes() == b"out\nerr\n"


def test_go_signal_names() -> None:
    assert command_runner.go_signal_name(signal.SIGINT) == "interrupt"
    assert command_runner.go_signal_name(signal.SIGPIPE) == "broken pipe"
    assert command_runner.go_signal_name(signal.SIGSEGV) == "segmentation fault"
    assert command_runner.go_signal_name(signal.SIGABRT) == "aborted"
    assert command_runner.go_signal_name(40) == "signal 40"


@pytest.mark.parametrize(("command", "expected"), [
    ("no-such-command-xyz", "Error: command not found: no-such-command-xyz (no executable file "
                            "named 'no-such-command-xyz' in PATH="),
    ("/nonexistent/prog", "Error: command not found: /nonexistent/prog (no such file)"),
])
def test_command_not_found(store: UnitStore, cleanup: list[int], command: str,
                           expected: str) -> None:
    wt = work_type(command)

    async def main() -> UnitStatus:
        unit = make_unit(store, wt)
        await wt.start(unit)
        return await unit.final()

    status = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail.startswith(expected), status.detail


def test_command_not_executable(tmp_path: Path, store: UnitStore, cleanup: list[int]) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    wt = work_type(str(script))

    async def main() -> UnitStatus:
        unit = make_unit(store, wt)
        await wt.start(unit)
        return await unit.final()

    status = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail == f"Error: cannot execute {script}: permission denied (not executable)"


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_kills_runner_and_command_group(store: UnitStore, cleanup: list[int]) -> None:
    wt = shell("sleep 1000 & sleep 1000; wait")

    async def main() -> tuple[UnitStatus, list[int], float]:
        unit = make_unit(store, wt)
        await wt.start(unit)
        running = unit.status()
        runner, child = runner_and_child(running)
        # the runner leads its own session; the command has a process group of its own in it
        assert proc_stat(runner)[1:] == (runner, runner)
        assert proc_stat(child)[1:] == (child, runner)
        members = await wait_until_async(
            lambda: len(session_members(runner)) >= 4 and session_members(runner),
            what="runner, sh and two sleeps", timeout=WAIT)
        cleanup.extend(members)
        started = time.monotonic()
        await wt.cancel(unit)
        took = time.monotonic() - started
        # the kernel records Canceled afterwards; the runner must not have written anything
        assert unit.status() == running
        unit.update(lambda s: setattr(s, "state", UnitState.CANCELED))
        await wt.cancel(unit)  # again: everything is gone already, must not hang
        return running, members, took

    running, members, took = run(main())
    assert [pid for pid in members if alive(pid)] == []
    assert took < 3.0, f"cancel took {took:.1f}s"
    assert store.read(store.ids()[0]).state == UnitState.CANCELED


def test_cancel_of_a_finished_unit_returns(store: UnitStore, cleanup: list[int]) -> None:
    wt = work_type("true")

    async def main() -> UnitStatus:
        unit = make_unit(store, wt)
        await wt.start(unit)
        final = await unit.final()
        await asyncio.wait_for(wt.cancel(unit), 5)
        return final

    assert run(main()).detail == "exit status 0"


def test_start_leaves_no_file_descriptors_behind(store: UnitStore, cleanup: list[int]) -> None:
    wt = work_type("true")

    async def main() -> tuple[int, int]:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            unit = make_unit(store, wt)
            await wt.start(unit)
            await unit.final()
            await settle(wt, unit)
        return before, len(os.listdir("/proc/self/fd"))

    before, after = run(main())
    assert after == before


def test_runner_sigterm_kills_command_and_writes_killed(store: UnitStore,
                                                        cleanup: list[int]) -> None:
    wt = work_type("sleep", "1000")

    async def main() -> tuple[int, int, UnitStatus]:
        unit = make_unit(store, wt)
        await wt.start(unit)
        runner, child = runner_and_child(unit.status())
        cleanup.extend([runner, child])
        os.kill(runner, signal.SIGTERM)
        final = await unit.final()
        await settle(wt, unit)  # the runner exits right after writing Killed
        return runner, child, final

    runner, child, status = run(main())
    assert (status.state, status.detail, status.extra_data) == (UnitState.FAILED, "Killed", None)
    assert not alive(runner) and not alive(child)


def test_runner_never_overwrites_a_final_state(tmp_path: Path, store: UnitStore,
                                               cleanup: list[int]) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    wt = shell(f"cat {gate}; sleep 1000")

    async def main() -> tuple[UnitStatus, int, int]:
        unit = make_unit(store, wt)
        await wt.start(unit)
        runner, child = runner_and_child(unit.status())
        cleanup.extend([runner, child])
        unit.update(lambda s: (setattr(s, "state", UnitState.CANCELED),
                               setattr(s, "detail", "Canceled")))
        with open(gate, "wb") as handle:  # output grows: the runner's next write finds Canceled
            handle.write(b"x\n")
        await settle(wt, unit)
        return unit.status(), runner, child

    status, runner, child = run(main())
    assert (status.state, status.detail) == (UnitState.CANCELED, "Canceled")
    assert not alive(runner) and not alive(child)


def test_runner_dying_without_a_status_marks_failed(store: UnitStore, cleanup: list[int]) -> None:
    wt = work_type("sleep", "1000")

    async def main() -> UnitStatus:
        unit = make_unit(store, wt)
        await wt.start(unit)
        runner, child = runner_and_child(unit.status())
        cleanup.extend([runner, child])
        os.kill(runner, signal.SIGKILL)
        return await unit.final()

    status = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail == ("Error: the command runner exited without a final status "
                             "(signal: killed)")
    child = cleanup[-1]
    assert not alive(child), "the unsupervised command was left running"


# -- the node goes away ----------------------------------------------------------------------

NODE = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    from mesh.work.unitstore import UnitStore
    from mesh.work.worktype import UnitHandle
    from mesh_builtin.command import CommandWorkType, WorkCommandConfig

    async def main():
        store = UnitStore(Path(sys.argv[1]), "node1")
        wt = CommandWorkType(WorkCommandConfig(worktype="test", command="sh",
                                               params="-c " + repr(sys.argv[2])))
        unit_id = store.create("test", wt.check_params({}))
        (store.path(unit_id) / "stdin").write_bytes(b"")
        await wt.start(UnitHandle(unit_id, store, {}))
        status = store.read(unit_id)
        print("UNIT", unit_id, status.extra_data["Pid"], flush=True)
        await asyncio.Event().wait()  # a node that runs until it is killed

    asyncio.run(main())
""")


def start_node_then_kill_it(store: UnitStore, script: str,
                            cleanup: list[int]) -> tuple[str, int]:
    """Start a unit from a separate 'node' process, SIGKILL that process; (unit id, runner pid)."""
    node = subprocess.Popen([sys.executable, "-c", NODE, str(store.root.parent), script],
                            stdout=subprocess.PIPE, text=True)
    cleanup.append(node.pid)
    assert node.stdout is not None
    for line in node.stdout:  # skip log lines
        if line.startswith("UNIT "):
            break
    else:
        raise AssertionError(f"node process failed (exit {node.wait(WAIT)})")
    _, unit_id, runner_pid = line.split()
    runner = int(runner_pid)
    node.kill()
    node.wait(WAIT)
    return unit_id, runner


def test_unit_survives_the_node(tmp_path: Path, store: UnitStore, cleanup: list[int]) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    unit_id, runner = start_node_then_kill_it(
        store, f"echo started; cat {gate}; head -c 100000 /dev/zero; echo finished", cleanup)
    cleanup.append(runner)
    assert alive(runner)
    assert store.read(unit_id).state == UnitState.RUNNING
    with open(gate, "wb") as handle:
        handle.write(b"go\n")
    status = wait_until(lambda: store.read(unit_id).state in FINAL and store.read(unit_id),
                        what="the orphaned runner to finish", timeout=WAIT)
    stdout = (store.path(unit_id) / "stdout").read_bytes()
    assert stdout == b"started\ngo\n" + bytes(100000) + b"finished\n"
    assert status == UnitStatus(UnitState.SUCCEEDED, "exit status 0", len(stdout), "test", None,
                                Digest(len(stdout), hashlib.sha256(stdout).hexdigest()))
    wait_until(lambda: not alive(runner), what="the runner to exit", timeout=WAIT)


def test_restart_reattaches_to_a_running_runner(tmp_path: Path, store: UnitStore,
                                                cleanup: list[int]) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    unit_id, runner = start_node_then_kill_it(store, f"cat {gate}; echo done", cleanup)
    cleanup.append(runner)

    async def main() -> tuple[WatchedUnit, UnitStatus]:
        wt = shell("unused")  # the "restarted node"
        unit = WatchedUnit(unit_id, store)
        await wt.restart(unit)
        assert unit.status().state == UnitState.RUNNING
        assert wt.runner.is_watched(unit.unit_id)
        with open(gate, "wb") as handle:
            handle.write(b"go\n")
        final = await unit.final()
        await settle(wt, unit)
        return unit, final

    unit, status = run(main())
    assert (status.state, status.detail) == (UnitState.SUCCEEDED, "exit status 0")
    assert (store.path(unit_id) / "stdout").read_bytes() == b"go\ndone\n"
    assert any(seen.state == UnitState.SUCCEEDED for seen in unit.seen)


def test_restart_marks_failed_when_the_runner_is_gone(store: UnitStore,
                                                      cleanup: list[int]) -> None:
    unit_id, runner = start_node_then_kill_it(store, "sleep 1000", cleanup)
    command = [pid for pid in session_members(runner) if pid != runner]
    assert command, "the command is not running"
    cleanup.extend(command)
    os.kill(runner, signal.SIGKILL)  # dies "while the node is down"
    wait_until(lambda: not alive(runner), what="the runner to die", timeout=WAIT)
    assert store.read(unit_id).state == UnitState.RUNNING

    async def main() -> UnitStatus:
        wt = shell("unused")
        unit = WatchedUnit(unit_id, store)
        await wt.restart(unit)
        assert unit.seen, "restart did not notify"
        return store.read(unit_id)

    status = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail == (f"Failed to restart: runner process {runner} is gone "
                             "(node restarted while the unit ran)")
    assert [pid for pid in command if alive(pid)] == [], "the orphaned command was left running"


def test_restart_ignores_a_reused_pid(store: UnitStore, cleanup: list[int]) -> None:
    # ExtraData.Pid names a live process that is not this unit's runner: treat the runner as gone.
    unit_id = store.create("test", {"Pid": os.getpid(), "Params": ""})
    store.update(unit_id, lambda s: (setattr(s, "state", UnitState.RUNNING),
                                     setattr(s, "detail", "Running: PID 1")))

    async def main() -> UnitStatus:
        await shell("unused").restart(UnitHandle(unit_id, store, {}))
        return store.read(unit_id)

    status = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail.startswith(f"Failed to restart: runner process {os.getpid()} is gone")
    assert alive(os.getpid())


# -- the runner itself -----------------------------------------------------------------------


def test_runner_help_via_module() -> None:
    result = subprocess.run([sys.executable, "-m", "mesh_builtin.command_runner", "--help"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: command_runner.py --unitdir DIR")


def test_runner_imports_only_cheap_standard_library_modules() -> None:
    probe = ("import sys; from command_runner import main; "
             "print(sorted(set(sys.modules) - set(sys.builtin_module_names)))")
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path.append({detached_runner.RUNNER_DIR!r}); {probe}"],
        capture_output=True, text=True, timeout=30, check=True)
    loaded = set(json.loads(result.stdout.replace("'", '"')))
    assert not {m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names
                and m not in ("command_runner", "__main__")}
    assert not loaded & {"json", "re", "enum", "signal", "subprocess", "shlex"}


def test_runner_rejects_bad_arguments() -> None:
    result = subprocess.run([sys.executable, "-m", "mesh_builtin.command_runner", "--unitdir"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "usage:" in result.stderr
