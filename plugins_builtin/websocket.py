"""websocket backend: ``ws-listener`` and ``ws-peer``, one binary WebSocket message per mesh
message (Receptor §1.4), on the ``websockets`` library's asyncio API.

Only binary messages are sent; a text message from the neighbour is a protocol error that closes
the link.  Unlike Receptor, both ends send WebSocket pings so a dead neighbour is noticed even
when it is a Go node without the mesh keepalive.

A ws-peer reaches its listener through an HTTP proxy (CONNECT) named by its ``proxy`` key or,
like Receptor (Go's ``http.ProxyFromEnvironment``), by ``HTTPS_PROXY``/``HTTP_PROXY`` and
``NO_PROXY``; :func:`mesh_builtin.ws_proxy.choose_proxy` decides.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidURI, WebSocketException
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Origin
from websockets.uri import parse_uri

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.net.backend import (Backend, LinkHost, LinkOptions, Session, SessionClosed,
                              join_host_port, redial_loop)
from mesh.net.inbox import Inbox
from mesh_builtin.link_config import (bindaddr_field, check_costs, check_listener,
                                      listener_allowedpeers_field, listener_cost_field,
                                      nodecost_field, peer_allowedpeers_field, peer_cost_field)
from mesh_builtin.tcp import link_tls
from mesh_builtin.ws_proxy import DIRECT, check_proxy_url, choose_proxy, proxy_failure

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterBackend

log = structlog.get_logger(__name__)

#: Opening handshake (TCP, TLS and HTTP upgrade) limit; Receptor's ReadHeaderTimeout is 5 s.
OPEN_TIMEOUT = 15.0
SERVER_OPEN_TIMEOUT = 5.0
#: WebSocket keepalive: a neighbour that stops answering pings is dropped after about 15 s,
#: before the node's 21 s idle timeout (mesh neighbours notice in 4 s through their keepalive).
PING_INTERVAL = 5.0
PING_TIMEOUT = 10.0
#: Largest incoming message; mesh messages are at most 65535 bytes.
MAX_SIZE = 1024 * 1024
#: Messages waiting for the link loop before we stop reading (TCP then pushes back).
MAX_QUEUED = 256
#: Queued outgoing bytes above which the link is congested (droppable data is dropped) ...
CONGESTED_BYTES = 4 * 1024 * 1024
#: ... and above which messages are dropped outright, so a stalled neighbour cannot eat memory.
DROP_BYTES = 32 * 1024 * 1024
#: Time a closing session gets to flush what was queued (e.g. a Reject) before it is cut.
FLUSH_TIMEOUT = 2.0
#: Transport buffer size at which ``send`` waits for the socket (websockets' write_limit).
WRITE_LIMIT = 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(netloc: str, scheme: str) -> str:
    """``host[:port]`` lowercased, without the scheme's default port."""
    netloc = netloc.rpartition("@")[2].lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and netloc.endswith(f":{default}"):
        netloc = netloc[: -len(f":{default}")]
    return netloc


def path_matches(pattern: str, path: str) -> bool:
    """Go ServeMux rules: ``/a/`` matches the subtree below it, ``/a`` only itself."""
    path = path.split("?", 1)[0]
    if pattern.endswith("/"):
        return path.startswith(pattern)
    return path == pattern


def split_extraheader(value: str) -> tuple[str, str]:
    """``Key:Value`` split at the first ``:``; the value is kept as written (Receptor)."""
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"extraheader {value!r} must look like Key:Value")
    return name.strip(), rest


class WsSession(Session):
    """A mesh session over a websockets connection; a reader and a writer task pump it."""

    #: Connections being closed in the background (strong references for their tasks).
    _closing: set[asyncio.Task[None]] = set()

    def __init__(self, connection: Any, label: str, *,
                 tls_identity: Callable[[bytes], list[str] | None] | None = None) -> None:
        self.label = label
        self.max_message = 65535
        self.connection = connection
        #: The TLS section's certificate → node IDs check (None without TLS).
        self.tls_identity = tls_identity
        self.dropped = 0
        self._inbox: Inbox[bytes] = Inbox(lambda: SessionClosed(self.label))
        self._in_space: asyncio.Future[None] | None = None
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._out_ready = asyncio.Event()
        self._closed = False
        self._close_code: tuple[int, str] = (CloseCode.NORMAL_CLOSURE, "")
        loop = asyncio.get_running_loop()
        self._reader = loop.create_task(self._read())
        self._writer = loop.create_task(self._write())
        self._shutdown: asyncio.Task[None] | None = None

    # -- pumps ---------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                data = await self.connection.recv()
                if isinstance(data, str):
                    log.warning("ws_text_message", peer=self.peer_name, size=len(data))
                    self._close_code = (CloseCode.UNSUPPORTED_DATA,
                                        "mesh links carry binary messages only")
                    return
                if not data:  # a zero-length message is never valid
                    continue
                self._inbox.put(data)
                if len(self._inbox) >= MAX_QUEUED:
                    self._in_space = asyncio.get_running_loop().create_future()
                    try:
                        await self._in_space
                    finally:
                        self._in_space = None
        except ConnectionClosed:
            pass
        except Exception as exc:  # a broken peer must only end its own session
            log.warning("ws_read_failed", peer=self.peer_name,
                        error=str(exc) or type(exc).__name__)
        finally:
            self._mark_closed()

    async def _write(self) -> None:
        try:
            while True:
                while not self._out:
                    if self._closed:
                        return
                    self._out_ready.clear()
                    await self._out_ready.wait()
                message = self._out.popleft()
                self._out_bytes -= len(message)
                await self.connection.send(message)
        except ConnectionClosed:
            pass
        except Exception as exc:
            log.warning("ws_write_failed", peer=self.peer_name,
                        error=str(exc) or type(exc).__name__)
        finally:
            self._out.clear()
            self._out_bytes = 0
            self._mark_closed()

    def _mark_closed(self) -> None:
        if not self._closed:
            self.close()

    async def _close_connection(self) -> None:
        try:
            try:
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await asyncio.shield(self._writer)
            except asyncio.TimeoutError:
                pass
            self._writer.cancel()
            await self.connection.close(*self._close_code)
        except asyncio.CancelledError:  # the node is stopping: no closing handshake
            transport = getattr(self.connection, "transport", None)
            if transport is not None:
                transport.abort()
            raise
        finally:
            self._writer.cancel()
            self._reader.cancel()

    # -- Session -----------------------------------------------------------------------

    def send(self, message: bytes) -> None:
        if self._closed:
            raise SessionClosed(self.label)
        if len(message) > self.max_message:
            raise SessionClosed(f"{self.label}: message of {len(message)} bytes is too large "
                                f"for a websocket link (at most {self.max_message})")
        if self._out_bytes > DROP_BYTES:
            self.dropped += 1
            return
        data = bytes(message)  # bytes, never str: always a binary frame
        self._out.append(data)
        self._out_bytes += len(data)
        self.messages_out += 1
        self.bytes_out += len(data)
        self._out_ready.set()

    async def recv(self) -> bytes:
        message = await self._inbox.get()
        self.messages_in += 1
        self.bytes_in += len(message)
        space = self._in_space
        if space is not None and not space.done() and len(self._inbox) < MAX_QUEUED // 2:
            space.set_result(None)
        return message

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._out_ready.set()  # the writer flushes what is queued, then stops
        self._inbox.close()
        self._shutdown = asyncio.get_running_loop().create_task(self._close_connection())
        self._closing.add(self._shutdown)
        self._shutdown.add_done_callback(self._closing.discard)

    async def wait_closed(self) -> None:
        """Wait until the WebSocket connection is closed (after :meth:`close`)."""
        if self._shutdown is not None:
            await self._shutdown

    def congested(self) -> bool:
        return self._out_bytes > CONGESTED_BYTES

    def peer_node_ids(self) -> list[str] | None:
        if self.tls_identity is None:
            return None
        transport = getattr(self.connection, "transport", None)
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return self.tls_identity(der) if der else []


# -- config ------------------------------------------------------------------------------


@dataclass
class WsListenerConfig:
    port: int = field(metadata={"doc": "TCP port of the HTTP server."})
    bindaddr: str = bindaddr_field()
    path: str = field(default="/", metadata={
        "doc": "URL path that accepts WebSocket upgrades; ending in `/` it also matches every "
               "path below it (Go ServeMux rules)."})
    tls: str | None = field(default=None, metadata={"doc": "Name of a tls-server section "
                                                           "(serves wss://)."})
    cost: float = listener_cost_field()
    nodecost: dict[str, float] = nodecost_field()
    allowedpeers: list[str] = listener_allowedpeers_field()

    def validate(self) -> None:
        check_listener(self.port, self.cost, self.nodecost)
        if not self.path.startswith("/"):
            raise SectionValueError("path", f"must start with '/', got {self.path!r}")


@dataclass
class WsPeerConfig:
    address: str = field(metadata={"doc": "URL of the ws-listener: ws://host:port/path or "
                                          "wss://host:port/path."})
    redial: bool = field(default=True, metadata={"doc": "Dial again after failures."})
    extraheader: str = field(default="", metadata={
        "doc": "One extra HTTP header for the upgrade request, `Key:Value` (split at the "
               "first `:`; the value is sent as written)."})
    tls: str | None = field(default=None, metadata={
        "doc": "Name of a tls-client section for wss:// (default: system CAs)."})
    proxy: str = field(default="", repr=False, metadata={  # repr: may hold a password
        "doc": "HTTP proxy to dial through with CONNECT: `http://[user:password@]host:port` "
               "(or `https://`; the user and password are sent as basic auth), or `direct` "
               "for no proxy even when the environment names one.  Empty: like Receptor, "
               "`HTTPS_PROXY` for wss:// and `HTTP_PROXY` for ws:// (or lower case), except "
               "for localhost, loopback addresses and hosts in `NO_PROXY`."})
    cost: float = peer_cost_field()
    allowedpeers: list[str] = peer_allowedpeers_field()

    def validate(self) -> None:
        try:
            parse_uri(self.address)
        except InvalidURI:
            raise SectionValueError("address", f"{self.address!r} is not a ws:// or wss:// "
                                               f"URL") from None
        except ValueError as exc:  # e.g. a port out of range
            raise SectionValueError("address", f"{self.address!r}: {exc}") from None
        if self.extraheader:
            try:
                split_extraheader(self.extraheader)
            except ValueError as exc:
                raise SectionValueError("extraheader", str(exc)) from None
        if self.proxy and self.proxy != DIRECT:
            try:
                check_proxy_url(self.proxy)
            except ValueError as exc:
                raise SectionValueError("proxy", f"{exc}: write http://host:port or "
                                                 f"http://user:password@host:port, or "
                                                 f"'{DIRECT}' for no proxy") from None
        check_costs(self.cost)


# -- listener ----------------------------------------------------------------------------


class WsListener(Backend):
    listens = True

    def __init__(self, config: WsListenerConfig, node: Any) -> None:
        self.config = config
        self.ssl, self.tls_identity = link_tls(node, "server", config.tls)
        self.options = LinkOptions(config.cost, dict(config.nodecost), tuple(config.allowedpeers))
        self.bound_port: int | None = None

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not path_matches(self.config.path, request.path):
            log.info("ws_upgrade_refused", peer=_peer(connection), path=request.path,
                     reason="path")
            return connection.respond(404, "404 page not found\n")
        # gorilla's default upgrader: an Origin header must name the host that was asked for.
        origin = request.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            host = request.headers.get("Host", "")
            scheme = "https" if self.ssl is not None else "http"
            if _host_port(parts.netloc, parts.scheme) != _host_port(host, scheme):
                log.info("ws_upgrade_refused", peer=_peer(connection), origin=origin,
                         reason="origin")
                return connection.respond(403, "Forbidden\n")
        return None

    async def run(self, host: LinkHost) -> None:
        sessions: set[WsSession] = set()

        async def handler(connection: ServerConnection) -> None:
            session = WsSession(connection, f"ws {_peer(connection)}",
                                tls_identity=self.tls_identity)
            sessions.add(session)
            try:
                await host.run_session(session, self.options)
            finally:
                session.close()
                sessions.discard(session)
                await session.wait_closed()

        bind = self.config.bindaddr or None
        server = await self.listen(
            join_host_port(bind or "0.0.0.0", self.config.port),
            serve(handler, bind, self.config.port, ssl=self.ssl,
                  process_request=self._check_request, compression=None,
                  open_timeout=SERVER_OPEN_TIMEOUT, ping_interval=PING_INTERVAL,
                  ping_timeout=PING_TIMEOUT, max_size=MAX_SIZE, write_limit=WRITE_LIMIT,
                  reuse_address=True))
        self.bound_port = next(iter(server.sockets)).getsockname()[1]
        scheme = "wss" if self.ssl is not None else "ws"
        log.info("listening", node_id=host.node_id, backend="ws-listener",
                 address=f"{scheme}://{join_host_port(bind or '0.0.0.0', self.bound_port)}"
                         f"{self.config.path}")
        try:
            await asyncio.Future()
        finally:
            server.close()
            for session in list(sessions):
                session.close()
            await asyncio.shield(server.wait_closed())


def _peer(connection: Any) -> str:
    address = connection.remote_address
    if not address:
        return "?"
    return join_host_port(address[0], address[1])


# -- peer --------------------------------------------------------------------------------


class WsPeer(Backend):
    def __init__(self, config: WsPeerConfig, node: Any) -> None:
        self.config = config
        self.uri = parse_uri(config.address)
        self.ssl, self.tls_identity = None, None
        if config.tls:
            if self.uri.secure:
                self.ssl, self.tls_identity = link_tls(node, "client", config.tls)
            else:
                log.warning("ws_tls_ignored", address=config.address,
                            reason="tls is only used with wss:// addresses")
        scheme = "https" if self.uri.secure else "http"
        # Receptor sends Origin: http(s)://host[:port]; match the Host header websockets sends.
        self.origin = Origin(f"{scheme}://{_host_port(urlsplit(config.address).netloc, scheme)}")
        self.headers = [split_extraheader(config.extraheader)] if config.extraheader else []
        self.options = LinkOptions(config.cost, {}, tuple(config.allowedpeers))
        # Read once, as Go does: the environment of a running process does not change.
        self.proxy = choose_proxy(config.proxy, self.uri, os.environ)
        #: Why the environment's proxy cannot be used (each dial fails with it), or None.
        self.proxy_problem: str | None = None
        if self.proxy.url is not None and self.proxy.source != "proxy key":
            try:
                check_proxy_url(self.proxy.url)
            except ValueError as exc:
                self.proxy_problem = (f"{self.proxy.source}: {exc}; fix the variable, or set "
                                      f"proxy (a URL or '{DIRECT}') in this ws-peer section")

    async def dial(self) -> WsSession:
        if self.proxy_problem is not None:
            raise SessionClosed(self.proxy_problem)
        kwargs: dict[str, Any] = {}
        if self.ssl is not None:
            kwargs["ssl"] = self.ssl
        try:
            connection = await connect(
                self.config.address, origin=self.origin, additional_headers=self.headers,
                compression=None, open_timeout=OPEN_TIMEOUT, ping_interval=PING_INTERVAL,
                ping_timeout=PING_TIMEOUT, max_size=MAX_SIZE, write_limit=WRITE_LIMIT,
                proxy=self.proxy.url, **kwargs)
        except (WebSocketException, OSError) as exc:
            if self.proxy.url is not None:
                raise SessionClosed(proxy_failure(
                    exc, self.proxy, join_host_port(self.uri.host, self.uri.port),
                    OPEN_TIMEOUT)) from None
            if isinstance(exc, OSError):
                raise
            # refused upgrade, bad status, bad handshake
            raise SessionClosed(f"{type(exc).__name__}: {exc}") from None
        return WsSession(connection, f"ws {self.config.address}",
                         tls_identity=self.tls_identity)

    async def run(self, host: LinkHost) -> None:
        if self.proxy.url is not None:
            log.info("ws_peer_proxy", node_id=host.node_id, peer=self.config.address,
                     proxy=self.proxy.shown, source=self.proxy.source)
        elif self.proxy.source:
            log.debug("ws_peer_direct", node_id=host.node_id, peer=self.config.address,
                      reason=self.proxy.source)
        await redial_loop(self.dial, host, self.options, redial=self.config.redial,
                          what=f"ws-peer {self.config.address}", peer=self.config.address)


@hookimpl
def mesh_register_backends(register: RegisterBackend) -> None:
    register(SectionSpec("ws-listener", WsListenerConfig, bare="port",
                         doc="Accept mesh links over WebSocket (ws:// or, with tls, wss://)."),
             WsListener)
    register(SectionSpec("ws-peer", WsPeerConfig, bare="address",
                         doc="Dial a mesh link over WebSocket."), WsPeer)
