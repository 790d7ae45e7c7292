"""Mesh streams: Receptor's stream layer, QUIC carried over mesh datagrams (spec §4).

Each datagram payload is one QUIC UDP payload; the peer "address" is ``(node, service)``.
The QUIC state machine is aioquic's sans-I/O :class:`~aioquic.quic.connection.QuicConnection`;
this package is the asyncio glue plus Receptor's conventions:

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

Modules: :mod:`~mesh.net.streams.tuning` (:class:`StreamTuning`),
:mod:`~mesh.net.streams.protocol` (timeouts, error codes, the QUIC configuration),
:mod:`~mesh.net.streams.quic_private` (the aioquic subclass: the only code that touches
aioquic's private names), :mod:`~mesh.net.streams.stream` (:class:`MeshStream`),
:mod:`~mesh.net.streams.connection` (:class:`StreamConnection`),
:mod:`~mesh.net.streams.listener` (:func:`listen_stream`) and
:mod:`~mesh.net.streams.dial` (:func:`dial_stream`).  The errors live in
:mod:`mesh.net.stream_errors`, importable without aioquic.
"""

from __future__ import annotations

from mesh.net.stream_errors import (
    DialError,
    DialTimeout,
    ListenerClosed,
    StreamAborted,
    StreamClosedError,
    StreamError,
)
from mesh.net.streams.connection import StreamConnection
from mesh.net.streams.dial import dial_stream
from mesh.net.streams.listener import StreamListener, listen_stream
from mesh.net.streams.protocol import ACCEPT_TIMEOUT
from mesh.net.streams.stream import MeshStream
from mesh.net.streams.tuning import DEFAULT_TUNING, StreamTuning

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
