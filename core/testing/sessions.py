"""Process sessions a node leaves behind, found by where they work, and stopped by pid.

Some work outlives the node that started it by design: a ``command`` unit's runner is a
session leader (``setsid``) that keeps running, with its command, when the node exits.  Tests
stop such leftovers here.  What marks one is where it works, never what it is called: its
working directory, an open file (a runner holds its unit directory or its stdout open) or an
argument of its command line lies below the test's directory.  Linux only (``/proc``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from mesh.testing.processes import running_node_pids


def _stat(pid: int | str) -> tuple[bytes, int] | None:
    """``pid``'s state letter and session ID, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[3])


def session_members(session: int) -> list[int]:
    """Live pids whose session ID is ``session``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _stat(name)
        if stat is not None and stat[1] == session and stat[0] not in (b"Z", b"X"):
            out.append(int(name))
    return out


class _Place:
    """A directory, by its given and its real path, and what of a process lies below it."""

    def __init__(self, directory: Path) -> None:
        self.roots = tuple({os.fsencode(str(directory)), os.fsencode(os.path.realpath(directory))})

    def holds(self, path: bytes) -> bool:
        return any(path == root or path.startswith(root + b"/") for root in self.roots)

    def named_in(self, argument: bytes) -> bool:
        return any(root + b"/" in argument or argument.endswith(root) for root in self.roots)

    def has_worker(self, pid: int) -> bool:
        """``pid``'s working directory, an open file or a command-line argument is here."""
        proc = f"/proc/{pid}"
        try:
            if self.holds(os.fsencode(os.readlink(f"{proc}/cwd"))):
                return True
            if any(self.named_in(arg) for arg in Path(f"{proc}/cmdline").read_bytes().split(b"\0")):
                return True
            fds = os.listdir(f"{proc}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if self.holds(os.fsencode(os.readlink(f"{proc}/fd/{fd}"))):
                    return True
            except OSError:
                continue  # closed meanwhile
        return False


def kill_runners(under: Path) -> list[int]:
    """SIGKILL every process session that works below ``under``: what units left running.

    A session is stopped when its leader works below ``under`` (see the module's docstring),
    unless it is a node this process started and that still runs (:func:`running_node_pids`)
    or the caller's own session.  Every member of the session is signalled (a runner and its
    command).  Returns the pids signalled.
    """
    place = _Place(under)
    spared = running_node_pids() | {os.getpid(), os.getsid(0)}
    killed: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in spared:
            continue
        leader = int(name)
        stat = _stat(leader)
        if stat is None or stat[1] != leader or stat[0] in (b"Z", b"X"):
            continue  # not a session leader
        if not place.has_worker(leader):
            continue
        for pid in session_members(leader):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed
