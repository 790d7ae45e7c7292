"""udp backend: ``udp-listener`` and ``udp-peer``, one mesh message per datagram (Receptor §1.3).

There is no framing, handshake, sequencing or retransmission at this layer: the link handshake
and keepalives of the node decide liveness, and QUIC over the mesh retransmits lost stream data.
A listener serves many neighbours on one socket and tells them apart by source address.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, cast

import structlog

from mesh import hookimpl
from mesh.config.schema import SectionSpec
from mesh.net import messages as m
from mesh.net.backend import (Backend, Backoff, LinkHost, LinkOptions, Session, SessionClosed,
                              join_host_port, redial_loop)
from mesh.net.inbox import Inbox
from mesh_builtin.link_config import (bindaddr_field, check_costs, check_listener,
                                      check_peer_address, listener_allowedpeers_field,
                                      listener_cost_field, nodecost_field,
                                      peer_allowedpeers_field, peer_cost_field, split_address)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterBackend

log = structlog.get_logger(__name__)

#: Largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP); Receptor refuses larger sends too.
MAX_DATAGRAM = 65507
#: Messages (and bytes) waiting for one session's link loop; more are dropped, as a full
#: socket buffer would drop them.
MAX_QUEUED = 512
MAX_QUEUED_BYTES = 4 * 1024 * 1024
#: Outgoing bytes buffered by asyncio (the socket said EAGAIN) above which the link is
#: congested, and above which further messages are dropped.
CONGESTED_BYTES = 1 * 1024 * 1024
DROP_BYTES = 8 * 1024 * 1024
#: Kernel socket buffers: bursts of 60 kB QUIC datagrams overflow the 208 kB default.
SOCKET_BUFFER = 4 * 1024 * 1024
#: A listener keeps at most this many neighbours; datagrams from further addresses are dropped.
MAX_SESSIONS = 1024


def _address_key(addr: Any) -> tuple[str, int]:
    """(ip, port) of a socket address (IPv6 addresses carry flowinfo and scope as well)."""
    return addr[0], addr[1]


def _format_address(addr: Any) -> str:
    return join_host_port(*_address_key(addr))


def _grow_buffers(sock: socket.socket | None) -> None:
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:  # capped by net.core.[rw]mem_max anyway; the default still works
            pass


UDP_DATAGRAM = 1400


class UdpSession(Session):
    """One neighbour behind a UDP socket: a listener's demultiplexed address or a peer's socket."""

    #: Keep QUIC datagrams within a 1500-byte MTU (IP + UDP + mesh headers): one lost IP
    #: fragment would lose a whole larger datagram.
    preferred_datagram = UDP_DATAGRAM
    reliable = False

    def __init__(self, label: str, transport: asyncio.DatagramTransport, addr: Any = None,
                 on_close: Callable[["UdpSession"], None] | None = None) -> None:
        self.label = label
        self.max_message = MAX_DATAGRAM
        self.transport = transport
        #: Destination for ``sendto``; None on a connected socket.
        self.addr = addr
        self._on_close = on_close
        self._inbox: Inbox[bytes] = Inbox(
            lambda: SessionClosed(f"{self.label}: {self._reason}"))
        self._queued_bytes = 0
        self._closed = False
        self._reason = "closed"
        self.received = 0
        self.dropped = 0

    # -- fed by the datagram protocol ------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._closed or not data:  # a zero-length message is never valid
            return
        self.received += 1
        if len(self._inbox) >= MAX_QUEUED or self._queued_bytes > MAX_QUEUED_BYTES:
            self.dropped += 1
            return
        self._queued_bytes += len(data)
        self._inbox.put(data)

    # -- Session -------------------------------------------------------------------------

    def send(self, message: bytes) -> None:
        if self._closed or self.transport.is_closing():
            raise SessionClosed(f"{self.label}: {self._reason}")
        if len(message) > MAX_DATAGRAM:
            raise SessionClosed(f"{self.label}: message of {len(message)} bytes is too large "
                                f"for a UDP link (at most {MAX_DATAGRAM})")
        if self.transport.get_write_buffer_size() > DROP_BYTES:
            self.dropped += 1
            return
        if self.addr is None:
            self.transport.sendto(message)
        else:
            self.transport.sendto(message, self.addr)
        self.messages_out += 1
        self.bytes_out += len(message)

    async def recv(self) -> bytes:
        message = await self._inbox.get()
        self._queued_bytes -= len(message)
        self.messages_in += 1
        self.bytes_in += len(message)
        return message

    def close(self, reason: str = "closed") -> None:
        if self._closed:
            return
        self._closed = True
        self._reason = reason
        self._inbox.items.clear()
        self._queued_bytes = 0
        self._inbox.close()
        if self._on_close is not None:
            self._on_close(self)

    def congested(self) -> bool:
        return self.transport.get_write_buffer_size() > CONGESTED_BYTES


# -- config ------------------------------------------------------------------------------


@dataclass
class UdpListenerConfig:
    port: int = field(metadata={"doc": "UDP port to listen on."})
    bindaddr: str = bindaddr_field()
    cost: float = listener_cost_field()
    nodecost: dict[str, float] = nodecost_field()
    allowedpeers: list[str] = listener_allowedpeers_field()

    def validate(self) -> None:
        check_listener(self.port, self.cost, self.nodecost)


@dataclass
class UdpPeerConfig:
    address: str = field(metadata={"doc": "host:port of the udp-listener to send to "
                                          "([v6]:port)."})
    redial: bool = field(default=True, metadata={"doc": "Start a new session after the link "
                                                        "ends."})
    cost: float = peer_cost_field()
    allowedpeers: list[str] = peer_allowedpeers_field()

    def validate(self) -> None:
        check_peer_address(self.address)
        check_costs(self.cost)


# -- listener ----------------------------------------------------------------------------


class _ListenerProtocol(asyncio.DatagramProtocol):
    """Demultiplexes datagrams by source address into :class:`UdpSession` objects."""

    def __init__(self, listener: "UdpListener", host: LinkHost) -> None:
        self.listener = listener
        self.host = host
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple[str, int], UdpSession] = {}
        self.tasks: set[asyncio.Task[str]] = set()
        self.refused = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's datagram transports are not DatagramTransport subclasses (CPython 3.11).
        self.transport = cast(asyncio.DatagramTransport, transport)
        _grow_buffers(transport.get_extra_info("socket"))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        key = _address_key(addr)
        session = self.sessions.get(key)
        if session is None:
            session = self._new_session(data, addr, key)
            if session is None:
                return
        session.feed(data)

    def _new_session(self, data: bytes, addr: Any, key: tuple[str, int]) -> UdpSession | None:
        # Both Receptor and mesh open a link with a routing update; anything else from an
        # unknown address is a stray or hostile datagram and must not cost us a session.
        if not data or data[0] != m.MSG_ROUTING_UPDATE or self.transport is None:
            self.refused += 1
            return None
        if len(self.sessions) >= MAX_SESSIONS:
            self.refused += 1
            log.warning("udp_session_refused", node_id=self.host.node_id,
                        peer=_format_address(addr), reason="too many sessions")
            return None
        session = UdpSession(f"udp {_format_address(addr)}", self.transport, addr,
                             on_close=self._forget)
        self.sessions[key] = session
        log.debug("udp_session_opened", node_id=self.host.node_id, peer=session.label)
        task = asyncio.get_running_loop().create_task(self._run(session))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return session

    async def _run(self, session: UdpSession) -> str:
        reason = "closed"
        try:
            reason = await self.host.run_session(session, self.listener.options)
            return reason
        finally:
            # The node closes idle, rejected and never-handshaken sessions; make sure the
            # address is forgotten whatever happened.
            session.close()
            log.debug("udp_session_closed", node_id=self.host.node_id,
                      peer=session.peer_name, reason=reason, dropped=session.dropped)

    def _forget(self, session: UdpSession) -> None:
        key = _address_key(session.addr)
        if self.sessions.get(key) is session:
            del self.sessions[key]

    def error_received(self, exc: Exception) -> None:
        # An unconnected socket rarely sees ICMP errors; one neighbour's error must not end
        # the listener for the others.
        log.debug("udp_listener_error", node_id=self.host.node_id, error=str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        for session in list(self.sessions.values()):
            session.close()


class UdpListener(Backend):
    listens = True

    def __init__(self, config: UdpListenerConfig, node: Any) -> None:
        self.config = config
        self.options = LinkOptions(config.cost, dict(config.nodecost), tuple(config.allowedpeers))
        self.bound_port: int | None = None

    async def run(self, host: LinkHost) -> None:
        loop = asyncio.get_running_loop()
        bind = self.config.bindaddr or "0.0.0.0"
        protocol = _ListenerProtocol(self, host)
        transport, _ = await self.listen(
            _format_address((bind, self.config.port)),
            loop.create_datagram_endpoint(lambda: protocol, local_addr=(bind, self.config.port)))
        self.bound_port = transport.get_extra_info("sockname")[1]
        log.info("listening", node_id=host.node_id, backend="udp-listener",
                 address=_format_address((bind, self.bound_port)))
        try:
            await asyncio.Future()
        finally:
            for task in list(protocol.tasks):
                task.cancel()
            transport.close()


# -- peer --------------------------------------------------------------------------------


class _PeerProtocol(asyncio.DatagramProtocol):
    """The connected socket of one ``udp-peer`` session."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.session: UdpSession | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _grow_buffers(transport.get_extra_info("socket"))
        self.session = UdpSession(self.label, cast(asyncio.DatagramTransport, transport), None,
                                  on_close=lambda _: transport.close())

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.session is not None:
            self.session.feed(data)

    def error_received(self, exc: Exception) -> None:
        # A connected socket reports ICMP port-unreachable: nobody listens there (yet).
        # Ending the session now lets the peer redial instead of waiting for an idle timeout.
        if isinstance(exc, ConnectionRefusedError) and self.session is not None:
            self.session.close("connection refused (nothing listens there)")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.session.close()


class _HeardBackoff(Backoff):
    """Backoff that a new session resets only if the one before it heard from the listener.

    "Connecting" a UDP socket always succeeds, so without this a peer whose listener is down
    would redial every second forever instead of backing off like the other peers.
    """

    def __init__(self) -> None:
        super().__init__()
        self.previous: UdpSession | None = None
        self.latest: UdpSession | None = None

    def dialled(self, session: UdpSession) -> None:
        self.previous, self.latest = self.latest, session

    def reset(self) -> None:
        if self.previous is None or self.previous.received:
            super().reset()


class UdpPeer(Backend):
    def __init__(self, config: UdpPeerConfig, node: Any) -> None:
        self.config = config
        self.host, self.port = split_address(config.address)
        self.options = LinkOptions(config.cost, {}, tuple(config.allowedpeers))
        self.backoff = _HeardBackoff()

    async def dial(self) -> UdpSession:
        loop = asyncio.get_running_loop()
        label = f"udp {self.config.address}"
        # "Connecting" a UDP socket always works, so asyncio would settle on the first
        # address of a name (::1 for localhost) even if the listener is on IPv4; prefer IPv4
        # like Go's resolver does for "udp".
        infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {self.host!r}")
        family, _, _, _, sockaddr = next(
            (info for info in infos if info[0] == socket.AF_INET), infos[0])
        _, protocol = await loop.create_datagram_endpoint(
            lambda: _PeerProtocol(label), remote_addr=(sockaddr[0], sockaddr[1]), family=family)
        if protocol.session is None:
            raise SessionClosed(f"{label}: socket did not open")
        self.backoff.dialled(protocol.session)
        return protocol.session

    async def run(self, host: LinkHost) -> None:
        await redial_loop(self.dial, host, self.options, redial=self.config.redial,
                          what=f"udp-peer {self.config.address}", backoff=self.backoff,
                          peer=self.config.address)


@hookimpl
def mesh_register_backends(register: RegisterBackend) -> None:
    register(SectionSpec("udp-listener", UdpListenerConfig, bare="port",
                         doc="Accept mesh links over UDP (one message per datagram)."),
             UdpListener)
    register(SectionSpec("udp-peer", UdpPeerConfig, bare="address",
                         doc="Open a mesh link over UDP to a udp-listener."), UdpPeer)
