"""Binding a control service's Unix socket: the lock that keeps two nodes off one socket.

Used by the control service and by the early control responder (which binds before asyncio
is imported); standard library only.
"""

from __future__ import annotations

import fcntl
import os
import socket


class SocketInUse(RuntimeError):
    """Another node holds the socket's lock file."""


class BoundUnixSocket:
    """A listening Unix socket and the lock file that says it is ours."""

    def __init__(self, path: str, sock: socket.socket, lock_fd: int, inode: int = 0) -> None:
        self.path = path
        self.sock = sock
        self.lock_fd = lock_fd
        #: The socket file's inode when we bound it (to unlink only our own file).
        self.inode = inode

    def close(self, *, unlink: bool = False) -> None:
        """Close the socket and release the lock; with ``unlink``, remove the socket file
        first if it is still the one we bound."""
        if unlink:
            try:
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)
            except OSError:
                pass
        self.sock.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def bind_unix_socket(filename: str, permissions: int, *, backlog: int = 128,
                     ) -> BoundUnixSocket:
    """Lock ``filename + ".lock"``, replace a stale socket file and listen on ``filename``.

    :raises SocketInUse: another node holds the lock.
    :raises OSError: the directory or socket cannot be created.
    """
    path = os.path.expanduser(filename)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SocketInUse(f"control socket {path} is in use by another node "
                          f"(lock {path}.lock is held)") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(path):
            os.unlink(path)
        sock.bind(path)
        os.chmod(path, permissions)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        os.close(fd)
        raise
    return BoundUnixSocket(path, sock, fd, os.stat(path).st_ino)
