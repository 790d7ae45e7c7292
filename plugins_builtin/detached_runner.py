"""The detached runner: how a work type runs one process per unit that outlives the node.

:class:`DetachedRunner` is the public interface: ``start`` runs an argv for a unit, ``restart``
re-attaches to it after a node restart, ``cancel`` kills it, and an ``on_end`` hook runs once the
runner is gone.  The ``command`` and ``container`` work types and third-party work types (e.g.
``mesh-plugin-ansible-runner``) use it, through :class:`mesh_builtin.command.CommandWorkType`
or on their own.

A unit's argv runs under a detached runner process (:mod:`mesh_builtin.command_runner`) that
owns the unit's ``stdout`` and ``status`` while it runs, so a unit survives the node being killed
and restarted.  The node only launches runners, watches them, and kills them on cancel.

Runners are forked by the node's runner server (:mod:`mesh_builtin.runner_server`, started with
the first unit), which takes ~1-2 ms instead of the ~20 ms of a new interpreter.  A forked runner
is not the node's child: it is watched as a runner adopted after a node restart is (a pidfd),
and the server reports its exit status.  When the server cannot be started or fails, the unit's
runner is started as a new interpreter (:data:`RUNNER_BOOT`), as before, with one
``runner_server_failed`` warning; the next unit starts a new server.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import structlog

from mesh.work.states import FINAL
from mesh.work.unitstore import UnitStoreError
from mesh.work.worktype import UnitHandle
from mesh_builtin import command_runner
from mesh_builtin.runner_processes import (
    CANCEL_GRACE,
    ExitWatch,
    is_runner,
    scan_for_runner,
    signal_process,
    stop_command,
    wait_gone,
)
from mesh_builtin.runner_server import RunnerServer, RunnerServerError

log = structlog.get_logger(__name__)

#: When the runner server fails, a runner starts as a new interpreter: ``-I -S`` (no
#: site-packages scan, no project imports), importing its module from this directory rather than
#: running the file as a script, so its bytecode is cached in ``__pycache__`` (compiling it costs
#: ~7 ms; the interpreter adds ~20 ms to a runner's start, a fork from the server ~1-2 ms).
RUNNER_DIR = str(Path(command_runner.__file__).resolve().parent)
RUNNER_BOOT = (f"import sys; sys.path.append({RUNNER_DIR!r}); "
               "from command_runner import main; sys.exit(main())")
READY_TIMEOUT = 10.0  # seconds start() waits for the runner to report Running (or a final state)
NOTIFY_INTERVAL = 0.25  # seconds between stdout-growth checks while a unit runs

#: ``on_end(unit)``: called once a unit's runner is gone (see :class:`DetachedRunner`).
EndHook = Callable[[UnitHandle], Awaitable[None]]


async def _nothing(unit: UnitHandle) -> None:
    """The default ``on_end`` hook."""


class DetachedRunner:
    """Runs each unit's argv under a detached runner, for one work type.

    The runner reads the unit's ``stdin`` file, writes its ``stdout`` file (it stops the command
    beyond ``max_stdout()`` bytes) and keeps its status current: Running with Detail
    ``Running: PID <command>`` and ExtraData ``{"Pid": <runner>, "Params": <params>}``, then
    Succeeded ``exit status 0``, or Failed ``exit status N`` / ``signal: <name>``.  The command
    runs in a session of the runner's, so cancel stops everything it started.

    ``on_end(unit)`` is called once the unit's runner is gone, to clean up what lives outside
    the runner's session (the container work type removes its container):

    * the runner exited: after the unit's final state is recorded (unless a cancel is under
      way, which calls it itself);
    * :meth:`cancel`: after the runner was killed, before the command's processes are stopped;
    * :meth:`restart` found the runner gone: before the command's leftovers are stopped and the
      unit is marked Failed.

    It may run more than once for a unit, so it must be idempotent.
    """

    def __init__(self, *, max_stdout: Callable[[], int | None] = lambda: None,
                 on_end: EndHook = _nothing) -> None:
        self.max_stdout = max_stdout
        self.on_end = on_end
        self._runners: dict[str, int] = {}  # unit ID -> pid of a runner this process started
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._canceling: set[str] = set()

    # -- start -----------------------------------------------------------------------------

    async def start(self, unit: UnitHandle, argv: Sequence[str], *,
                    params: str | None = None) -> None:
        """Run ``argv`` (``argv[0]``: a path, or a name looked up in PATH) for ``unit`` under a
        detached runner; return once it runs or the unit is Failed with why.

        ``params`` is the command line recorded as ExtraData ``Params`` (default:
        ``shlex.join(argv[1:])``).  Nothing happens if the unit is final already (canceled
        while the caller prepared it).
        """
        argv = list(argv)
        params = shlex.join(argv[1:]) if params is None else params
        if not _record_params(unit, params):
            return
        unit_dir = os.path.abspath(unit.dir)
        try:
            pid, proc, ready_r = await self._launch(unit, unit_dir, params, argv,
                                                    self.max_stdout())
        except OSError as exc:
            unit.fail(f"Error: cannot start the command runner: {exc}")
            return
        try:
            if pid:
                self._runners[unit.unit_id] = pid
                self._watch(unit, pid, proc)
            ready = await _wait_readable(ready_r, READY_TIMEOUT)
        finally:
            os.close(ready_r)
        log.debug("runner_started", unit_id=unit.unit_id, pid=pid, ready=ready,
                  forked=proc is None)
        if not ready:
            if pid and (proc is not None or is_runner(pid, unit_dir)):  # not a reused pid
                signal_process(pid, signal.SIGKILL)
            unit.fail(f"Error: the command runner did not start within {READY_TIMEOUT:g} s")
        elif not pid:
            unit.fail("Error: the command runner exited without a final status")
        unit.notify()

    async def _launch(self, unit: UnitHandle, unit_dir: str, params: str, argv: list[str],
                      max_stdout: int | None,
                      ) -> tuple[int, subprocess.Popen[bytes] | None, int]:
        """Start the unit's runner: (its pid, its Popen if it is this process's child, the read
        end of its ready pipe).  The pid is 0 when a runner started but is gone already.

        The runner server forks it; if the server fails, a runner it forked all the same is
        taken over, else the runner is started as a new interpreter.
        """
        server = RunnerServer.shared()
        ready_r, ready_w = os.pipe()
        try:
            try:
                pid = await server.spawn(unit_dir, params, argv, ready_w, max_stdout)
            finally:
                os.close(ready_w)
            return pid, None, ready_r
        except RunnerServerError as exc:
            if server.failures == 1:
                log.warning("runner_server_failed", unit_id=unit.unit_id, error=str(exc),
                            fallback="a new interpreter per unit until a new server works")
            try:
                forked = await _forked_anyway(unit, unit_dir, ready_r)
            except BaseException:
                os.close(ready_r)
                raise
        except BaseException:
            os.close(ready_r)
            raise
        if forked is not None:
            return forked, None, ready_r
        os.close(ready_r)
        return _start_interpreter(unit_dir, params, argv, max_stdout)

    # -- watching --------------------------------------------------------------------------

    def is_watched(self, unit_id: str) -> bool:
        """Is the unit's runner being watched (started or re-attached, not ended yet)?"""
        task = self._watchers.get(unit_id)
        return task is not None and not task.done()

    async def settle(self, unit_id: str) -> None:
        """Return once the unit's runner is no longer watched: it exited, the unit's final state
        is recorded and ``on_end`` returned."""
        task = self._watchers.get(unit_id)
        if task is not None:
            await asyncio.shield(task)

    def _watch(self, unit: UnitHandle, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        old = self._watchers.get(unit.unit_id)
        if old is not None and not old.done():
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._watch_runner(unit, pid, proc))
        self._watchers[unit.unit_id] = task

    async def _watch_runner(self, unit: UnitHandle, pid: int,
                            proc: subprocess.Popen[bytes] | None) -> None:
        """Notify while stdout grows or the runner rewrites the status; when the runner exits,
        reap it, fail the unit if the runner left no final status, notify once more, and call
        ``on_end`` (the unit stays watched until it returns)."""
        uid = unit.unit_id
        last: tuple[int, int, int] | None = None
        try:
            async with ExitWatch(pid, proc) as exited:
                while True:
                    done, _ = await asyncio.wait({exited}, timeout=NOTIFY_INTERVAL)
                    seen = _progress(unit)
                    if seen != last:
                        last = seen
                        unit.notify()
                    if done:
                        break
            code = proc.wait() if proc is not None else None
            if uid not in self._canceling and not unit.is_final():
                if proc is None:  # forked by the runner server, which reaped it
                    code = await RunnerServer.shared().exit_code(pid)
                how = ("" if code is None else f" (exit status {code})" if code >= 0
                       else f" (signal: {command_runner.go_signal_name(-code)})")
                # The runner died without finishing (e.g. SIGKILL): nobody supervises the
                # command any more, so stop it before recording the failure.
                await stop_command(pid, _child_pid(unit))
                unit.fail(f"Error: the command runner exited without a final status{how}")
            unit.notify()
            self._forget(uid, pid)
            if uid not in self._canceling:  # a cancel calls on_end itself
                await self.on_end(unit)
        finally:
            self._forget(uid, pid)
            if self._watchers.get(uid) is asyncio.current_task():
                self._watchers.pop(uid, None)

    def _forget(self, unit_id: str, pid: int) -> None:
        if self._runners.get(unit_id) == pid:
            del self._runners[unit_id]

    # -- finding and killing ---------------------------------------------------------------

    def find(self, unit: UnitHandle, *, scan: bool = True) -> int:
        """PID of this unit's live runner, or 0.

        With ``scan``, look through all processes when the recorded PID is not the runner (one
        that was killed with the node before it recorded its PID is still found).
        """
        unit_dir = os.path.abspath(unit.dir)
        pid = _recorded_pid(unit)
        if pid and is_runner(pid, unit_dir):
            return pid
        started = self._runners.get(unit.unit_id)
        if started and started != pid and is_runner(started, unit_dir):
            return started
        return scan_for_runner(unit_dir) if scan else 0

    async def cancel(self, unit: UnitHandle) -> None:
        """Stop the unit's runner and everything its command started: SIGKILL the runner (under
        the unit lock, so it is not half-way through a status write and writes nothing after
        this: the kernel records Canceled next), call ``on_end``, SIGTERM the command's process
        groups (SIGKILL after CANCEL_GRACE seconds), and wait for the watcher to finish."""
        uid = unit.unit_id
        self._canceling.add(uid)
        try:
            runner = self.find(unit, scan=not unit.is_final())
            session = runner or _recorded_pid(unit)
            child_group = _child_pid(unit)
            if runner:
                _kill_locked(unit, runner)
            await self.on_end(unit)
            if session or child_group:
                await stop_command(session, child_group)
            watcher = self._watchers.get(uid)
            if watcher is not None and not watcher.done():
                await asyncio.wait({watcher}, timeout=CANCEL_GRACE)
            elif runner:
                await wait_gone(runner, CANCEL_GRACE)
            log.info("unit_killed", unit_id=uid, runner=runner)
        finally:
            self._canceling.discard(uid)

    # -- restart ---------------------------------------------------------------------------

    async def restart(self, unit: UnitHandle) -> None:
        """At node start, for a unit recorded as Running: re-attach to its runner if it still
        runs; else call ``on_end``, stop what its command left running and mark it Failed."""
        status = unit.status()
        if status.state in FINAL:
            return
        recorded = _recorded_pid(unit)
        runner = self.find(unit)
        if runner:
            log.info("runner_reattached", unit_id=unit.unit_id, pid=runner)
            self._watch(unit, runner, None)
            return
        await self.on_end(unit)
        if recorded:
            detail = (f"Failed to restart: runner process {recorded} is gone "
                      "(node restarted while the unit ran)")
        else:
            detail = ("Failed to restart: the command runner never started "
                      "(node restarted while the unit was starting)")
        log.warning("runner_gone", unit_id=unit.unit_id, pid=recorded)
        if recorded:
            await stop_command(recorded, _child_pid(unit))  # whatever the command left running
        unit.fail(detail)


# -- helpers ---------------------------------------------------------------------------------


def _record_params(unit: UnitHandle, params: str) -> bool:
    """Show ``params`` in ExtraData from now on (the runner records them again with its PID);
    False if the unit is final or released."""
    try:
        status = unit.status()
    except UnitStoreError:
        return False
    if status.state in FINAL:
        return False
    extra = status.extra_data
    if not (isinstance(extra, dict) and extra.get("Params") == params):
        unit.update(lambda s: setattr(s, "extra_data", {"Pid": 0, "Params": params}))
    return True


def _kill_locked(unit: UnitHandle, runner: int) -> None:
    """SIGKILL the unit's runner while holding the unit lock."""
    try:
        with unit.store.lock(unit.unit_id):
            signal_process(runner, signal.SIGKILL)
    except (UnitStoreError, OSError):
        signal_process(runner, signal.SIGKILL)


def _start_interpreter(unit_dir: str, params: str, argv: list[str], max_stdout: int | None,
                       ) -> tuple[int, subprocess.Popen[bytes], int]:
    """Start a runner as a new interpreter: (pid, Popen, read end of its ready pipe)."""
    ready_r, ready_w = os.pipe()
    limit = ["--max-stdout", str(max_stdout)] if max_stdout is not None else []
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", RUNNER_BOOT, "--unitdir", unit_dir,
             "--params", params, "--ready-fd", str(ready_w), *limit, "--", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, pass_fds=(ready_w,))
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
    return proc.pid, proc, ready_r


async def _forked_anyway(unit: UnitHandle, unit_dir: str, ready_r: int) -> int | None:
    """After the runner server failed a spawn: None if it forked no runner for the unit, else
    that runner's pid (0 if it is gone already).

    The server holds no copy of the ready pipe's write end any more, so only a forked runner
    still can: end of file without a byte means there is none.
    """
    if await _wait_readable(ready_r, READY_TIMEOUT):
        try:
            if os.read(ready_r, 1) == b"":
                return None
        except OSError:
            return None
    return _recorded_pid(unit) or scan_for_runner(unit_dir)


def _progress(unit: UnitHandle) -> tuple[int, int, int]:
    """(stdout size, status inode, status mtime): status writes replace the file."""
    try:
        st = os.stat(unit.dir / "status")
    except OSError:
        return unit.store.stdout_size(unit.unit_id), 0, 0
    return unit.store.stdout_size(unit.unit_id), st.st_ino, st.st_mtime_ns


def _recorded_pid(unit: UnitHandle) -> int:
    """The runner PID recorded in ExtraData (``Pid``), or 0."""
    try:
        extra = unit.status().extra_data
    except UnitStoreError:
        return 0
    pid = extra.get("Pid") if isinstance(extra, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else 0


def _child_pid(unit: UnitHandle) -> int:
    """The command's PID (= its process group) from ``Running: PID <n>``, or 0."""
    try:
        detail = unit.status().detail
    except UnitStoreError:
        return 0
    prefix = "Running: PID "
    if detail.startswith(prefix) and detail[len(prefix):].isdigit():
        return int(detail[len(prefix):])
    return 0


async def _wait_readable(fd: int, timeout: float) -> bool:
    """Wait until ``fd`` is readable (data or EOF); False on timeout."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await readable
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
