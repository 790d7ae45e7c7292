"""The lock on a unit's ``status.lock``: an exclusive ``flock`` held for one read-modify-write.

The same lock Go Receptor's ``lockedfile`` and our command runner take, so the node, a runner
and a Receptor process sharing the directory never interleave their status writes.  A plain
``fcntl.flock`` rather than the ``filelock`` package: that package imports ``secrets``, which
loads OpenSSL (4 MB) into every node that has touched a unit.
"""

from __future__ import annotations

import fcntl
import os
import time

#: How often a waiting lock tries again.
POLL_INTERVAL = 0.01


class UnitLockTimeout(TimeoutError):
    """The lock was not free within the timeout (a runner or another node holds it)."""


class UnitLock:
    """``with UnitLock(path):`` holds an exclusive flock on ``path`` (created 0600 if missing),
    waiting up to ``timeout`` seconds for it."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._fd = -1

    def __enter__(self) -> UnitLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise UnitLockTimeout(f"{self.path} is still locked after "
                                          f"{self.timeout:g}s") from None
                time.sleep(POLL_INTERVAL)
            except BaseException:
                os.close(fd)
                raise
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # releases the flock
