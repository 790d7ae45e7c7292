"""Multiplexed mesh stream connections to nodes of this project, shared by dials.

Receptor opens one QUIC connection per mesh stream: a handshake (a round trip through
every relay and a few milliseconds of CPU on both ends) before each control session.  When
both ends are nodes of this project they negotiate ALPN ``mesh-mux/1`` instead (see
:mod:`mesh.net.streams`), and a dial through a :class:`StreamPool` opens its stream on a
connection the pool already holds to the same ``node:service`` (and TLS client), without a
handshake.  Concurrent dials to the same place wait for one handshake rather than each
starting their own.  A Go Receptor node picks ALPN ``netceptor``: such connections are never
pooled, and each dial is a connection of its own, as in Receptor (once the pool has seen a
place pick ``netceptor``, dials there no longer wait for each other).

A pooled connection is dropped when the remote node restarted (its routing epoch changed:
the new process does not know the connection, so a stream opened on it would wait for the
idle timeout), when it ended, and after :data:`IDLE_CLOSE` seconds without an open stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import structlog

log = structlog.get_logger(__name__)

#: Seconds a pooled connection stays open without any stream.
IDLE_CLOSE = 20.0
#: Streams open at once on one connection before the pool dials another (aioquic grants
#: 128 concurrent bidirectional streams).
MAX_STREAMS = 100

#: What a pool entry is keyed by: (node, service, TLS client name or "").
PoolKey = tuple[str, str, Hashable]


@dataclass
class _Pooled:
    conn: Any  # mesh.net.streams.StreamConnection (aioquic loads with the first stream)
    epoch: Any
    idle_timer: asyncio.TimerHandle | None = field(default=None)


class StreamPool:
    """Multiplexed client connections by :data:`PoolKey`; ``epoch_of(node)`` is the node's
    current routing epoch (a restart changes it)."""

    def __init__(self, epoch_of: Callable[[str], Any]) -> None:
        self._epoch_of = epoch_of
        self._conns: dict[PoolKey, list[_Pooled]] = {}
        self._dialing: dict[PoolKey, asyncio.Future[None]] = {}
        #: Places whose listener picked plain ``netceptor`` (Go), with the node's epoch then:
        #: dials there neither wait for each other nor look for a pooled connection.
        self._plain: dict[PoolKey, Any] = {}
        self._closed = False

    def plain(self, key: PoolKey) -> bool:
        """True if ``key``'s listener does not multiplex (as of the node's current epoch)."""
        return key in self._plain and self._plain[key] == self._epoch_of(key[0])

    def connection(self, key: PoolKey) -> Any | None:
        """A live pooled connection for ``key`` with room for another stream, or None."""
        entries = self._conns.get(key)
        if not entries:
            return None
        epoch = self._epoch_of(key[0])
        for entry in list(entries):
            conn = entry.conn
            if conn.ended or entry.epoch != epoch:
                self._forget(key, entry, "remote node restarted" if not conn.ended else "")
                continue
            if conn.open_streams < MAX_STREAMS:
                if entry.idle_timer is not None:
                    entry.idle_timer.cancel()
                    entry.idle_timer = None
                return conn
        return None

    async def wait_dialing(self, key: PoolKey, timeout: float) -> None:
        """If a dial for ``key`` is under way, wait (at most ``timeout`` s) until it ends."""
        pending = self._dialing.get(key)
        if pending is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(pending)
        except TimeoutError:
            pass

    def dialing(self, key: PoolKey) -> Callable[[Any | None], None]:
        """Note a dial for ``key`` under way; call the returned function with its connection
        (or None when it failed) to pool it and release dials waiting for it."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._dialing.setdefault(key, done)

        def finished(conn: Any | None) -> None:
            if self._dialing.get(key) is done:
                del self._dialing[key]
            if not done.done():
                done.set_result(None)
            if conn is None:
                return
            if not conn.mux:
                self._plain[key] = self._epoch_of(key[0])
            elif not conn.ended and not self._closed:
                self._plain.pop(key, None)
                self._add(key, conn)

        return finished

    def _add(self, key: PoolKey, conn: Any) -> None:
        entry = _Pooled(conn, self._epoch_of(key[0]))
        self._conns.setdefault(key, []).append(entry)

        def idle(_: Any) -> None:
            if entry.idle_timer is None and not conn.ended:
                entry.idle_timer = asyncio.get_running_loop().call_later(
                    IDLE_CLOSE, self._forget, key, entry, "idle")

        def ended(_: Any, previous: Callable[[Any], None] | None = conn.on_ended) -> None:
            self._forget(key, entry, "")
            if previous is not None:
                previous(conn)

        conn.on_idle = idle
        conn.on_ended = ended
        if not conn.open_streams:  # its first stream is gone already
            idle(conn)
        log.debug("stream_pool.added", peer=key[0], service=key[1])

    def _forget(self, key: PoolKey, entry: _Pooled, why: str) -> None:
        entries = self._conns.get(key)
        if entries is not None and entry in entries:
            entries.remove(entry)
            if not entries:
                del self._conns[key]
        if entry.idle_timer is not None:
            entry.idle_timer.cancel()
            entry.idle_timer = None
        conn = entry.conn
        if conn.ended or not why:
            return
        log.debug("stream_pool.closed", peer=key[0], service=key[1], reason=why)
        if why in ("idle", "node stopping"):
            conn.close()
        else:
            conn.abort(why)

    def close(self) -> None:
        """Close every pooled connection (node shutdown)."""
        self._closed = True
        for key, entries in list(self._conns.items()):
            for entry in list(entries):
                self._forget(key, entry, "node stopping")
