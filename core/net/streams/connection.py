"""One QUIC connection over mesh datagrams: :class:`StreamConnection` drives aioquic, owns
the timers and hands data to its :class:`~mesh.net.streams.stream.MeshStream` objects."""

from __future__ import annotations

import asyncio
from typing import Callable

import structlog
from aioquic.quic import events
from aioquic.quic.packet import QuicFrameType

from mesh.net.datagram import DatagramEndpoint, EndpointClosed, MaxDatagramFor
from mesh.net.quic_tls import (
    ALPN,
    MUX_ALPN,
    QuicTLSOptions,
    TLSVerificationError,
    verify_client_chain,
    verify_server_chain,
)
from mesh.net.stream_errors import (
    ERROR_FAILURE,
    DialError,
    StreamAborted,
    StreamClosedError,
    StreamError,
)
from mesh.net.streams.protocol import (
    ACCEPT_TIMEOUT,
    ERROR_NORMAL,
    ERROR_READ_CANCELLED,
    HANDSHAKE_DATAGRAM,
    KEEPALIVE_PERIOD,
    MAX_CLOSE_RESENDS,
    MAX_CLOSING_PERIOD,
    NORMAL_CLOSE_REASON,
    TLS_BAD_CERTIFICATE,
)
from mesh.net.streams.quic_private import MeshQuicConnection
from mesh.net.streams.stream import MeshStream
from mesh.net.streams.tuning import MUX_WINDOW_FACTOR, StreamTuning
from mesh.net.streams.waiters import resolve

log = structlog.get_logger(__name__)


class StreamConnection:
    """One QUIC connection over mesh datagrams: drives aioquic, owns timers and the stream.

    Made by :func:`dial_stream` and :class:`StreamListener`; the node only needs
    :meth:`abort` (on "service unknown" unreachable notifications for ``remote_node``:
    ``remote_service``).  ``close()`` is the graceful counterpart.
    """

    def __init__(self, quic: MeshQuicConnection, *, endpoint: DatagramEndpoint,
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
            resolve(self._established, self._dial_error(error))
        else:
            resolve(self._established)

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
        resolve(self._established)

    def _fail_tls(self, problem: str, cause: Exception | None = None) -> None:
        # Sent before our Finished leaves, so the server never sees an established connection.
        log.debug("stream.tls_refused", peer=self.remote_node, service=self.remote_service,
                  problem=problem)
        self._close_quic(TLS_BAD_CERTIFICATE, problem, frame_type=QuicFrameType.CRYPTO)
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
