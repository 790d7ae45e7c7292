"""The early control responder: a starting node answers ``status`` before it is up.

``mesh node -c FILE`` reads its config and binds the Unix sockets of its control services
before it imports click, pluggy, asyncio or any plugin (tens of milliseconds after exec).  A
thread then serves those sockets: it greets every client and answers ``status`` (text or JSON
form) with what a node without links reports; the first line of any other command parks the
session.  When the node's asyncio control service starts it calls :meth:`EarlyControl.handoff`:
the thread stops and the service adopts the listening sockets and every parked session, with
the bytes already read, and answers as if it had been there from the start.

Tools that start a node and connect to its socket right away (receptorctl's own tests,
deployment scripts) therefore find it; commands other than ``status`` wait until the node is
up instead of failing.  Standard library and light kernel modules only.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import threading

from mesh import TYPE_CHECKING
from mesh.config.raw import RawConfig, name_text, read_config
from mesh.config.scalars import SourceInt, normalize_key, normalize_section
from mesh.control.protocol import CommandError, encode_error, encode_reply, greeting, parse_line
from mesh.control.status import answer_status, status_reply
from mesh.control.unix_socket import BoundUnixSocket, bind_unix_socket
from mesh.defaults import default_node_id

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: Sessions the responder holds at once; more are refused, like the control service does.
MAX_SESSIONS = 256
#: A parked session's unread request bytes are bounded like a control line.
MAX_BUFFER = 16 * 1024 * 1024
#: How long :meth:`EarlyControl.handoff` waits for the thread to stop.
STOP_TIMEOUT = 5.0
#: The GIL switch interval while the responder runs beside the node's start-up: the thread
#: gets the GIL within half a millisecond, not Python's default 5 ms per step of a reply.
SWITCH_INTERVAL = 0.0005


class ParkedSession:
    """A client the responder greeted whose next request is for the real control service."""

    def __init__(self, path: str, conn: socket.socket, pending: bytes = b"") -> None:
        #: The control socket it connected to.
        self.path = path
        self.conn = conn
        #: Bytes received and not answered yet (the parked request line and anything after).
        self.pending = pending


class _Session:
    def __init__(self, path: str, conn: socket.socket) -> None:
        self.path, self.conn, self.buffer = path, conn, bytearray()


class EarlyControl:
    """Bound control sockets of a starting node, served by a thread until :meth:`handoff`."""

    def __init__(self, raw: RawConfig, node_id: str, listeners: list[BoundUnixSocket]) -> None:
        #: The config as read (the node parses it again with every plugin's sections).
        self.raw = raw
        self.node_id = node_id
        self.listeners = {bound.path: bound for bound in listeners}
        self._status = status_reply(node_id)
        self._greeting = greeting(node_id)
        self._parked: list[ParkedSession] = []
        self._wake_r, self._wake_w = os.pipe()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._serve, name="early-control", daemon=True)
        self._thread.start()

    # -- the node's side ---------------------------------------------------------------------

    def handoff(self) -> tuple[dict[str, BoundUnixSocket], list[ParkedSession]]:
        """Stop answering; return the listening sockets (by path) and the parked sessions.

        Called once, by the control service, from the node's event loop.
        """
        self._stop()
        listeners, self.listeners = self.listeners, {}
        parked, self._parked = self._parked, []
        return listeners, parked

    def close(self) -> None:
        """Stop and close everything not handed off (the node failed to start): the socket
        files bound here are removed."""
        self._stop()
        for session in self._parked:
            session.conn.close()
        self._parked = []
        for bound in self.listeners.values():
            bound.close(unlink=True)
        self.listeners = {}

    def _stop(self) -> None:
        if self._thread.is_alive():
            os.write(self._wake_w, b"x")
            self._thread.join(STOP_TIMEOUT)
            sys.setswitchinterval(self._switch_interval)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # -- the thread --------------------------------------------------------------------------

    def _serve(self) -> None:
        poller = select.poll()
        by_fd: dict[int, BoundUnixSocket] = {}
        for bound in self.listeners.values():
            by_fd[bound.sock.fileno()] = bound
            poller.register(bound.sock.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        sessions: dict[int, _Session] = {}
        while True:
            for fd, _events in poller.poll():
                if fd == self._wake_r:
                    self._parked.extend(ParkedSession(s.path, s.conn, bytes(s.buffer))
                                        for s in sessions.values())
                    return
                if fd in by_fd:
                    self._accept(by_fd[fd], sessions, poller)
                elif fd in sessions and not self._read(sessions[fd]):
                    poller.unregister(fd)
                    del sessions[fd]

    def _accept(self, bound: BoundUnixSocket, sessions: dict[int, _Session],
                poller: select.poll) -> None:
        try:
            conn, _ = bound.sock.accept()
        except OSError:
            return
        conn.settimeout(5.0)  # a send to a client that reads nothing must not stall the rest
        try:
            if len(sessions) >= MAX_SESSIONS:
                conn.sendall(encode_error(f"too many control connections (limit "
                                          f"{MAX_SESSIONS}); try again later"))
                conn.close()
                return
            conn.sendall(self._greeting)
        except OSError:
            conn.close()
            return
        sessions[conn.fileno()] = _Session(bound.path, conn)
        poller.register(conn.fileno(), select.POLLIN)

    def _read(self, session: _Session) -> bool:
        """Handle what a client sent; False once the session is over here (closed or
        parked)."""
        try:
            data = session.conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            if session.buffer:  # a last line without a newline: the real service decides
                self._park(session)
            else:
                session.conn.close()
            return False
        session.buffer += data
        while (end := session.buffer.find(b"\n")) >= 0:
            line = bytes(session.buffer[:end])
            try:
                request = parse_line(line)
            except CommandError:
                request = None if not line.strip() else _Unparsed
            if request is None:
                del session.buffer[:end + 1]
                continue
            if request is _Unparsed or request.command != "status":
                self._park(session)
                return False
            try:
                reply = encode_reply(answer_status(self._status, request))
            except CommandError as exc:
                reply = encode_error(str(exc))
            del session.buffer[:end + 1]
            try:
                session.conn.sendall(reply)
            except OSError:
                session.conn.close()
                return False
        if len(session.buffer) > MAX_BUFFER:
            self._park(session)
            return False
        return True

    def _park(self, session: _Session) -> None:
        self._parked.append(ParkedSession(session.path, session.conn, bytes(session.buffer)))


#: Marks a line the real control service must answer (with its own error).
_Unparsed: Any = object()


def _sections(raw: RawConfig, name: str) -> list[object]:
    """The params of every entry of section ``name`` in ``raw`` (list form, or version 2 with
    the singular or the plural key), skipping what is not plainly written."""
    entries: list[object] = []
    if isinstance(raw.data, list):
        for item in raw.data:
            if isinstance(item, dict) and len(item) == 1:
                key, params = next(iter(item.items()))
                if normalize_section(name_text(key)) == name:
                    entries.append(params)
            elif isinstance(item, str) and normalize_section(item) == name:
                entries.append(None)
    elif isinstance(raw.data, dict):
        for key, value in raw.data.items():
            section = normalize_section(name_text(key))
            if section == name:
                entries.append(value)
            elif section == name + "s" and isinstance(value, list):
                entries.extend(value)
    return entries


def _key(params: object, key: str) -> object:
    """``params[key]``, keys matched as the schemas match them; None when absent."""
    if isinstance(params, dict):
        for name, value in params.items():
            if normalize_key(name_text(name)) == key:
                return value
    return None


def early_settings(raw: RawConfig) -> tuple[str, list[tuple[str, int]]] | None:
    """The node ID and the control services' Unix sockets ``(path, permissions)`` of a
    config, read without the section schemas, or None when they are not plainly written (the
    node's full start then binds the sockets, and reports any mistake)."""
    nodes = _sections(raw, "node")
    node = nodes[0] if nodes else None
    node_id = node if not isinstance(node, dict) and node is not None else _key(node, "id")
    if node_id is None:
        node_id = default_node_id()
    elif not isinstance(node_id, str):
        node_id = node_id.text if isinstance(node_id, SourceInt) else None
    if len(nodes) > 1 or not node_id:
        return None
    sockets = []
    for service in _sections(raw, "control-service"):
        if service is not None and not isinstance(service, dict):
            return None
        filename, permissions = _key(service, "filename"), _key(service, "permissions")
        if permissions is None:
            permissions = 0o600
        if not isinstance(permissions, int) or isinstance(permissions, bool):
            return None
        if isinstance(filename, str) and filename:
            sockets.append((filename, int(permissions)))
        elif filename is not None:
            return None
    return node_id, sockets


def start_early_control(config_path: str) -> EarlyControl | None:
    """Read the config and bind its control services' Unix sockets, answering ``status`` on
    them from a thread; None when there is nothing to bind or anything goes wrong (the normal
    start-up then binds, or reports the problem)."""
    bound: list[BoundUnixSocket] = []
    try:
        raw = read_config(config_path)
        settings = early_settings(raw)
        if settings is None:
            return None
        node_id, sockets = settings
        for filename, permissions in sockets:
            bound.append(bind_unix_socket(filename, permissions))
        if not bound:
            return None
        return EarlyControl(raw, node_id, bound)
    except Exception:
        for socket_ in bound:
            socket_.close(unlink=True)
        return None
