"""The processes of a unit's detached runner, as ``/proc`` shows them.

Is this PID the live runner of that unit directory (PIDs are reused), which runner serves a
unit that never recorded its PID, which process groups did the unit's command leave behind, and
stop them.  A runner is a session leader (``setsid()``), so its session holds everything its
command started, even after the runner died.  Used by :mod:`mesh_builtin.detached_runner`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import Callable

from mesh_builtin.runner_server import SERVER_MARKER

CANCEL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when stopping a unit's command


def signal_process(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``; nothing if it is gone or not ours."""
    _send(os.kill, pid, signum)


def alive(pid: int) -> bool:
    """Does ``pid`` run (a zombie does not)?"""
    stat = _proc_stat(pid)
    if stat is not None:
        return stat[0] not in ("Z", "X")
    if os.path.isdir("/proc"):
        return False
    return _exists(os.kill, pid)


def is_runner(pid: int, unit_dir: str) -> bool:
    """Is ``pid`` a live command runner for ``unit_dir``?  (Guards against PID reuse.)

    A runner started as an interpreter names the unit directory on its command line; one
    forked by a runner server has the server's command line and holds the directory open.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return False
    if not alive(pid):
        return False
    if any(SERVER_MARKER in a for a in args):
        return _holds_open(pid, unit_dir)
    return _runner_args_match(args, unit_dir)


def scan_for_runner(unit_dir: str) -> int:
    """Find a runner for ``unit_dir`` among all processes, or 0 (one that had not yet recorded
    its PID, or was forked by a runner server that failed before it answered)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    for name in names:
        if name.isdigit() and is_runner(int(name), unit_dir):
            return int(name)
    return 0


async def stop_command(session: int, child_group: int) -> None:
    """SIGTERM everything the runner of session ``session`` started (``child_group``: the
    command's own process group, if known), up to CANCEL_GRACE seconds, then SIGKILL."""
    groups = _command_groups(session, child_group)
    for pgid in groups:
        _send(os.killpg, pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CANCEL_GRACE
    while groups and loop.time() < deadline:
        await asyncio.sleep(0.02)
        groups = _command_groups(session, child_group)
    for pgid in groups:
        _send(os.killpg, pgid, signal.SIGKILL)
    deadline = loop.time() + 2.0
    while groups and loop.time() < deadline:
        await asyncio.sleep(0.02)
        groups = _command_groups(session, child_group)


async def wait_gone(pid: int, timeout: float) -> None:
    """Return once ``pid`` no longer runs, or after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while alive(pid) and loop.time() < deadline:
        await asyncio.sleep(0.02)


class ExitWatch:
    """``async with ExitWatch(pid, proc) as exited``: a future that completes when ``pid`` exits.

    Uses a pidfd (works for processes that are not our children, e.g. after a node restart),
    else polls (``proc``, if ``pid`` is our child, else ``/proc``).
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
        return self.proc.poll() is not None if self.proc is not None else not alive(self.pid)

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


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, session) of a process from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[2]), int(fields[3])


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


def _command_groups(session: int, child_group: int) -> set[int]:
    """Process groups that still have live (non-zombie) processes of the unit's command.

    A session ID is not reused while any member lives, so this holds after the runner died.
    Without /proc only the command's own group, from ``Running: PID <n>``, is known.
    """
    try:
        names = os.listdir("/proc")
    except OSError:
        return {child_group} if child_group and _exists(os.killpg, child_group) else set()
    groups: set[int] = set()
    for name in names:
        if not name.isdigit():
            continue
        stat = _proc_stat(int(name))
        if stat is not None and stat[2] == session and stat[0] not in ("Z", "X"):
            groups.add(stat[1])
    groups.discard(session)  # the runner's own group: the runner is killed separately
    return groups


def _exists(kill: Callable[[int, int], None], target: int) -> bool:
    """Does the process or process group ``target`` exist (``kill``: os.kill or os.killpg)?"""
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _send(kill: Callable[[int, int], None], target: int, signum: int) -> None:
    """Send ``signum`` to a process or process group; nothing if it is gone or not ours."""
    try:
        kill(target, signum)
    except (ProcessLookupError, PermissionError):
        pass
