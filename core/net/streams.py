"""Mesh streams: Receptor's stream layer, QUIC carried over mesh datagrams (spec §4).

Each datagram payload is one QUIC UDP payload; the peer "address" is ``(node, service)``.
The QUIC state machine is aioquic's sans-I/O :class:`~aioquic.quic.connection.QuicConnection`;
this module is the asyncio glue plus Receptor's conventions:

* ALPN ``netceptor``, TLS 1.3, certificates per :mod:`mesh.net.quic_tls`.
* Between two nodes of this project, a dialer that pools connections (``pool=``) also offers
  ALPN ``mesh-mux/1`` first; a listener of ours picks it, Go Receptor picks ``netceptor``.
  On a ``mesh-mux/1`` connection every client-initiated bidirectional stream is a mesh
  stream of its own (each starts with the ``0x00`` byte), closing a stream leaves the
  connection open for the next one, and aborting one resets that stream only.  See
  :mod:`mesh.net.stream_pool`.
* The dialer opens the first bidirectional stream (ID 0) and writes one ``0x00`` byte; the
  listener waits up to 60 s for it (else application error 500 "Accept Timeout"), requires
  that byte to be ``0x00`` (else 500 "Read Data Error") and hands the stream out.
* Idle timeout 30 s, handshake timeout 15 s, client keep-alive PING every 15 s.
* ``write_eof()`` sends FIN (Receptor's EOF), ``close()`` sends CONNECTION_CLOSE with
  application error 0 "normal close", failures use application error 500.  After a close
  we initiate, the endpoint lingers for the RFC 9000 closing period (at most 3 s) to repeat
  CONNECTION_CLOSE if the peer missed it.

Wiring for the node (see also :class:`StreamConnection`):

* ``listen_stream(endpoint, max_datagram_for=...)`` reads the listener's endpoint itself;
  ``dial_stream(open_endpoint, node, service, ...)`` opens and reads one ephemeral endpoint
  per dial and closes it when the connection ends.  Both only use
  :class:`~mesh.net.datagram.DatagramEndpoint` methods.
* Unreachable notifications: pass ``on_connection=`` to :func:`dial_stream` to learn the
  :class:`StreamConnection` (before any datagram is sent) and call its :meth:`abort` with the
  problem text when "service unknown" arrives for its remote node:service.

Performance: the handshake runs with 1200-byte datagrams (QUIC requires padded 1200-byte
Initials; quic-go drops anything above 1452 bytes), then each side raises its datagram size
to ``max_datagram_for(remote node)``.  Incoming datagrams are processed in batches with one
``datagrams_to_send`` per batch, the retransmission timer is only moved when it must fire
earlier, receive windows follow what the application has read (aioquic would otherwise grow
them without bound), and pacing is off by default (mesh links are reliable byte streams).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable

import structlog
from aioquic.buffer import Buffer, size_uint_var
from aioquic.quic import events
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    END_STATES,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
)
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream
from cryptography import x509

from mesh.net.datagram import DatagramEndpoint, EndpointClosed, EndpointFactory, MaxDatagramFor
from mesh.net.stream_pool import StreamPool
from mesh.net.stream_errors import (
    ERROR_FAILURE,
    DialError,
    DialTimeout,
    ListenerClosed,
    StreamAborted,
    StreamClosedError,
    StreamError,
)
from mesh.net.quic_tls import (
    ALPN,
    MUX_ALPN,
    QuicTLSOptions,
    TLSVerificationError,
    configure_client,
    configure_server,
    verify_client_chain,
    verify_server_chain,
)

log = structlog.get_logger(__name__)

HANDSHAKE_TIMEOUT = 15.0
IDLE_TIMEOUT = 30.0
KEEPALIVE_PERIOD = 15.0
ACCEPT_TIMEOUT = 60.0
#: Application error codes Receptor uses on mesh streams.
ERROR_NORMAL = 0
NORMAL_CLOSE_REASON = "normal close"
#: Every QUIC connection starts with this datagram size (mandatory for Initial packets).
HANDSHAKE_DATAGRAM = SMALLEST_MAX_DATAGRAM_SIZE
#: Our own connection IDs; short-header packets carry them at bytes 1..8.
CID_LENGTH = 8
#: Closing period bounds and how often CONNECTION_CLOSE is repeated within it.
MAX_CLOSING_PERIOD = 3.0
MAX_CLOSE_RESENDS = 8
#: Default longest line MeshStream.readline() returns.
LINE_LIMIT = 1 << 20
#: A multiplexed connection's receive window is this many times StreamTuning's
#: connection_window: its streams share it, and a few slow readers must not stall the rest.
MUX_WINDOW_FACTOR = 4
#: Application error code for a stream whose reader stopped (Receptor's cancelled reads).
ERROR_READ_CANCELLED = 499
#: aioquic writes 2-byte STREAM frame lengths, so frames above this need our override.
_MAX_2BYTE_VARINT = 16383
_TLS_BAD_CERTIFICATE = QuicErrorCode.CRYPTO_ERROR + 42


# -- tuning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTuning:
    """Performance knobs of a mesh stream connection (defaults suit mesh links).

    ``stream_window``/``connection_window``: receive credit granted beyond what the
    application has read (bounds memory used by a slow reader).
    ``send_buffer``: ``drain()`` waits while more than this is unacknowledged.
    ``initial_window_packets``: congestion window after the handshake, in datagrams.
    ``pacing``: let aioquic pace packets (off: mesh links are reliable byte streams).
    ``batch``: datagrams processed before yielding so replies get flushed.
    """

    stream_window: int = 8 << 20
    connection_window: int = 16 << 20
    send_buffer: int = 8 << 20
    initial_window_packets: int = 64
    pacing: bool = False
    batch: int = 32


DEFAULT_TUNING = StreamTuning()


# -- aioquic connection with mesh tweaks (aioquic private internals live only here) --------


class _NoPacer(QuicPacketPacer):
    """A pacer that never holds packets back."""

    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]
        return None

    def update_after_send(self, now: float) -> None:
        pass

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        pass


class _MeshQuicConnection(QuicConnection):
    """aioquic's QuicConnection with application-driven flow control and big STREAM frames.

    * Receive windows advance with the bytes the application consumed (:meth:`consumed`);
      stock aioquic doubles them whenever data merely arrives.
    * STREAM frames larger than 16383 bytes get a 4-byte length (stock aioquic always writes
      a 2-byte length and would corrupt frames in datagrams above ~16 KB).
    * The datagram size can be raised once the handshake is done.
    * A server can request a client certificate (``request_client_cert``); aioquic then
      checks its CertificateVerify signature and :func:`verify_client_chain` the rest.
    """

    def __init__(self, *, configuration: QuicConfiguration, tuning: StreamTuning,
                 original_destination_connection_id: bytes | None = None,
                 request_client_cert: bool = False) -> None:
        self._mesh_request_client_cert = request_client_cert
        super().__init__(configuration=configuration,
                         original_destination_connection_id=original_destination_connection_id)
        self._mesh_stream_window = tuning.stream_window
        self._mesh_conn_window = tuning.connection_window
        self._mesh_consumed: dict[int, int] = {}
        self._mesh_consumed_total = 0
        if not tuning.pacing:
            self._loss._pacer = _NoPacer(max_datagram_size=self._max_datagram_size)

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self._mesh_request_client_cert:
            # aioquic's server sends a CertificateRequest only with this (test-only) flag.
            self.tls._request_client_certificate = True

    # -- state queries -------------------------------------------------------------------

    @property
    def close_event(self) -> events.ConnectionTerminated | None:
        """Why the connection is closing/closed, as soon as that is known."""
        return self._close_event

    @property
    def ended(self) -> bool:
        return self._state in END_STATES

    @property
    def has_events(self) -> bool:
        return bool(self._events)

    @property
    def handshake_complete(self) -> bool:
        return self._handshake_complete

    def closing_period(self) -> float:
        """RFC 9000 closing period: three probe timeouts."""
        return 3 * self._loss.get_probe_timeout()

    def peer_certificates(self) -> list[x509.Certificate]:
        tls = getattr(self, "tls", None)
        if tls is None or tls._peer_certificate is None:
            return []
        return [tls._peer_certificate, *tls._peer_certificate_chain]

    def widen_connection_window(self, factor: int) -> None:
        """Grant ``factor`` times the connection window from now on (multiplexed
        connections: their streams share it)."""
        self._mesh_conn_window *= factor

    def credit_undelivered(self, stream_id: int) -> None:
        """Count a reset stream's bytes that arrived (or that its final size announced) but
        will never be delivered as read: else the connection window would shrink for good,
        which a long-lived multiplexed connection cannot afford."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            receiver = stream.receiver
            self._mesh_consumed_total += max(0, receiver.highest_offset
                                             - receiver._buffer_start)

    def forget_discarded(self) -> None:
        """Drop the read counts of streams aioquic has discarded (a pooled connection may
        carry millions of streams in its life)."""
        counts = self._mesh_consumed
        if len(counts) > 64 + len(self._streams):
            for stream_id in [i for i in counts if self._stream_is_discarded(i)]:
                del counts[stream_id]

    def discarded(self, stream_id: int) -> bool:
        """The stream was opened and aioquic has since dropped its state (both sides done)."""
        return self._stream_is_discarded(stream_id)

    def send_backlog(self, stream_id: int) -> int:
        """Bytes written to a stream but not yet acknowledged (+1 for an unacked FIN)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        backlog = len(sender._buffer)
        if sender._buffer_fin is not None and not sender.is_finished:
            backlog += 1
        return backlog

    # -- tuning --------------------------------------------------------------------------

    def raise_datagram_size(self, size: int, initial_window: int) -> None:
        """Use ``size``-byte datagrams from now on and open the congestion window."""
        if size > self._max_datagram_size:
            self._max_datagram_size = size
            cc = self._loss._cc
            if hasattr(cc, "_max_datagram_size"):
                cc._max_datagram_size = size
            self._loss._pacer._max_datagram_size = size
        cc = self._loss._cc
        if cc.congestion_window < initial_window:
            cc.congestion_window = initial_window

    def consumed(self, stream_id: int, count: int) -> bool:
        """Record ``count`` bytes read by the application; True if credit should be sent now."""
        used = self._mesh_consumed.get(stream_id, 0) + count
        self._mesh_consumed[stream_id] = used
        self._mesh_consumed_total += count
        window = self._mesh_stream_window
        stream = self._streams.get(stream_id)
        if stream is not None and used + window - stream.max_stream_data_local >= window // 2:
            return True
        return (self._mesh_consumed_total + self._mesh_conn_window - self._local_max_data.value
                >= self._mesh_conn_window // 2)

    # -- overrides of aioquic internals (aioquic 1.7) --------------------------------------

    def _write_connection_limits(self, builder: QuicPacketBuilder,
                                 space: QuicPacketSpace) -> None:
        max_data = self._local_max_data
        target = self._mesh_consumed_total + self._mesh_conn_window
        if target - max_data.value >= self._mesh_conn_window // 2:
            max_data.value = target
        for limit in (max_data, self._local_max_streams_bidi, self._local_max_streams_uni):
            if limit is not max_data and limit.sent - limit.used >= limit.value - limit.sent:
                continue  # batch MAX_STREAMS like aioquic does
            if limit.value != limit.sent:
                buf = builder.start_frame(limit.frame_type,
                                          capacity=CONNECTION_LIMIT_FRAME_CAPACITY,
                                          handler=self._on_connection_limit_delivery,
                                          handler_args=(limit,))
                buf.push_uint_var(limit.value)
                limit.sent = limit.value

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        if stream.max_stream_data_local:
            target = self._mesh_consumed.get(stream.stream_id, 0) + self._mesh_stream_window
            if target - stream.max_stream_data_local >= self._mesh_stream_window // 2:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA,
                                      capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._on_max_stream_data_delivery,
                                      handler_args=(stream,))
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_stream_frame(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                            stream: QuicStream, max_offset: int) -> int:
        if builder.remaining_flight_space <= _MAX_2BYTE_VARINT:
            return super()._write_stream_frame(builder, space, stream, max_offset)
        sender = stream.sender
        next_offset = sender.next_offset
        overhead = 5 + size_uint_var(stream.stream_id) + (
            size_uint_var(next_offset) if next_offset else 0)
        previous_highest = sender.highest_offset
        frame = sender.get_frame(builder.remaining_flight_space - overhead, max_offset)
        if frame is None:
            return 0
        frame_type = QuicFrameType.STREAM_BASE | 2
        if frame.offset:
            frame_type |= 4
        if frame.fin:
            frame_type |= 1
        buf = builder.start_frame(frame_type, capacity=overhead,
                                  handler=sender.on_data_delivery,
                                  handler_args=(frame.offset, frame.offset + len(frame.data),
                                                frame.fin))
        buf.push_uint_var(stream.stream_id)
        if frame.offset:
            buf.push_uint_var(frame.offset)
        buf.push_uint32(len(frame.data) | 0x80000000)  # 4-byte varint length
        buf.push_bytes(frame.data)
        return sender.highest_offset - previous_highest


def _check_aioquic() -> None:
    """Fail at import if aioquic lost the internals the overrides above rely on."""
    for name in ("_write_connection_limits", "_write_stream_limits", "_write_stream_frame",
                 "_on_connection_limit_delivery", "_on_max_stream_data_delivery",
                 "_stream_is_discarded"):
        if not hasattr(QuicConnection, name):  # pragma: no cover - depends on aioquic
            raise ImportError(f"unsupported aioquic version: QuicConnection.{name} missing")


_check_aioquic()


def _configuration(is_client: bool, tuning: StreamTuning, *,
                   mux: bool = True) -> QuicConfiguration:
    """A client offers ``mesh-mux/1`` only when ``mux``; a server always accepts it."""
    return QuicConfiguration(
        alpn_protocols=[MUX_ALPN, ALPN] if mux else [ALPN],
        is_client=is_client,
        idle_timeout=IDLE_TIMEOUT,
        max_datagram_size=HANDSHAKE_DATAGRAM,
        max_data=tuning.connection_window,
        max_stream_data=tuning.stream_window,
        connection_id_length=CID_LENGTH,
    )


def _resolve(fut: asyncio.Future[None], exc: BaseException | None = None) -> None:
    """Complete ``fut`` unless it is already done (or cancelled by a timed-out waiter)."""
    if not fut.done():
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


# -- the byte stream -----------------------------------------------------------------------


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
            _resolve(waiter)

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
                _resolve(waiter)

    def _reset_received(self, code: int) -> None:
        if not self._eof and self._error is None:
            self._error = StreamAborted(f"stream reset by peer (error {code})", code)
        if self._read_waiter is not None:
            _resolve(self._read_waiter)

    def _stop_received(self, code: int) -> None:
        if self._write_error is None:
            self._write_error = StreamAborted(f"peer stopped reading (error {code})", code)
        if self._send_waiter is not None:
            _resolve(self._send_waiter)

    def _check_send_waiter(self) -> None:
        if self._conn._quic.send_backlog(self.stream_id) <= self._send_target:
            _resolve(self._send_waiter)  # type: ignore[arg-type]

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


# -- one QUIC connection -------------------------------------------------------------------


class StreamConnection:
    """One QUIC connection over mesh datagrams: drives aioquic, owns timers and the stream.

    Made by :func:`dial_stream` and :class:`StreamListener`; the node only needs
    :meth:`abort` (on "service unknown" unreachable notifications for ``remote_node``:
    ``remote_service``).  ``close()`` is the graceful counterpart.
    """

    def __init__(self, quic: _MeshQuicConnection, *, endpoint: DatagramEndpoint,
                 remote_node: str, remote_service: str, max_datagram_for: MaxDatagramFor,
                 tls: QuicTLSOptions | None, tuning: StreamTuning) -> None:
        self._loop = asyncio.get_running_loop()
        self._quic = quic
        self._endpoint = endpoint
        self.remote_node = remote_node
        self.remote_service = remote_service
        self._addr = (remote_node, remote_service)
        self._max_datagram_for = max_datagram_for
        self._tls = tls
        self._tuning = tuning
        self._is_client = quic.configuration.is_client
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._flush_scheduled = False
        self._streams: dict[int, MeshStream] = {}
        self._accepted_any = False
        #: True once ``mesh-mux/1`` was negotiated: many streams, one after another or at once.
        self.mux = False
        self._established: asyncio.Future[None] = self._loop.create_future()
        self._closing_noted = False
        self._ended = False
        self._error: StreamError | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._ignored_streams: set[int] = set()
        self._send_failures = 0
        self._close_packets: list[tuple[bytes, tuple[str, str]]] | None = None
        self._close_resends = 0
        #: Multiplexed connections: called when the last open stream ended (pool idle timer).
        self.on_idle: Callable[[StreamConnection], None] | None = None
        #: Called once when the connection is over (listener bookkeeping, endpoint close).
        self.on_ended: Callable[[StreamConnection], None] | None = None
        #: Server side: called with the stream once the 0x00 byte arrived.
        self.on_stream: Callable[[MeshStream], None] | None = None
        #: Server side: called with each connection ID issued / retired.
        self.on_cid: Callable[[StreamConnection, bytes, bool], None] | None = None

    # -- public ------------------------------------------------------------------------

    @property
    def is_client(self) -> bool:
        return self._is_client

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def open_streams(self) -> int:
        """Streams of this connection not yet closed or aborted on this side."""
        return len(self._streams)

    def open_stream(self) -> MeshStream:
        """Another stream on an established multiplexed client connection (no handshake)."""
        if self._ended or not self.mux or not self._is_client:
            raise StreamClosedError("not an open multiplexed client connection")
        return self._open_client_stream()

    def abort(self, problem: str) -> None:
        """Fail the connection now with application error 500 and ``problem``.

        The node calls this when an unreachable notification reports ``problem`` (e.g.
        "service unknown") for this connection's remote node:service; a pending dial then
        fails with :class:`DialError` and stream operations raise :class:`StreamAborted`.
        """
        if self._ended:
            return
        log.debug("stream.abort", peer=self.remote_node, service=self.remote_service,
                  problem=problem)
        self._close_quic(ERROR_FAILURE, problem)
        self._end(StreamAborted(problem))

    def close(self) -> None:
        """Close with application error 0 "normal close" (the peer reads EOF)."""
        if self._ended:
            return
        self._close_quic(ERROR_NORMAL, NORMAL_CLOSE_REASON)
        self._end(None)

    # -- datagram input ----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, str] | None = None) -> None:
        """Feed one QUIC datagram from ``addr`` (defaults to the remote address)."""
        if self._ended:
            if self._close_packets is not None and self._close_resends < MAX_CLOSE_RESENDS:
                self._close_resends += 1
                self._transmit(self._close_packets)
            return
        self._quic.receive_datagram(data, addr or self._addr, self._loop.time())
        self._process_events()
        for stream in self._streams.values():
            if stream._send_waiter is not None:
                stream._check_send_waiter()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    # -- internals ---------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._ended:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._ended:
            return
        quic = self._quic
        datagrams = quic.datagrams_to_send(self._loop.time())
        if datagrams and not self._transmit(datagrams):
            return
        if quic.has_events:
            self._process_events()
        if not self._ended:
            self._arm_timer()

    def _transmit(self, datagrams: list[tuple[bytes, tuple[str, str]]]) -> bool:
        """Send datagrams; False if the endpoint is gone (the connection then ended)."""
        sendto = self._endpoint.sendto
        for data, addr in datagrams:
            try:
                sendto(data, addr[0], addr[1])
            except EndpointClosed:
                self._end(StreamAborted("endpoint closed"))
                return False
            except Exception as exc:  # routing errors: QUIC retransmits later
                self._send_failures += 1
                if self._send_failures == 1:
                    log.debug("stream.send_failed", peer=addr[0], service=addr[1],
                              error=str(exc))
        return True

    def _arm_timer(self) -> None:
        at = self._quic.get_timer()
        timer = self._timer
        if at is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        if timer is not None:
            if self._timer_at <= at:
                return  # fires early and re-arms: cheaper than rescheduling every packet
            timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._ended:
            return
        now = self._loop.time()
        at = self._quic.get_timer()
        if at is None:
            return
        if now < at:
            self._arm_timer()
            return
        self._quic.handle_timer(now)
        self._process_events()
        self._flush()

    def _process_events(self) -> None:
        quic = self._quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                self._on_stream_data(event)
            elif isinstance(event, events.HandshakeCompleted):
                self._on_handshake(event)
            elif isinstance(event, events.ConnectionIdIssued):
                if self.on_cid is not None:
                    self.on_cid(self, event.connection_id, True)
            elif isinstance(event, events.ConnectionIdRetired):
                if self.on_cid is not None:
                    self.on_cid(self, event.connection_id, False)
            elif isinstance(event, events.StreamReset):
                quic.credit_undelivered(event.stream_id)
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._reset_received(event.error_code)
            elif isinstance(event, events.StopSendingReceived):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._stop_received(event.error_code)
                    quic.reset_stream(event.stream_id, event.error_code)
            elif isinstance(event, events.ConnectionTerminated):
                self._end(self._close_error(event))
                return
            if self._ended:
                return
        if quic.close_event is not None and not self._closing_noted:
            # The peer closed (draining) or aioquic failed the connection: report it now
            # rather than after the closing period.
            self._closing_noted = True
            error = self._close_error(quic.close_event)
            for stream in list(self._streams.values()):
                stream._connection_lost(error)
            self._settle_established(error)

    def _settle_established(self, error: StreamError | None) -> None:
        # Only a dial awaits this future; a server-side one never carries an exception
        # (nobody would retrieve it).
        if self._is_client:
            _resolve(self._established, self._dial_error(error))
        else:
            _resolve(self._established)

    def _close_error(self, event: events.ConnectionTerminated) -> StreamError | None:
        if event.error_code == ERROR_NORMAL and event.frame_type is None:
            return None
        reason = event.reason_phrase or f"connection closed with error {event.error_code}"
        return StreamAborted(reason, event.error_code)

    def _dial_error(self, error: StreamError | None) -> DialError:
        if isinstance(error, DialError):
            return error
        return DialError(str(error) if error is not None else "connection closed")

    def _on_handshake(self, event: events.HandshakeCompleted) -> None:
        if event.alpn_protocol not in (ALPN, MUX_ALPN):
            self._fail_tls(f"peer did not negotiate ALPN {ALPN!r}")
            return
        self.mux = event.alpn_protocol == MUX_ALPN
        if self.mux:
            self._quic.widen_connection_window(MUX_WINDOW_FACTOR)
        if self._is_client:
            try:
                verify_server_chain(self._quic.peer_certificates(), self._tls,
                                    remote_node=self.remote_node)
            except TLSVerificationError as exc:
                self._fail_tls(str(exc), exc)
                return
        elif self._tls is not None and self._tls.require_client_cert:
            try:
                verify_client_chain(self._quic.peer_certificates(), self._tls,
                                    remote_node=self.remote_node)
            except TLSVerificationError as exc:
                log.warning("stream.client_certificate_refused", peer=self.remote_node,
                            service=self.remote_service, problem=str(exc))
                self._fail_tls(str(exc), exc)
                return
        size = max(HANDSHAKE_DATAGRAM, int(self._max_datagram_for(self.remote_node)))
        self._quic.raise_datagram_size(size, size * self._tuning.initial_window_packets)
        log.debug("stream.handshake", peer=self.remote_node, service=self.remote_service,
                  client=self._is_client, datagram=size)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._is_client:
            self._keepalive = self._loop.call_later(KEEPALIVE_PERIOD, self._keepalive_tick)
        else:
            self._deadline = self._loop.call_later(ACCEPT_TIMEOUT, self._fail_app,
                                                   "Accept Timeout")
        _resolve(self._established)

    def _fail_tls(self, problem: str, cause: Exception | None = None) -> None:
        # Sent before our Finished leaves, so the server never sees an established connection.
        log.debug("stream.tls_refused", peer=self.remote_node, service=self.remote_service,
                  problem=problem)
        self._close_quic(_TLS_BAD_CERTIFICATE, problem, frame_type=QuicFrameType.CRYPTO)
        error = DialError(problem)
        error.__cause__ = cause
        self._end(error)

    def _fail_app(self, problem: str) -> None:
        """Close with application error 500 (Receptor's listener failures)."""
        self._deadline = None
        if self._ended:
            return
        log.debug("stream.refused", peer=self.remote_node, service=self.remote_service,
                  problem=problem)
        self._close_quic(ERROR_FAILURE, problem)
        self._end(StreamAborted(problem))

    def _close_quic(self, code: int, reason: str, frame_type: int | None = None) -> None:
        """Send CONNECTION_CLOSE now (a close we initiate is not reported as the peer's).

        Once the handshake is done, the close packets are kept for the closing period and
        re-sent when the peer keeps sending (it missed them), as RFC 9000 §10.2.1 asks;
        aioquic itself ignores packets while closing.
        """
        self._closing_noted = True
        quic = self._quic
        established = quic.handshake_complete
        quic.close(error_code=code, frame_type=frame_type, reason_phrase=reason)
        datagrams = quic.datagrams_to_send(self._loop.time())
        if self._transmit(datagrams) and established and datagrams:
            self._close_packets = datagrams

    def _handshake_expired(self) -> None:
        self._deadline = None
        if not self._ended:
            self._end(StreamAborted("handshake timeout"))

    def _keepalive_tick(self) -> None:
        self._keepalive = None
        if self._ended:
            return
        self._quic.send_ping(0)
        self._schedule_flush()
        self._keepalive = self._loop.call_later(KEEPALIVE_PERIOD, self._keepalive_tick)

    def _on_stream_data(self, event: events.StreamDataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            stream._feed(event.data, event.end_stream)
            return
        if (not self._is_client and event.stream_id % 4 == 0
                and (self.mux or not self._accepted_any)
                and event.stream_id not in self._ignored_streams
                and self._quic.handshake_complete):
            self._accept_stream(event)
            return
        # Receptor uses one stream per connection, and a stream closed here reads no more:
        # discard the data, keep credit flowing.
        if event.data:
            self._consumed(event.stream_id, len(event.data))
        self._ignore_stream(event.stream_id)

    def _ignore_stream(self, stream_id: int) -> None:
        """Ask the peer to stop sending on ``stream_id`` (once) and discard what comes."""
        ignored = self._ignored_streams
        if stream_id in ignored:
            return
        if len(ignored) >= 64:  # forget streams aioquic has discarded meanwhile
            ignored.difference_update([i for i in ignored if self._quic.discarded(i)])
        ignored.add(stream_id)
        if not self._quic.discarded(stream_id):
            self._quic.stop_stream(stream_id, ERROR_READ_CANCELLED)
            self._schedule_flush()

    def _drop_stream(self, stream: MeshStream) -> None:
        """A stream of a multiplexed connection was closed on this side: what it had
        buffered unread is credited back, or the shared connection window would shrink
        for good and stall every other stream."""
        if self._streams.pop(stream.stream_id, None) is None:
            return
        if stream._buffered:
            self._consumed(stream.stream_id, stream._buffered)
            stream._chunks.clear()
            stream._buffered = stream._head = 0
        if not stream._eof:
            self._ignore_stream(stream.stream_id)
        self._quic.forget_discarded()
        if not self._streams and self.on_idle is not None:
            self.on_idle(self)

    def _reset_stream(self, stream: MeshStream, problem: str) -> None:
        """Abort one stream of a multiplexed connection: RESET_STREAM and STOP_SENDING 500."""
        log.debug("stream.reset", peer=self.remote_node, service=self.remote_service,
                  stream_id=stream.stream_id, problem=problem)
        stream._connection_lost(StreamAborted(problem, ERROR_FAILURE))
        if not self._quic.discarded(stream.stream_id):
            self._quic.reset_stream(stream.stream_id, ERROR_FAILURE)
        self._drop_stream(stream)
        self._schedule_flush()

    def _accept_stream(self, event: events.StreamDataReceived) -> None:
        data = event.data
        if not data or data[0] != 0:
            if self._accepted_any:  # a later stream of a multiplexed connection
                self._ignore_stream(event.stream_id)
                self._quic.reset_stream(event.stream_id, ERROR_FAILURE)
                self._schedule_flush()
                return
            self._fail_app("Read Data Error")
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        stream = MeshStream(self, event.stream_id)
        self._streams[event.stream_id] = stream
        self._accepted_any = True
        self._consumed(event.stream_id, 1)
        if len(data) > 1 or event.end_stream:
            stream._feed(data[1:], event.end_stream)
        log.debug("stream.accepted", peer=self.remote_node, service=self.remote_service)
        if self.on_stream is not None:
            self.on_stream(stream)

    def _open_client_stream(self) -> MeshStream:
        stream_id = self._quic.get_next_available_stream_id()
        stream = MeshStream(self, stream_id)
        self._streams[stream_id] = stream
        self._quic.send_stream_data(stream_id, b"\x00")
        self._schedule_flush()
        return stream

    def _send(self, stream_id: int, data: bytes | bytearray | memoryview, end: bool) -> None:
        if self._ended:
            raise self._error or StreamClosedError("connection closed")
        self._quic.send_stream_data(stream_id, data, end_stream=end)  # type: ignore[arg-type]
        self._schedule_flush()

    def _consumed(self, stream_id: int, count: int) -> None:
        if self._quic.consumed(stream_id, count):
            self._schedule_flush()

    def _end(self, error: StreamError | None) -> None:
        """Tear down: timers, waiters, stream, owner bookkeeping (runs once)."""
        if self._ended:
            return
        self._ended = True
        if error is None and not self._closing_noted and self._quic.close_event is not None:
            error = self._close_error(self._quic.close_event)
        self._error = error
        for handle in (self._timer, self._deadline, self._keepalive):
            if handle is not None:
                handle.cancel()
        self._timer = self._deadline = self._keepalive = None
        for stream in list(self._streams.values()):
            stream._connection_lost(error)
        self._settle_established(error)
        log.debug("stream.ended", peer=self.remote_node, service=self.remote_service,
                  client=self._is_client, error=str(error) if error else None)
        if self._close_packets is not None:
            period = min(max(self._quic.closing_period(), 0.05), MAX_CLOSING_PERIOD)
            self._loop.call_later(period, self._finish)
        else:
            self._finish()

    def _finish(self) -> None:
        """End of the closing period: release the endpoint / listener bookkeeping."""
        self._close_packets = None
        if self.on_ended is not None:
            self.on_ended(self)


# -- listening -----------------------------------------------------------------------------


class StreamListener:
    """Accepts mesh stream connections arriving on one datagram endpoint.

    Reads the endpoint itself and demultiplexes datagrams by QUIC connection ID and by
    remote (node, service).  ``accept()`` returns each stream once its 0x00 byte arrived.
    """

    def __init__(self, endpoint: DatagramEndpoint, *, max_datagram_for: MaxDatagramFor,
                 tls: QuicTLSOptions | None = None,
                 tuning: StreamTuning = DEFAULT_TUNING) -> None:
        self._loop = asyncio.get_running_loop()
        self.endpoint = endpoint
        self._max_datagram_for = max_datagram_for
        self._tls = tls
        self._tuning = tuning
        self._config = _configuration(False, tuning)
        configure_server(self._config, tls)
        self._by_cid: dict[bytes, StreamConnection] = {}
        self._by_addr: dict[tuple[str, str], StreamConnection] = {}
        self._cids: dict[StreamConnection, set[bytes]] = {}
        self._accepted: deque[MeshStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._task = self._loop.create_task(self._run(),
                                            name=f"stream-listener-{endpoint.service}")

    @property
    def connections(self) -> list[StreamConnection]:
        """Live connections (accepted or still handshaking)."""
        return list(self._cids)

    async def accept(self) -> MeshStream:
        """The next incoming stream; raises :class:`ListenerClosed` once closed."""
        while not self._accepted:
            if self._closed:
                raise ListenerClosed(f"listener on service {self.endpoint.service} is closed")
            waiter = self._loop.create_future()
            self._accept_waiter = waiter
            try:
                await waiter
            finally:
                self._accept_waiter = None
        return self._accepted.popleft()

    def close(self) -> None:
        """Stop listening: fail open connections (error 500 "listener closed"), close the
        endpoint.  Close accepted streams first for a clean shutdown."""
        if self._closed:
            return
        self._closed = True
        for conn in list(self._cids):
            conn.abort("listener closed")
        while self._accepted:
            self._accepted.popleft()._closed = True
        self.endpoint.close()
        self._task.cancel()
        if self._accept_waiter is not None:
            _resolve(self._accept_waiter)
        log.debug("stream.listener_closed", service=self.endpoint.service)

    async def _run(self) -> None:
        recvfrom = self.endpoint.recvfrom
        batch = self._tuning.batch
        count = 0
        while True:
            try:
                data, node, service = await recvfrom()
            except EndpointClosed:
                break
            self._datagram(data, node, service)
            count += 1
            if count >= batch:
                count = 0
                await asyncio.sleep(0)  # let the batch's flushes run
        if not self._closed:
            self.close()

    def _datagram(self, data: bytes, node: str, service: str) -> None:
        if not data:
            return
        addr = (node, service)
        if not data[0] & 0x80:  # short header: destination CID is ours, fixed length
            conn = self._by_cid.get(data[1:1 + CID_LENGTH]) or self._by_addr.get(addr)
            if conn is not None:
                conn.datagram_received(data, addr)
            return
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_LENGTH)
        except ValueError:
            return
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                and header.version is not None
                and header.version not in self._config.supported_versions):
            self._send(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=self._config.supported_versions), addr)
            return
        conn = self._by_cid.get(header.destination_cid)
        if (conn is None and header.packet_type == QuicPacketType.INITIAL
                and len(data) >= SMALLEST_MAX_DATAGRAM_SIZE and not self._closed):
            conn = self._new_connection(header.destination_cid, addr)
        if conn is None:
            conn = self._by_addr.get(addr)
        if conn is not None:
            conn.datagram_received(data, addr)

    def _send(self, data: bytes, addr: tuple[str, str]) -> None:
        try:
            self.endpoint.sendto(data, addr[0], addr[1])
        except Exception:  # fire-and-forget, like a UDP socket
            pass

    def _new_connection(self, odcid: bytes, addr: tuple[str, str]) -> StreamConnection:
        quic = _MeshQuicConnection(
            configuration=self._config, tuning=self._tuning,
            original_destination_connection_id=odcid,
            request_client_cert=self._tls is not None and self._tls.require_client_cert)
        conn = StreamConnection(quic, endpoint=self.endpoint, remote_node=addr[0],
                                remote_service=addr[1], max_datagram_for=self._max_datagram_for,
                                tls=self._tls, tuning=self._tuning)
        conn.on_ended = self._connection_ended
        conn.on_stream = self._stream_ready
        conn.on_cid = self._cid_changed
        self._cids[conn] = set()
        self._cid_changed(conn, odcid, True)
        self._cid_changed(conn, quic.host_cid, True)
        self._by_addr[addr] = conn
        conn._deadline = self._loop.call_later(HANDSHAKE_TIMEOUT, conn._handshake_expired)
        log.debug("stream.incoming", peer=addr[0], service=addr[1])
        return conn

    def _cid_changed(self, conn: StreamConnection, cid: bytes, issued: bool) -> None:
        cids = self._cids.get(conn)
        if cids is None:
            return
        if issued:
            cids.add(cid)
            self._by_cid[cid] = conn
        else:
            cids.discard(cid)
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]

    def _connection_ended(self, conn: StreamConnection) -> None:
        for cid in self._cids.pop(conn, ()):
            if self._by_cid.get(cid) is conn:
                del self._by_cid[cid]
        if self._by_addr.get(conn._addr) is conn:
            del self._by_addr[conn._addr]

    def _stream_ready(self, stream: MeshStream) -> None:
        if self._closed:
            stream.abort("listener closed")
            return
        self._accepted.append(stream)
        if self._accept_waiter is not None:
            _resolve(self._accept_waiter)


def listen_stream(endpoint: DatagramEndpoint, *, max_datagram_for: MaxDatagramFor,
                  tls: QuicTLSOptions | None = None,
                  tuning: StreamTuning = DEFAULT_TUNING) -> StreamListener:
    """Serve mesh streams on ``endpoint`` (must be called from a running event loop).

    Without ``tls`` the listener presents Receptor's insecure certificate (ConnType 1);
    with ``tls`` its certfile/keyfile (ConnType 2).  The listener owns the endpoint from now
    on: it reads it and closes it in :meth:`StreamListener.close`.
    """
    return StreamListener(endpoint, max_datagram_for=max_datagram_for, tls=tls, tuning=tuning)


# -- dialing -------------------------------------------------------------------------------


async def _client_reader(conn: StreamConnection, endpoint: DatagramEndpoint) -> None:
    node, service = conn._addr
    batch = conn._tuning.batch
    recvfrom = endpoint.recvfrom
    count = 0
    while True:  # until the endpoint closes; also serves the closing period
        try:
            data, from_node, from_service = await recvfrom()
        except EndpointClosed:
            conn._end(StreamAborted("endpoint closed"))
            return
        if from_service != service or from_node != node:
            continue
        conn.datagram_received(data)
        count += 1
        if count >= batch:
            count = 0
            await asyncio.sleep(0)


async def dial_stream(open_endpoint: EndpointFactory, node: str, service: str, *,
                      local_node: str, max_datagram_for: MaxDatagramFor,
                      tls: QuicTLSOptions | None = None, timeout: float = HANDSHAKE_TIMEOUT,
                      tuning: StreamTuning = DEFAULT_TUNING,
                      on_connection: Callable[[StreamConnection], None] | None = None,
                      pool: StreamPool | None = None, pool_tls: Hashable = "",
                      ) -> MeshStream:
    """Open a mesh stream to ``node:service``.

    Without ``pool``: one QUIC connection per dial over a fresh endpoint from
    ``open_endpoint()``, closed with the stream (Receptor's way).  With ``pool``: a stream on
    a multiplexed connection the pool holds for (node, service, ``pool_tls``) if there is
    one, else a new connection that offers ``mesh-mux/1`` and joins the pool if the
    listener picked it.  ``pool_tls`` names the TLS client ``tls`` came from.

    ``tls`` None is Receptor's insecure mode (the server must present the
    netceptor-insecure-common-name certificate).  ``on_connection`` is called with each new
    :class:`StreamConnection` before the first datagram is sent, so the node can route
    unreachable notifications to :meth:`StreamConnection.abort`.

    Raises :class:`DialTimeout` when the handshake does not finish within ``timeout``
    seconds and :class:`DialError` for other failures (its text is the problem, e.g.
    "service unknown" or "insecure connection to secure service").
    """
    if node == "localhost":
        node = local_node
    if pool is None:
        conn = await _dial_connection(open_endpoint, node, service, local_node=local_node,
                                      max_datagram_for=max_datagram_for, tls=tls,
                                      timeout=timeout, tuning=tuning,
                                      on_connection=on_connection, mux=False)
        return conn._open_client_stream()
    key = (node, service, pool_tls)
    if not pool.plain(key):
        await pool.wait_dialing(key, timeout)
        pooled = pool.connection(key)
        if pooled is not None:
            return pooled.open_stream()
    finished = pool.dialing(key)
    conn = None
    try:
        conn = await _dial_connection(open_endpoint, node, service, local_node=local_node,
                                      max_datagram_for=max_datagram_for, tls=tls,
                                      timeout=timeout, tuning=tuning,
                                      on_connection=on_connection, mux=True)
        return conn._open_client_stream()
    finally:
        finished(conn)


async def _dial_connection(open_endpoint: EndpointFactory, node: str, service: str, *,
                           local_node: str, max_datagram_for: MaxDatagramFor,
                           tls: QuicTLSOptions | None, timeout: float, tuning: StreamTuning,
                           on_connection: Callable[[StreamConnection], None] | None,
                           mux: bool) -> StreamConnection:
    """Handshake a new client connection over its own endpoint (see :func:`dial_stream`)."""
    config = _configuration(True, tuning, mux=mux)
    configure_client(config, tls, local_node=local_node)
    endpoint = open_endpoint()
    try:
        conn = StreamConnection(_MeshQuicConnection(configuration=config, tuning=tuning),
                                endpoint=endpoint, remote_node=node, remote_service=service,
                                max_datagram_for=max_datagram_for, tls=tls, tuning=tuning)
    except BaseException:
        endpoint.close()
        raise
    reader = asyncio.get_running_loop().create_task(
        _client_reader(conn, endpoint), name=f"stream-dial-{node}:{service}")

    def ended(_: StreamConnection) -> None:
        endpoint.close()
        if reader is not asyncio.current_task():
            reader.cancel()

    conn.on_ended = ended
    if on_connection is not None:
        on_connection(conn)
    log.debug("stream.dial", peer=node, service=service, local_service=endpoint.service)
    try:
        conn._quic.connect(conn._addr, now=conn._loop.time())
        conn._flush()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(conn._established)
        except TimeoutError:
            raise DialTimeout(f"timeout dialing {node}:{service} after {timeout:g} s") from None
    except BaseException as exc:
        established = conn._established
        if not established.done():
            established.cancel()
        elif not established.cancelled():
            established.exception()  # retrieved: we raise it (or something else) here
        conn._end(exc if isinstance(exc, StreamError) else StreamAborted("dial cancelled"))
        raise
    return conn


__all__ = [
    "ACCEPT_TIMEOUT",
    "DEFAULT_TUNING",
    "DialError",
    "DialTimeout",
    "ListenerClosed",
    "MeshStream",
    "StreamAborted",
    "StreamClosedError",
    "StreamConnection",
    "StreamError",
    "StreamListener",
    "StreamTuning",
    "dial_stream",
    "listen_stream",
]
