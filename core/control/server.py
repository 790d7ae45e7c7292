"""Control service: serves the line protocol on Unix sockets, TCP/TLS and the mesh.

The service sees its node as a :class:`ControlHost`; the node builds it (this module does
not import :mod:`mesh.node`).
"""

from __future__ import annotations

import asyncio
import os
import select
import sys
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from mesh.control.protocol import (CommandError, Request, encode_error, encode_reply, greeting,
                                   parse_line)
from mesh.control.unix_socket import BoundUnixSocket, bind_unix_socket
from mesh.net.backend import bind, join_host_port
from mesh.net.stream_errors import StreamError
# CommandContext and ControlConn are the plugin API's; handlers import them from here too
from mesh.plugin_types import CommandContext, ControlConn, PluginNode
from mesh.tasks import cancel_and_wait

if TYPE_CHECKING:  # pragma: no cover
    from mesh.control.early import ParkedSession
    from mesh.plugin_types import CommandHandler

log = structlog.get_logger(__name__)

#: Longest accepted request line (a submit line can carry @file parameters).
MAX_LINE = 16 * 1024 * 1024
#: A client that sends no complete command line for this long is disconnected.
LINE_TIMEOUT = 300.0
#: Concurrent control sessions per control service; more are refused with an ERROR line.
MAX_SESSIONS = 256


class _NoTLS(Exception):
    """Stands for ``ssl.SSLError`` while ssl is not imported (no TLS in use, none raised)."""


def _ssl_error() -> type[Exception]:
    """``ssl.SSLError``, without importing ssl for nodes that use no TLS (see
    :mod:`mesh.ssl_on_demand`)."""
    ssl = sys.modules.get("ssl")
    return ssl.SSLError if ssl is not None else _NoTLS


class RegisteredCommand(Protocol):
    """A registered control command (a :class:`mesh.plugins.Registered`)."""

    @property
    def factory(self) -> CommandHandler:
        """The handler."""


class CommandRegistry(Protocol):
    """Finds control commands (a :class:`mesh.plugins.PluginHost`)."""

    def control_command(self, name: str) -> RegisteredCommand | None:
        """The command registered as ``name``, loading its plugin if needed; None if none."""


class ControlHost(PluginNode, Protocol):
    """The node as the control service uses it (a :class:`mesh.node.Node`): its ID,
    ``listen_stream`` and ``tls_config`` for the mesh and TCP/TLS listeners, the registry of
    control commands, and what a handler gets as ``ctx.node`` (a
    :class:`~mesh.plugin_types.PluginNode`)."""

    @property
    def plugins(self) -> CommandRegistry:
        """Where the control commands are registered."""


class StreamConn:
    """Adapter for asyncio StreamReader/StreamWriter (Unix and TCP/TLS clients)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 kind: str) -> None:
        self.reader, self.writer, self.kind = reader, writer, kind
        self.peer = peer_address(writer, kind)
        self._reset = False

    async def readline(self) -> bytes:
        try:
            return await self.reader.readline()
        except (ValueError, asyncio.LimitOverrunError):
            raise CommandError(f"request line longer than {MAX_LINE} bytes") from None
        except (_ssl_error(), ConnectionError):
            return b""  # ragged TLS EOF after a client's shutdown(SHUT_WR) is a normal EOF

    async def read(self, n: int = 65536) -> bytes:
        try:
            return await self.reader.read(n)
        except _ssl_error():
            return b""  # ragged TLS EOF: how receptorctl ends a payload over TLS
        except ConnectionError:
            self._reset = True
            return b""

    def peer_closed(self) -> bool:
        """A reset on any transport; on a Unix socket also a plain close, which (unlike
        ``shutdown(SHUT_WR)``) raises POLLHUP.  Over TCP a close and a half-close both
        arrive as one FIN and cannot be told apart."""
        if self._reset:
            return True
        sock = self.writer.get_extra_info("socket")
        if self.kind != "unix" or sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP)
        return any(events & (select.POLLHUP | select.POLLERR) for _, events in poller.poll(0))

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    async def drain(self) -> None:
        await self.writer.drain()

    def write_eof(self) -> None:
        if self.writer.can_write_eof() and not self.writer.is_closing():
            self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, _ssl_error()):
            pass


def peer_address(writer: asyncio.StreamWriter, kind: str) -> str:
    """``host:port`` of a TCP client, the socket path (or ``kind``) for a Unix one."""
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else (peer or kind)


class MeshConn:
    """Adapter for a mesh stream (a client on another node)."""

    kind = "mesh"

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.peer = stream.remote_node

    async def readline(self) -> bytes:
        return await self.stream.readline()

    async def read(self, n: int = 65536) -> bytes:
        return await self.stream.read(n)

    def write(self, data: bytes) -> None:
        self.stream.write(data)

    async def drain(self) -> None:
        await self.stream.drain()

    def write_eof(self) -> None:
        self.stream.write_eof()

    def peer_closed(self) -> bool:
        return False  # QUIC tells a FIN (EOF) from a reset, which read() raises

    async def close(self) -> None:
        await self.stream.close()


class _Streamed:
    """Returned by handlers that wrote their own reply; the session then ends."""


STREAMED = _Streamed()


async def serve_session(node: ControlHost, conn: ControlConn, *, greeted: bool = False) -> None:
    """Run one control session: greeting (unless the early responder sent it), then commands
    until EOF or a streaming command."""
    log.debug("control_session_start", node_id=node.node_id, peer=conn.peer, kind=conn.kind)
    try:
        if not greeted:
            conn.write(greeting(node.node_id))
            await conn.drain()
        while True:
            try:
                async with asyncio.timeout(LINE_TIMEOUT):
                    raw = await conn.readline()
            except asyncio.TimeoutError:
                conn.write(encode_error(f"no command within {LINE_TIMEOUT:g}s; closing"))
                await conn.drain()
                return
            except CommandError as exc:
                conn.write(encode_error(str(exc)))
                await conn.drain()
                return
            if not raw:
                return
            at_eof = not raw.endswith(b"\n")
            request: Request | None = None
            try:
                request = parse_line(raw.rstrip(b"\n"))
                if request is None:
                    if at_eof:
                        return
                    continue
                reply = await dispatch(node, conn, request)
            except CommandError as exc:
                log.info("control_command_refused", node_id=node.node_id, peer=conn.peer,
                         kind=conn.kind, command=request.command if request else None,
                         unit_id=_unit_of(request), error=str(exc))
                conn.write(encode_error(str(exc)))
            except Exception as exc:  # a handler bug must not take the node down
                log.exception("control_command_crashed", node_id=node.node_id, peer=conn.peer,
                              command=request.command if request else None,
                              unit_id=_unit_of(request))
                conn.write(encode_error(f"internal error: {exc}"))
            else:
                if reply is STREAMED:
                    return
                conn.write(encode_reply(reply))
            await conn.drain()
            if at_eof:
                return
    except (ConnectionError, asyncio.IncompleteReadError, _ssl_error(), StreamError):
        pass  # the client went away; nothing to answer
    finally:
        try:
            await conn.close()
        except Exception:
            pass


def _unit_of(request: Request | None) -> str | None:
    """The unit a request names (JSON ``unitid``), for log events."""
    unit_id = request.params.get("unitid") if request is not None and request.is_json else None
    return unit_id if isinstance(unit_id, str) else None


async def _refuse(conn: ControlConn) -> None:
    try:
        conn.write(encode_error(f"too many control connections (limit {MAX_SESSIONS}); "
                                f"try again later"))
        await conn.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        await conn.close()


async def dispatch(node: ControlHost, conn: ControlConn, request: Request) -> Any:
    registered = node.plugins.control_command(request.command)
    if registered is None:
        raise CommandError("Unknown command")
    return await registered.factory(CommandContext(node, conn), request)


class ControlService:
    """All listeners of one ``control-service`` section.

    ``adopted`` holds Unix sockets the early responder bound (by path) and ``parked`` the
    sessions it greeted; the service takes those that are its own.
    """

    def __init__(self, node: ControlHost, config: Any,
                 adopted: dict[str, BoundUnixSocket] | None = None,
                 parked: list["ParkedSession"] | None = None) -> None:
        self.node = node
        self.config = config
        self._adopted = adopted if adopted is not None else {}
        self._parked = parked if parked is not None else []
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.sessions: set[asyncio.Task[None]] = set()
        #: Our Unix sockets: their files are removed (and locks released) by :meth:`stop`.
        self._unix: list[BoundUnixSocket] = []
        self.tcp_port: int | None = None

    def _spawn(self, conn: ControlConn, *, greeted: bool = False) -> None:
        if len(self.sessions) >= MAX_SESSIONS:
            log.warning("control_session_refused", node_id=self.node.node_id, peer=conn.peer,
                        reason="too many control connections", limit=MAX_SESSIONS)
            task = asyncio.create_task(_refuse(conn))
        else:
            task = asyncio.create_task(serve_session(self.node, conn, greeted=greeted))
        self.sessions.add(task)
        task.add_done_callback(self.sessions.discard)

    async def start(self) -> None:
        cfg = self.config
        if cfg.filename:
            await self._start_unix(cfg.filename, cfg.permissions)
        if cfg.tcplisten:
            await self._start_tcp(str(cfg.tcplisten), cfg.tcptls)
        if cfg.service:
            listener = self.node.listen_stream(cfg.service, tags={"type": "Control Service"},
                                               tls=cfg.tls)
            self.tasks.append(asyncio.create_task(self._accept_mesh(listener)))

    async def _start_unix(self, filename: str, permissions: int) -> None:
        path = os.path.expanduser(filename)
        bound = self._adopted.pop(path, None) or bind_unix_socket(path, permissions)
        self._unix.append(bound)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._spawn(StreamConn(reader, writer, "unix"))

        bound.sock.setblocking(False)
        server = await asyncio.start_unix_server(handle, sock=bound.sock, limit=MAX_LINE)
        self.servers.append(server)
        log.info("control_listening", node_id=self.node.node_id, socket=path)
        for session in [p for p in self._parked if p.path == path]:
            self._parked.remove(session)
            await self._adopt(session)

    async def _adopt(self, session: "ParkedSession") -> None:
        """Serve a session the early responder greeted, starting with the bytes it read."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_LINE, loop=loop)
        if session.pending:
            reader.feed_data(session.pending)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        session.conn.setblocking(False)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, session.conn)
        except OSError:
            session.conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._spawn(StreamConn(reader, writer, "unix"), greeted=True)

    async def _start_tcp(self, listen: str, tls_name: str | None) -> None:
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        tls = self.node.tls_config("server", tls_name) if tls_name else None
        context = tls.ssl_context() if tls is not None else None
        kind = "tls" if context else "tcp"

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if tls is not None and not _client_cert_accepted(tls, writer):
                writer.close()
                return
            self._spawn(StreamConn(reader, writer, kind))

        server = await bind(join_host_port(host, int(port)), asyncio.start_server(
            handle, host, int(port), ssl=context, limit=MAX_LINE, reuse_address=True,
            ssl_handshake_timeout=10 if context else None))
        self.tcp_port = server.sockets[0].getsockname()[1]
        self.servers.append(server)
        log.info("control_listening", node_id=self.node.node_id, tcp=f"{host}:{self.tcp_port}",
                 tls=bool(context))

    async def _accept_mesh(self, listener: Any) -> None:
        try:
            while True:
                stream = await listener.accept()
                self._spawn(MeshConn(stream))
        finally:
            listener.close()

    async def stop(self) -> None:
        """Stop serving; remove the Unix socket files, so that a client finds no socket
        rather than one that refuses connections."""
        for server in self.servers:
            server.close()
        for bound in self._unix:  # the file goes while we hold its lock: never another's
            bound.close(unlink=True)
        self._unix = []
        await cancel_and_wait(self.tasks + list(self.sessions))


def _client_cert_accepted(tls: Any, writer: asyncio.StreamWriter) -> bool:
    """Checks Python's ssl cannot do during the handshake (certificate pinning).

    The TLS plugin's ``peer_node_ids`` raises on a pinned-fingerprint mismatch; control
    clients are not mesh nodes, so the node IDs themselves are not checked here.
    """
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return True
    peer = peer_address(writer, "tls")
    try:
        with structlog.contextvars.bound_contextvars(peer=peer):
            tls.peer_node_ids(der)
    except Exception as exc:
        log.warning("control_client_refused", peer=peer, reason=str(exc))
        return False
    return True
