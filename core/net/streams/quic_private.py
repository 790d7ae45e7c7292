"""aioquic's QuicConnection with mesh tweaks: the only module that uses or overrides aioquic's
private names (checked against aioquic 1.7 at import, see :func:`_check_aioquic`).

Everything else in :mod:`mesh.net.streams` drives :class:`MeshQuicConnection` through
aioquic's public API and the public methods added here.
"""

from __future__ import annotations

from aioquic.buffer import size_uint_var
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import (
    CONNECTION_LIMIT_FRAME_CAPACITY,
    END_STATES,
    MAX_STREAM_DATA_FRAME_CAPACITY,
    QuicConnection,
)
from aioquic.quic.packet import QuicFrameType
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.recovery import QuicPacketPacer, QuicPacketSpace
from aioquic.quic.stream import QuicStream
from cryptography import x509

from mesh.net.streams.tuning import StreamTuning

#: aioquic writes 2-byte STREAM frame lengths, so frames above this need our override.
_MAX_2BYTE_VARINT = 16383


class _NoPacer(QuicPacketPacer):
    """A pacer that never holds packets back."""

    def next_send_time(self, now: float) -> float | None:  # type: ignore[override]
        return None

    def update_after_send(self, now: float) -> None:
        pass

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        pass


class MeshQuicConnection(QuicConnection):
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
