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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.config.loader import RawConfig, build_config, read_config
from mesh.control.protocol import CommandError, encode_error, encode_reply, greeting, parse_line
from mesh.control.status import answer_status, status_reply
from mesh.control.unix_socket import BoundUnixSocket, bind_unix_socket
from mesh.node_config import KERNEL_SPECS, ControlServiceConfig, NodeConfig

#: Sessions the responder holds at once; more are refused, like the control service does.
MAX_SESSIONS = 256
#: A parked session's unread request bytes are bounded like a control line.
MAX_BUFFER = 16 * 1024 * 1024
#: How long :meth:`EarlyControl.handoff` waits for the thread to stop.
STOP_TIMEOUT = 5.0


@dataclass
class ParkedSession:
    """A client the responder greeted whose next request is for the real control service."""

    path: str
    conn: socket.socket
    #: Bytes received and not answered yet (the parked request line and anything after it).
    pending: bytes = b""


@dataclass
class _Session:
    path: str
    conn: socket.socket
    buffer: bytearray = field(default_factory=bytearray)


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


def start_early_control(config_path: str | Path) -> EarlyControl | None:
    """Read the config and bind its control services' Unix sockets, answering ``status`` on
    them from a thread; None when there is nothing to bind or anything goes wrong (the normal
    start-up then binds, or reports the problem)."""
    bound: list[BoundUnixSocket] = []
    try:
        raw = read_config(config_path)
        specs = {spec.name: spec for spec in KERNEL_SPECS}
        config = build_config(raw, specs, partial=True)
        node = config.one("node") or NodeConfig()
        assert isinstance(node, NodeConfig)
        for service in config.of("control-service"):
            assert isinstance(service, ControlServiceConfig)
            if service.filename:
                bound.append(bind_unix_socket(service.filename, service.permissions))
        if not bound:
            return None
        return EarlyControl(raw, node.id, bound)
    except Exception:
        for socket_ in bound:
            socket_.close(unlink=True)
        return None
