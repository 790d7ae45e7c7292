"""tcp backend: ``tcp-listener`` and ``tcp-peer`` with Receptor's 2-byte length framing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from mesh import hookimpl
from mesh.config.schema import SectionSpec
from mesh.net.backend import Backend, LinkHost, LinkOptions, join_host_port, redial_loop
from mesh.net.stream_session import FramedSession
from mesh_builtin.link_config import (bindaddr_field, check_costs, check_listener,
                                      check_peer_address, listener_allowedpeers_field,
                                      listener_cost_field, nodecost_field,
                                      peer_allowedpeers_field, peer_cost_field, split_address)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterBackend

log = structlog.get_logger(__name__)

DIAL_TIMEOUT = 15.0


@dataclass
class TcpListenerConfig:
    port: int = field(metadata={"doc": "TCP port to listen on."})
    bindaddr: str = bindaddr_field()
    cost: float = listener_cost_field()
    nodecost: dict[str, float] = nodecost_field()
    allowedpeers: list[str] = listener_allowedpeers_field()
    tls: str | None = field(default=None, metadata={"doc": "Name of a tls-server section."})

    def validate(self) -> None:
        check_listener(self.port, self.cost, self.nodecost)


@dataclass
class TcpPeerConfig:
    address: str = field(metadata={"doc": "host:port of the listener to dial ([v6]:port)."})
    redial: bool = field(default=True, metadata={"doc": "Dial again after failures."})
    cost: float = peer_cost_field()
    allowedpeers: list[str] = peer_allowedpeers_field()
    tls: str | None = field(default=None, metadata={"doc": "Name of a tls-client section."})

    def validate(self) -> None:
        check_peer_address(self.address)
        check_costs(self.cost)


def link_tls(node: Any, kind: str, name: str | None) -> tuple[Any, Any]:
    """(ssl context, peer-certificate → node IDs) for the named TLS section, or (None, None)."""
    if not name:
        return None, None
    config = node.tls_config(kind, name)
    return config.ssl_context(), config.peer_node_ids


class TcpListener(Backend):
    listens = True

    def __init__(self, config: TcpListenerConfig, node: Any) -> None:
        self.config = config
        self.ssl, self.tls_identity = link_tls(node, "server", config.tls)
        self.options = LinkOptions(config.cost, dict(config.nodecost), tuple(config.allowedpeers))
        self.bound_port: int | None = None

    async def run(self, host: LinkHost) -> None:
        loop = asyncio.get_running_loop()
        sessions: set[asyncio.Task[str]] = set()

        def factory() -> FramedSession:
            session = FramedSession("tcp listener", tls_identity=self.tls_identity)

            def on_connect(_: Any) -> None:
                if session.transport is None:
                    return
                peer = session.transport.get_extra_info("peername")
                session.label = f"tcp {peer[0]}:{peer[1]}" if peer else "tcp"
                task = asyncio.create_task(host.run_session(session, self.options))
                sessions.add(task)
                task.add_done_callback(sessions.discard)

            session.connected.add_done_callback(on_connect)
            return session

        bind = self.config.bindaddr or None
        server = await self.listen(
            join_host_port(bind or "0.0.0.0", self.config.port),
            loop.create_server(factory, bind, self.config.port, ssl=self.ssl,
                               reuse_address=True))
        self.bound_port = server.sockets[0].getsockname()[1]
        log.info("listening", node_id=host.node_id, backend="tcp-listener",
                 address=join_host_port(bind or "0.0.0.0", self.bound_port))
        try:
            await asyncio.Future()
        finally:
            server.close()
            for task in list(sessions):
                task.cancel()


class TcpPeer(Backend):
    def __init__(self, config: TcpPeerConfig, node: Any) -> None:
        self.config = config
        self.host, self.port = split_address(config.address)
        self.ssl, self.tls_identity = link_tls(node, "client", config.tls)
        self.options = LinkOptions(config.cost, {}, tuple(config.allowedpeers))

    async def dial(self) -> FramedSession:
        loop = asyncio.get_running_loop()
        label = f"tcp {self.config.address}"
        kwargs: dict[str, Any] = {}
        if self.ssl is not None:
            kwargs = {"ssl": self.ssl, "server_hostname": self.host}
        async with asyncio.timeout(DIAL_TIMEOUT):
            _, session = await loop.create_connection(
                lambda: FramedSession(label, tls_identity=self.tls_identity),
                self.host, self.port, **kwargs)
        return session

    async def run(self, host: LinkHost) -> None:
        await redial_loop(self.dial, host, self.options, redial=self.config.redial,
                          what=f"tcp-peer {self.config.address}", peer=self.config.address)


@hookimpl
def mesh_register_backends(register: RegisterBackend) -> None:
    register(SectionSpec("tcp-listener", TcpListenerConfig, bare="port",
                         doc="Accept mesh links over TCP."), TcpListener)
    register(SectionSpec("tcp-peer", TcpPeerConfig, bare="address",
                         doc="Dial a mesh link over TCP."), TcpPeer)
