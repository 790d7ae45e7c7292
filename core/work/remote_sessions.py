"""Control sessions with remote nodes, for remote work (:mod:`mesh.work.remote`).

A :class:`RemoteConn` is one control session over a mesh stream; the :class:`SessionPool`
dials them (checking the greeting) and keeps idle ones for the next one-line command.
:class:`Retry` paces the attempts to reach a remote node.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from mesh.control.protocol import GREETING_PATTERN
from mesh.net.stream_errors import StreamError

if TYPE_CHECKING:  # pragma: no cover
    from mesh.work.remote_host import WorkManager

CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 30.0
RETRY_INITIAL, RETRY_FACTOR, RETRY_MAX = 0.5, 1.5, 2.0
CHUNK = 1024 * 1024
#: What a broken mesh stream raises (aborted, closed, reset, transport errors).
STREAM_ERRORS = (ConnectionError, OSError, EOFError, StreamError)
#: Idle control sessions kept per remote node, and for how long (see SessionPool).
POOL_MAX_IDLE = 16
#: Idle sessions kept ready per remote node once a streaming command took one: a small job's
#: results stream takes one and its status refresh right after needs another.
POOL_SPARES = 2
POOL_IDLE_TIME = 30.0


class RemoteUnavailable(Exception):
    """The remote control service could not be reached, or the connection broke."""


class RemoteRefused(Exception):
    """The remote node answered ``ERROR: …``."""


class Retry:
    """Growing pauses between attempts; ``pause(seconds)`` (default ``asyncio.sleep``) may
    end one early, e.g. when a route to the remote node appears."""

    def __init__(self, pause: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.delay = 0.0
        self._pause = pause

    async def wait(self) -> None:
        self.delay = RETRY_INITIAL if not self.delay else min(self.delay * RETRY_FACTOR,
                                                              RETRY_MAX)
        await self._pause(self.delay)

    def reset(self) -> None:
        self.delay = 0.0


class RemoteConn:
    """A control session with a remote node over a mesh stream."""

    def __init__(self, stream: Any, node: str) -> None:
        self.stream = stream
        self.node = node

    async def readline(self, timeout: float = REPLY_TIMEOUT) -> str:
        try:
            async with asyncio.timeout(timeout):
                raw = await self.stream.readline()
        except asyncio.TimeoutError:
            # A silent connection is most likely dead (the remote restarted before its new
            # epoch reached us): drop it, not only this stream, so that no session reuses it.
            connection = getattr(self.stream, "connection", None)
            if connection is not None:
                connection.abort(f"no reply from {self.node} within {timeout:.0f}s")
            raise RemoteUnavailable(f"no reply from {self.node} within {timeout:.0f}s") from None
        except STREAM_ERRORS as exc:
            raise RemoteUnavailable(f"connection to {self.node} broke: {exc}") from None
        if not raw:
            raise RemoteUnavailable(f"{self.node} closed the connection")
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("ERROR"):
            raise RemoteRefused(line[7:] if line.startswith("ERROR: ") else line)
        return line

    async def send(self, line: str) -> None:
        """Send one command line."""
        try:
            self.stream.write(line.encode() + b"\n")
            await self.stream.drain()
        except STREAM_ERRORS as exc:
            raise RemoteUnavailable(f"connection to {self.node} broke: {exc}") from None

    async def command(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        await self.send(line)
        return await self.readline(timeout)

    async def close(self) -> None:
        try:
            await self.stream.close()
        except Exception:
            pass

    def abort(self, problem: str) -> None:
        """Drop a connection that stopped working (close() would linger on unacked data)."""
        try:
            self.stream.abort(problem)
        except Exception:
            pass

    @property
    def usable(self) -> bool:
        """Still open, with nothing unread: fit for another command."""
        try:
            return not self.stream.connection.ended and not self.stream.at_eof()
        except Exception:
            return False


def tls_client(extra: dict[str, Any]) -> str:
    """The tls-client a remote unit's control sessions are dialed with ("" for none)."""
    return extra.get("TLSClient") or ""


class SessionPool:
    """Idle control sessions to remote nodes, reused for one-line commands (status, cancel,
    release).

    Each new session costs a round trip for the greeting, and a QUIC handshake across the
    mesh unless a multiplexed connection to the node is open (see mesh.net.stream_pool); a
    small remote job used to open five of them.  Streaming commands (submit, results) end
    their session, so they take one out of the pool for good (:meth:`take`) and spares
    (:data:`POOL_SPARES`) are dialed in the background for the next ones.  A pooled session
    is dropped when the remote node has restarted meanwhile (its routing epoch changed, or it
    has no route), when its connection ended, or after POOL_IDLE_TIME seconds.
    """

    def __init__(self, manager: WorkManager) -> None:
        self.manager = manager
        #: Idle sessions by (node, tls-client name): a unit's ``tlsclient`` needs its own.
        self._idle: dict[tuple[str, str], list[tuple[RemoteConn, Any, float]]] = {}
        self._refilling: set[tuple[str, str]] = set()

    def epoch(self, node: str) -> Any:
        """The remote node's routing epoch (changes when it restarts); None without a route
        (see ``Node.node_epoch``)."""
        return self.manager.node.node_epoch(node)

    def _take(self, node: str, tls: str) -> tuple[RemoteConn, Any] | None:
        idle = self._idle.get((node, tls))
        epoch = self.epoch(node)
        now = time.monotonic()
        while idle:
            conn, conn_epoch, since = idle.pop()
            if not conn.usable or epoch is None or conn_epoch != epoch:
                conn.abort("stale pooled control session")  # dead, or the node restarted
            elif now - since >= POOL_IDLE_TIME:
                self.manager.spawn(conn.close(), f"close-control-session-{node}", peer=node)
            else:
                return conn, conn_epoch
        return None

    async def take(self, node: str, tls: str = "") -> RemoteConn:
        """A session for a streaming command (which ends it): pooled if one is ready, else
        dialed now; either way a spare is dialed in the background for the next one.
        ``tls`` names the tls-client the session is dialed with ("" for none)."""
        taken = self._take(node, tls)
        self._refill(node, tls)
        if taken is not None:
            return taken[0]
        return await self.connect(node, tls)

    def _refill(self, node: str, tls: str) -> None:
        key = (node, tls)
        if key in self._refilling or len(self._idle.get(key, ())) >= POOL_SPARES:
            return

        async def refill() -> None:
            try:
                for _ in range(POOL_SPARES):  # bounded: a dial may yield no usable session
                    if len(self._idle.get(key, ())) >= POOL_SPARES:
                        break
                    conn = await self.connect(node, tls)
                    self._put(node, tls, conn, self.epoch(node))
            except (RemoteUnavailable, RemoteRefused):
                return
            finally:
                self._refilling.discard(key)

        self._refilling.add(key)
        self.manager.spawn(refill(), f"control-session-spare-{node}", peer=node)

    def _put(self, node: str, tls: str, conn: RemoteConn, epoch: Any) -> None:
        idle = self._idle.setdefault((node, tls), [])
        if conn.usable and epoch is not None and len(idle) < POOL_MAX_IDLE:
            idle.append((conn, epoch, time.monotonic()))
            self.manager.wake_in(POOL_IDLE_TIME)  # to close it if it stays idle
        else:
            self.manager.spawn(conn.close(), f"close-control-session-{node}", peer=node)

    async def command(self, node: str, line: str, timeout: float, tls: str = "") -> str:
        """Send one command line to ``node``'s control service and return the reply line."""
        for _ in range(2):
            taken = self._take(node, tls)
            if taken is None:
                conn, epoch, pooled = await self.connect(node, tls), self.epoch(node), False
            else:
                (conn, epoch), pooled = taken, True
            try:
                reply = await conn.command(line, timeout=timeout)
            except RemoteRefused:
                self._put(node, tls, conn, epoch)  # an ERROR reply leaves the session usable
                raise
            except RemoteUnavailable:
                conn.abort("control command failed")
                if pooled:
                    continue  # the pooled session had died unnoticed: once more, freshly
                raise
            except BaseException:
                conn.abort("control command interrupted")
                raise
            self._put(node, tls, conn, epoch)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def sweep(self) -> float | None:
        """Close sessions idle for POOL_IDLE_TIME (called by the work manager's watch);
        returns the seconds until the next one will be, or None while none is idle."""
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            node = key[0]
            keep = []
            for conn, epoch, since in idle:
                if conn.usable and now - since < POOL_IDLE_TIME:
                    keep.append((conn, epoch, since))
                elif conn.usable:
                    self.manager.spawn(conn.close(), f"close-control-session-{node}", peer=node)
                else:
                    conn.abort("stale pooled control session")
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        oldest = min((since for idle in self._idle.values() for _, _, since in idle),
                     default=None)
        return None if oldest is None else max(0.0, oldest + POOL_IDLE_TIME - now)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn, _, _ in idle:
                conn.abort("node shutting down")
        self._idle.clear()

    async def connect(self, node: str, tls: str = "") -> RemoteConn:
        """Dial ``node:control`` (through the tls-client ``tls``, if any) and check its
        greeting."""
        try:
            stream = await self.manager.node.dial_stream(node, "control", tls=tls or None,
                                                         timeout=CONNECT_TIMEOUT, pooled=True)
        except Exception as exc:
            raise RemoteUnavailable(f"cannot reach {node}: {exc}") from None
        conn = RemoteConn(stream, node)
        try:
            greeting = GREETING_PATTERN.fullmatch(await conn.readline(timeout=CONNECT_TIMEOUT))
        except (RemoteUnavailable, RemoteRefused):
            await conn.close()
            raise
        if greeting is None or greeting.group(1) != node:
            await conn.close()
            raise RemoteUnavailable(f"{node}:control did not greet as node {node}")
        return conn
