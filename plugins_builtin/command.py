"""command work type: each ``work-command`` section runs an executable once per unit (Receptor §6.4).

A unit's command runs under a detached runner process (:mod:`mesh_builtin.command_runner`) that
owns the unit's ``stdout`` and ``status`` while it runs, so a unit survives the node being killed and
restarted.  The node only launches runners, watches them, and kills them on cancel.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.work.states import FINAL, UnitState
from mesh.work.unitstore import UnitStatus, UnitStoreError
from mesh.work.worktype import UnitHandle, WorkError, WorkType
from mesh_builtin import command_runner
from mesh_builtin.runner_server import SERVER_MARKER, RunnerServer, RunnerServerError

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
CANCEL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL on cancel


@dataclass
class WorkCommandConfig:
    worktype: str = field(metadata={"doc": "Name of the work type that clients submit."})
    command: str = field(metadata={"doc": "Executable to run (a path, or a name looked up in PATH)."})
    params: str = field(default="", metadata={
        "doc": "Command-line arguments, split like a shell does (quotes and backslashes; no "
               "variable expansion)."})
    allowruntimeparams: bool = field(default=False, metadata={
        "doc": "Allow the submitter to append arguments with the `params` work parameter."})
    verifysignature: bool = field(default=False, metadata={
        "doc": "Require signed work submissions (needs a work-verification section)."})

    def validate(self) -> None:
        if not self.worktype.strip():
            raise SectionValueError("worktype", "must not be empty")
        if not self.command.strip():
            raise SectionValueError("command", "must name an executable")
        try:
            shlex.split(self.params)
        except ValueError as exc:
            raise SectionValueError("params", f"cannot be split into arguments: {exc}; "
                                              "check the quotes") from None


class _AlreadyFinal(Exception):
    """Raised inside a status change to leave a final status untouched."""


def kill_runner_locked(unit: UnitHandle, runner: int) -> None:
    """SIGKILL the unit's runner while holding the unit lock, so it is not half-way through a
    status write and writes nothing after this: the kernel records Canceled next."""
    try:
        with unit.store.lock(unit.unit_id):
            _kill(runner, signal.SIGKILL)
    except (UnitStoreError, OSError):
        _kill(runner, signal.SIGKILL)


class CommandWorkType(WorkType):
    """One ``work-command`` entry."""

    stops_at_max_stdout = True  # the runner does (see command_runner.Runner.cut)

    def __init__(self, config: WorkCommandConfig, node: Any = None) -> None:
        super().__init__(config.worktype, verify_signature=config.verifysignature)
        self.config = config
        self.node = node
        self._runners: dict[str, int] = {}  # unit ID -> pid of a runner this process started
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._canceling: set[str] = set()

    # -- parameters ------------------------------------------------------------------------

    def full_params(self, params: dict[str, str]) -> str:
        """Configured params plus the submitter's ``params`` (joined with a space)."""
        extra = params.get("params", "") or ""
        if extra and not self.config.allowruntimeparams:
            raise WorkError("extra params provided but not allowed")
        if not extra:
            return self.config.params
        return f"{self.config.params} {extra}" if self.config.params else extra

    def check_params(self, params: dict[str, str]) -> Any:
        full = self.full_params(params)
        try:
            shlex.split(full)
        except ValueError as exc:
            raise WorkError(f"params {params.get('params', '')!r} cannot be split into arguments: "
                            f"{exc}") from None
        return {"Pid": 0, "Params": full}

    # -- start -----------------------------------------------------------------------------

    def start_params(self, unit: UnitHandle) -> tuple[str, list[str]] | None:
        """The unit's params (ExtraData ``Params``, else from its submit params) as text and
        split into arguments; None if the unit is final or they cannot be split (it is then
        Failed with why)."""
        status = unit.status()
        if status.state in FINAL:
            return None
        extra = status.extra_data if isinstance(status.extra_data, dict) else {}
        params = extra.get("Params")
        if not isinstance(params, str):
            params = self.full_params(unit.params)
        try:
            return params, shlex.split(params)
        except ValueError as exc:
            _fail(unit, f"Error: params cannot be split into arguments: {exc}")
            return None

    async def start(self, unit: UnitHandle) -> None:
        started = self.start_params(unit)
        if started is None:
            return
        params, args = started
        argv = [self.config.command, *args]

        unit_dir = os.path.abspath(unit.dir)
        try:
            pid, proc, ready_r = await self._launch(unit, unit_dir, params, argv,
                                                    self._max_stdout())
        except OSError as exc:
            _fail(unit, f"Error: cannot start the command runner: {exc}")
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
            if pid and (proc is not None or _is_runner(pid, unit_dir)):  # not a reused pid
                _kill(pid, signal.SIGKILL)
            _fail(unit, f"Error: the command runner did not start within {READY_TIMEOUT:g} s")
        elif not pid:
            _fail(unit, "Error: the command runner exited without a final status")
        unit.notify()

    def _max_stdout(self) -> int | None:
        """``work-limits maxstdout``: the runner stops the unit's command beyond it."""
        work = getattr(self.node, "work", None)
        return work.max_stdout if work is not None else None

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

    def _watch(self, unit: UnitHandle, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        old = self._watchers.get(unit.unit_id)
        if old is not None and not old.done():
            old.cancel()
        task = asyncio.get_running_loop().create_task(self._watch_runner(unit, pid, proc))
        self._watchers[unit.unit_id] = task

    async def _watch_runner(self, unit: UnitHandle, pid: int,
                            proc: subprocess.Popen[bytes] | None) -> None:
        """Notify while stdout grows or the runner rewrites the status; when the runner exits,
        reap it, fail the unit if the runner left no final status, and notify once more."""
        uid = unit.unit_id
        last: tuple[int, int, int] | None = None
        try:
            async with _ExitWatch(pid, proc) as exited:
                while True:
                    done, _ = await asyncio.wait({exited}, timeout=NOTIFY_INTERVAL)
                    seen = _progress(unit)
                    if seen != last:
                        last = seen
                        unit.notify()
                    if done:
                        break
            code = proc.wait() if proc is not None else None
            if uid not in self._canceling and not _is_final(unit):
                if proc is None:  # forked by the runner server, which reaped it
                    code = await RunnerServer.shared().exit_code(pid)
                how = ("" if code is None else f" (exit status {code})" if code >= 0
                       else f" (signal: {command_runner.go_signal_name(-code)})")
                # The runner died without finishing (e.g. SIGKILL): nobody supervises the
                # command any more, so stop it before recording the failure.
                await _stop_command(pid, _child_pid(unit))
                _fail(unit, f"Error: the command runner exited without a final status{how}")
            unit.notify()
        finally:
            if self._runners.get(uid) == pid:
                del self._runners[uid]
            if self._watchers.get(uid) is asyncio.current_task():
                self._watchers.pop(uid, None)

    # -- cancel ----------------------------------------------------------------------------

    async def cancel(self, unit: UnitHandle) -> None:
        uid = unit.unit_id
        self._canceling.add(uid)
        try:
            runner = self._find_runner(unit, scan=not _is_final(unit))
            session = runner or _recorded_pid(unit)
            child_group = _child_pid(unit)
            if runner:
                kill_runner_locked(unit, runner)
            if session or child_group:
                await _stop_command(session, child_group)
            watcher = self._watchers.get(uid)
            if watcher is not None and not watcher.done():
                await asyncio.wait({watcher}, timeout=CANCEL_GRACE)
            elif runner:
                await _wait_gone(runner, CANCEL_GRACE)
            log.info("unit_killed", unit_id=uid, runner=runner)
        finally:
            self._canceling.discard(uid)

    def _find_runner(self, unit: UnitHandle, *, scan: bool = True) -> int:
        """PID of this unit's live runner, or 0.

        With ``scan``, look through all processes when the recorded PID is not the runner (one
        that was killed with the node before it recorded its PID is still found).
        """
        unit_dir = os.path.abspath(unit.dir)
        pid = _recorded_pid(unit)
        if pid and _is_runner(pid, unit_dir):
            return pid
        started = self._runners.get(unit.unit_id)
        if started and started != pid and _is_runner(started, unit_dir):
            return started
        return _scan_for_runner(unit_dir) if scan else 0

    # -- restart ---------------------------------------------------------------------------

    async def restart(self, unit: UnitHandle) -> None:
        status = unit.status()
        if status.state in FINAL:
            return
        recorded = _recorded_pid(unit)
        runner = self._find_runner(unit)
        if runner:
            log.info("runner_reattached", unit_id=unit.unit_id, pid=runner)
            self._watch(unit, runner, None)
            return
        if recorded:
            detail = (f"Failed to restart: runner process {recorded} is gone "
                      "(node restarted while the unit ran)")
        else:
            detail = ("Failed to restart: the command runner never started "
                      "(node restarted while the unit was starting)")
        log.warning("runner_gone", unit_id=unit.unit_id, pid=recorded)
        if recorded:
            await _stop_command(recorded, _child_pid(unit))  # whatever the command left running
        _fail(unit, detail)


# -- helpers ---------------------------------------------------------------------------------


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
    return _recorded_pid(unit) or _scan_for_runner(unit_dir)


def _fail(unit: UnitHandle, detail: str) -> None:
    """Mark the unit Failed unless it already reached a final state."""

    def change(status: UnitStatus) -> None:
        if status.state in FINAL:
            raise _AlreadyFinal
        status.state, status.detail, status.extra_data = UnitState.FAILED, detail, None
        status.stdout_size = unit.store.stdout_size(unit.unit_id)

    try:
        unit.update(change)
    except _AlreadyFinal:
        pass
    except UnitStoreError:
        pass  # the unit was released meanwhile


def _progress(unit: UnitHandle) -> tuple[int, int, int]:
    """(stdout size, status inode, status mtime): status writes replace the file."""
    try:
        st = os.stat(unit.dir / "status")
    except OSError:
        return unit.store.stdout_size(unit.unit_id), 0, 0
    return unit.store.stdout_size(unit.unit_id), st.st_ino, st.st_mtime_ns


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _is_final(unit: UnitHandle) -> bool:
    try:
        return unit.status().state in FINAL
    except UnitStoreError:
        return True  # released: nothing left to record


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


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[2]), int(fields[3])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X")
    if os.path.isdir("/proc"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_runner(pid: int, unit_dir: str) -> bool:
    """Is ``pid`` a live command runner for ``unit_dir``?  (Guards against PID reuse.)

    A runner started as an interpreter names the unit directory on its command line; one
    forked by a runner server has the server's command line and holds the directory open.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return False
    if not _alive(pid):
        return False
    if any(SERVER_MARKER in a for a in args):
        return _holds_open(pid, unit_dir)
    return _runner_args_match(args, unit_dir)


def _holds_open(pid: int, path: str) -> bool:
    """Has process ``pid`` a file descriptor open on ``path``?"""
    wanted = {path, os.path.realpath(path)}
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}") in wanted:
                return True
        except OSError:
            continue
    return False


def _runner_args_match(args: list[bytes], unit_dir: str) -> bool:
    want = os.fsencode(unit_dir)
    try:
        i = args.index(b"--unitdir")
    except ValueError:
        return False
    before = args[:i]
    return (i + 1 < len(args) and args[i + 1] == want
            and any(b"command_runner" in a for a in before))


def _scan_for_runner(unit_dir: str) -> int:
    """Find a runner for ``unit_dir`` among all processes (one that had not yet recorded its PID,
    or was forked by a runner server that failed before it answered)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if name.isdigit() and _is_runner(int(name), unit_dir):
            return int(name)
    return 0


def _command_groups(session: int, child_group: int) -> set[int]:
    """Process groups that still have live (non-zombie) processes of the unit's command.

    The runner is a session leader, so its session holds everything the command started (a
    session ID is not reused while any member lives, so this holds after the runner died).
    Without /proc only the command's own group, from ``Running: PID <n>``, is known.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return {child_group} if child_group and _group_alive(child_group) else set()
    groups: set[int] = set()
    for name in names:
        if not name.isdigit():
            continue
        stat = _proc_stat(int(name))
        if stat is not None and stat[2] == session and stat[0] not in ("Z", "X"):
            groups.add(stat[1])
    groups.discard(session)  # the runner's own group: the runner is killed separately
    return groups


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _stop_command(session: int, child_group: int) -> None:
    """SIGTERM everything the runner started, up to CANCEL_GRACE seconds, then SIGKILL."""
    groups = _command_groups(session, child_group)
    for pgid in groups:
        _killpg(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_GRACE
    while groups and loop.time() < deadline:
        await asyncio.sleep(0.02)
        groups = _command_groups(session, child_group)
    for pgid in groups:
        _killpg(pgid, signal.SIGKILL)
    deadline = loop.time() + 2.0
    while groups and loop.time() < deadline:
        await asyncio.sleep(0.02)
        groups = _command_groups(session, child_group)


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


async def _wait_gone(pid: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _alive(pid) and loop.time() < deadline:
        await asyncio.sleep(0.02)


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


class _ExitWatch:
    """``async with _ExitWatch(pid, proc) as exited``: a future that completes when ``pid`` exits.

    Uses a pidfd (works for processes that are not our children, e.g. after a node restart),
    else polls.
    """

    def __init__(self, pid: int, proc: subprocess.Popen[bytes] | None) -> None:
        self.pid, self.proc = pid, proc
        self.pidfd: int | None = None
        self.poller: asyncio.Task[None] | None = None

    async def __aenter__(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[None] = loop.create_future()
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self.exited.set_result(None)
            return self.exited
        except (AttributeError, OSError):
            self.poller = loop.create_task(self._poll())
            return self.exited
        loop.add_reader(self.pidfd, self._set)
        return self.exited

    def _set(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _gone(self) -> bool:
        return self.proc.poll() is not None if self.proc is not None else not _alive(self.pid)

    async def _poll(self) -> None:
        while not self._gone():
            await asyncio.sleep(0.05)
        self._set()

    async def __aexit__(self, *exc: object) -> None:
        if self.pidfd is not None:
            asyncio.get_running_loop().remove_reader(self.pidfd)
            os.close(self.pidfd)
        if self.poller is not None:
            self.poller.cancel()


@hookimpl
def mesh_register_work_types(register: Any) -> None:
    register(SectionSpec("work-command", WorkCommandConfig,
                         doc="A work type that runs an executable for each unit."),
             CommandWorkType)
