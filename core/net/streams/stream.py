"""One mesh stream: :class:`MeshStream`, a bidirectional byte stream on a QUIC connection."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

from mesh.net.stream_errors import StreamAborted, StreamClosedError, StreamError
from mesh.net.streams.waiters import resolve

if TYPE_CHECKING:  # pragma: no cover - the connection module imports this one
    from mesh.net.streams.connection import StreamConnection

#: Default longest line MeshStream.readline() returns.
LINE_LIMIT = 1 << 20


class MeshStream:
    """One bidirectional byte stream over a mesh QUIC connection.

    Behaves like an asyncio ``StreamReader`` and ``StreamWriter`` combined:

    * ``read(n)`` returns up to ``n`` bytes, ``b""`` at EOF (the peer's FIN, or the peer
      closing the connection with error 0 "normal close"); ``readline()`` and
      ``readexactly()`` work like ``StreamReader``'s.  Other connection errors raise
      :class:`StreamAborted` once buffered data is consumed.
    * ``write()`` queues data, ``drain()`` waits while more than ``send_buffer`` bytes are
      unacknowledged, ``write_eof()`` sends FIN (half-close), ``close()`` sends FIN, waits
      briefly for it to be acknowledged and then closes the connection (error 0
      "normal close"), ``abort(problem)`` closes it at once with error 500.
    """

    def __init__(self, conn: StreamConnection, stream_id: int) -> None:
        self._conn = conn
        self._loop = conn._loop
        self.stream_id = stream_id
        self.remote_node = conn.remote_node
        self.remote_service = conn.remote_service
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already read
        self._buffered = 0
        self._eof = False
        self._error: StreamError | None = None
        self._write_error: StreamError | None = None
        self._eof_sent = False
        self._closed = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._send_waiter: asyncio.Future[None] | None = None
        self._send_target = 0

    @property
    def connection(self) -> StreamConnection:
        """The QUIC connection carrying this stream."""
        return self._conn

    def at_eof(self) -> bool:
        """True when everything was read and the peer sent FIN (or closed normally)."""
        return self._buffered == 0 and self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet (``read`` returns them without waiting)."""
        return self._buffered

    # -- called by the connection ------------------------------------------------------

    def _feed(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
        if end:
            self._eof = True
        waiter = self._read_waiter
        if waiter is not None:
            resolve(waiter)

    def _connection_lost(self, error: StreamError | None) -> None:
        """The connection ended; ``error`` None means a normal close (reads hit EOF)."""
        if error is None:
            self._eof = True
        elif not self._eof and self._error is None:
            self._error = error
        if self._write_error is None:
            self._write_error = error or StreamClosedError("connection closed")
        for waiter in (self._read_waiter, self._send_waiter):
            if waiter is not None:
                resolve(waiter)

    def _reset_received(self, code: int) -> None:
        if not self._eof and self._error is None:
            self._error = StreamAborted(f"stream reset by peer (error {code})", code)
        if self._read_waiter is not None:
            resolve(self._read_waiter)

    def _stop_received(self, code: int) -> None:
        if self._write_error is None:
            self._write_error = StreamAborted(f"peer stopped reading (error {code})", code)
        if self._send_waiter is not None:
            resolve(self._send_waiter)

    def _check_send_waiter(self) -> None:
        if self._conn._quic.send_backlog(self.stream_id) <= self._send_target:
            resolve(self._send_waiter)  # type: ignore[arg-type]

    # -- reading -----------------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        chunk = self._chunks[0]
        head = self._head
        avail = len(chunk) - head
        if avail <= n:
            self._chunks.popleft()
            self._head = 0
            data = chunk[head:] if head else chunk
        else:
            data = chunk[head:head + n]
            self._head = head + n
        self._buffered -= len(data)
        self._conn._consumed(self.stream_id, len(data))
        return data

    def _take_exactly(self, n: int) -> bytes:
        if self._chunks and n <= len(self._chunks[0]) - self._head:
            return self._take(n)
        parts = []
        while n > 0 and self._chunks:
            part = self._take(n)
            parts.append(part)
            n -= len(part)
        return b"".join(parts)

    async def _wait_data(self) -> None:
        """Wait until more data, EOF or an error arrives."""
        if self._eof or self._error is not None:
            return
        waiter = self._loop.create_future()
        self._read_waiter = waiter
        try:
            await waiter
        finally:
            self._read_waiter = None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes (at least one), or ``b""`` at EOF."""
        if n <= 0:
            return b""
        while not self._buffered:
            if self._eof:
                return b""
            self._raise_if_failed()
            await self._wait_data()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises ``asyncio.IncompleteReadError`` at an early EOF."""
        while self._buffered < n:
            if self._eof:
                partial = self._take_exactly(self._buffered) if self._buffered else b""
                raise asyncio.IncompleteReadError(partial, n)
            self._raise_if_failed()
            await self._wait_data()
        return self._take_exactly(n)

    def _find(self, sep: bytes, start: int) -> int:
        pos = 0
        for i, chunk in enumerate(self._chunks):
            begin = self._head if i == 0 else 0
            length = len(chunk) - begin
            if start < pos + length:
                j = chunk.find(sep, begin + max(0, start - pos))
                if j >= 0:
                    return pos + j - begin
            pos += length
        return -1

    async def readline(self, *, limit: int = LINE_LIMIT) -> bytes:
        """Bytes up to and including ``b"\\n"``; the rest of the data at EOF.

        Raises ``ValueError`` (data stays buffered) when no newline shows up within
        ``limit`` bytes, like ``StreamReader.readline``; without a limit a line longer than
        the receive window would wait forever.
        """
        scanned = 0
        while True:
            idx = self._find(b"\n", scanned)
            if idx >= 0:
                if idx + 1 > limit:
                    raise ValueError(f"line longer than {limit} bytes")
                return self._take_exactly(idx + 1)
            scanned = self._buffered
            if scanned >= limit:
                raise ValueError(f"line longer than {limit} bytes")
            if self._eof:
                return self._take_exactly(self._buffered) if self._buffered else b""
            self._raise_if_failed()
            await self._wait_data()

    # -- writing -----------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending (call :meth:`drain` to respect flow control)."""
        if self._eof_sent or self._closed:
            raise StreamClosedError("write after write_eof() or close()")
        if self._write_error is not None:
            raise self._write_error
        if data:
            self._conn._send(self.stream_id, data, False)

    def write_eof(self) -> None:
        """Send FIN: the peer reads EOF; this side can still read."""
        if self._eof_sent or self._write_error is not None:
            return
        self._eof_sent = True
        self._conn._send(self.stream_id, b"", True)

    def can_write_eof(self) -> bool:
        return True

    async def _wait_backlog(self, target: int) -> None:
        while (self._write_error is None
               and self._conn._quic.send_backlog(self.stream_id) > target):
            waiter = self._loop.create_future()
            self._send_waiter, self._send_target = waiter, target
            try:
                await waiter
            finally:
                self._send_waiter = None

    async def drain(self) -> None:
        """Wait while too much written data is unacknowledged (flow control)."""
        limit = self._conn._tuning.send_buffer
        if self._conn._quic.send_backlog(self.stream_id) > limit:
            await self._wait_backlog(limit // 2)
        if self._write_error is not None and not isinstance(self._write_error,
                                                            StreamClosedError):
            raise self._write_error

    async def close(self, *, linger: float = 5.0) -> None:
        """Send FIN, wait up to ``linger`` s for the peer to acknowledge everything, then
        close the connection with application error 0 "normal close".

        On a multiplexed connection only this stream ends (FIN; if the peer is still
        sending, STOP_SENDING 499): the connection stays open for other streams and the
        unacknowledged data is still retransmitted, so nothing waits here.
        """
        if self._closed:
            return
        self.write_eof()
        self._closed = True
        if self._conn.mux and not self._conn.ended:
            self._conn._drop_stream(self)
            return
        if self._write_error is None:
            try:
                async with asyncio.timeout(linger):
                    await self._wait_backlog(0)
            except asyncio.TimeoutError:
                pass
        self._conn.close()

    def abort(self, problem: str) -> None:
        """Close the connection at once with application error 500 and ``problem``; on a
        multiplexed connection, reset this stream only (the peer reads error 500)."""
        self._closed = True
        if self._conn.mux and not self._conn.ended:
            self._conn._reset_stream(self, problem)
        else:
            self._conn.abort(problem)
