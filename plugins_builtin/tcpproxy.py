"""TCP proxies over mesh streams: ``tcp-server`` and ``tcp-client`` (Receptor's services).

``tcp-server`` listens on a local TCP port and carries each connection to a mesh service;
``tcp-client`` advertises a mesh service and carries each stream to a local TCP address.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.net.pipe import pipe
from mesh_builtin.link_config import split_address

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterService

log = structlog.get_logger(__name__)
CHUNK = 256 * 1024


@dataclass
class TcpServerConfig:
    port: int = field(metadata={"doc": "Local TCP port to listen on."})
    remotenode: str = field(metadata={"doc": "Node whose mesh service receives connections."})
    remoteservice: str = field(metadata={"doc": "Mesh service on remotenode."})
    bindaddr: str = field(default="0.0.0.0", metadata={"doc": "Local address to bind."})
    tlsserver: str | None = field(default=None, metadata={"doc": "tls-server for local "
                                                                 "clients (not yet supported)."})
    tlsclient: str | None = field(default=None, metadata={"doc": "tls-client for the mesh "
                                                                 "stream (not yet supported)."})


@dataclass
class TcpClientConfig:
    service: str = field(metadata={"doc": "Mesh service name to advertise (at most 8 bytes)."})
    address: str = field(metadata={"doc": "host:port to connect each stream to."})
    tlsserver: str | None = field(default=None, metadata={"doc": "tls-server for the mesh "
                                                                 "service (not yet supported)."})
    tlsclient: str | None = field(default=None, metadata={"doc": "tls-client for the TCP "
                                                                 "connection (not yet supported)."})

    def validate(self) -> None:
        if len(self.service.encode()) > 8:
            raise SectionValueError("service", "service names are at most 8 bytes")
        try:
            split_address(self.address)
        except ValueError as exc:
            raise SectionValueError("address", str(exc)) from None


async def bridge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stream: Any) -> None:
    """Copy bytes both ways until both directions reached EOF (or one side failed)."""
    upstream = asyncio.create_task(pipe(reader.read, stream.write, stream.drain,
                                        stream.write_eof, chunk=CHUNK))
    try:
        await pipe(stream.read, writer.write, writer.drain,
                   lambda: writer.can_write_eof() and writer.write_eof(), chunk=CHUNK)
        await upstream
    except Exception as exc:  # either side failing just ends the bridge
        log.debug("proxy_bridge_ended", peer=stream.remote_node, error=str(exc))
    finally:
        upstream.cancel()
        writer.close()
        await stream.close()


class TcpServer:
    """Local TCP listener → mesh stream to remotenode:remoteservice."""

    def __init__(self, config: TcpServerConfig, node: Any) -> None:
        if config.tlsserver or config.tlsclient:
            raise SectionValueError("tlsserver", "TLS on TCP proxies is not supported yet")
        self.config, self.node = config, node

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            stream = await self.node.dial_stream(self.config.remotenode,
                                                 self.config.remoteservice)
        except Exception as exc:
            log.warning("proxy_dial_failed", node_id=self.node.node_id,
                        peer=self.config.remotenode,
                        target=f"{self.config.remotenode}:{self.config.remoteservice}",
                        error=str(exc))
            writer.close()
            return
        await bridge(reader, writer, stream)

    async def run(self) -> None:
        server = await asyncio.start_server(self.handle, self.config.bindaddr, self.config.port,
                                            reuse_address=True)
        log.info("tcp_server_listening", node_id=self.node.node_id, port=self.config.port,
                 target=f"{self.config.remotenode}:{self.config.remoteservice}")
        try:
            await asyncio.Future()
        finally:
            server.close()


class TcpClient:
    """Advertised mesh service → TCP connection to a local address."""

    def __init__(self, config: TcpClientConfig, node: Any) -> None:
        if config.tlsserver or config.tlsclient:
            raise SectionValueError("tlsserver", "TLS on TCP proxies is not supported yet")
        self.config, self.node = config, node
        self.host, self.port = split_address(config.address)

    async def handle(self, stream: Any) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            log.warning("proxy_connect_failed", node_id=self.node.node_id,
                        peer=stream.remote_node, address=self.config.address, error=str(exc))
            await stream.close()
            return
        await bridge(reader, writer, stream)

    async def run(self) -> None:
        listener = self.node.listen_stream(self.config.service,
                                           tags={"type": "TCP Proxy",
                                                 "address": self.config.address})
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                stream = await listener.accept()
                task = asyncio.create_task(self.handle(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            listener.close()
            for task in tasks:
                task.cancel()


@hookimpl
def mesh_register_services(register: RegisterService) -> None:
    register(SectionSpec("tcp-server", TcpServerConfig,
                         doc="Local TCP port carried to a mesh service."), TcpServer)
    register(SectionSpec("tcp-client", TcpClientConfig,
                         doc="Mesh service carried to a local TCP address."), TcpClient)
