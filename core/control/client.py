"""A blocking control-protocol client, used by the ``mesh`` CLI."""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any, BinaryIO, Iterator

from mesh.control.protocol import GREETING_PATTERN

ADDRESS = re.compile(r"(tcp|tls):(//)?([a-zA-Z0-9-.:\[\]]+):([0-9]+)|(unix:(//)?)?([^:]+)")


class ControlClientError(Exception):
    """The node answered ``ERROR: …`` or could not be reached; the message says which."""


class ControlClient:
    """One control session: connect, read the greeting, then send commands."""

    def __init__(self, address: str, *, timeout: float | None = 60.0) -> None:
        match = ADDRESS.fullmatch(address)
        if match is None:
            raise ControlClientError(f"cannot parse control address {address!r}")
        try:
            if match.group(1) == "tcp":
                self.sock = socket.create_connection((match.group(3).strip("[]"),
                                                      int(match.group(4))), timeout=timeout)
            elif match.group(1) == "tls":
                raise ControlClientError("tls:// addresses need the tls plugin; use receptorctl")
            else:
                path = os.path.expanduser(match.group(7))
                if not os.path.exists(path):
                    raise ControlClientError(f"control socket {path} does not exist "
                                             f"(is the node running? see --socket/MESH_SOCKET)")
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                try:
                    self.sock.connect(path)
                except OSError:
                    self.sock.close()
                    raise
        except OSError as exc:
            raise ControlClientError(f"cannot connect to {address}: {exc}") from None
        self.file = self.sock.makefile("rwb")
        try:
            #: The greeting line, e.g. ``Receptor Control, node alpha``.
            self.greeting = line = self.readline()
            greeting = GREETING_PATTERN.fullmatch(line)
            if greeting is None:
                raise ControlClientError(f"{address} is not a mesh/Receptor control service")
        except BaseException:  # a node too busy to greet in time: do not leak the socket
            self.close()
            raise
        self.node_id = greeting.group(1)

    def readline(self) -> str:
        """The next line the node sends, stripped (``""`` once it closed the connection)."""
        return self.file.readline().decode("utf-8", "replace").strip()

    def send_line(self, line: str) -> None:
        """Send one command line (without its line break)."""
        self.file.write(line.encode() + b"\n")
        self.file.flush()

    def reply(self) -> Any:
        """The next line, decoded from JSON; raises ControlClientError for ``ERROR: ...`` or
        a closed connection (json.JSONDecodeError for a line that is not JSON)."""
        line = self.readline()
        if line.startswith("ERROR:"):
            raise ControlClientError(line[7:] if line.startswith("ERROR: ") else line[6:])
        if not line:
            raise ControlClientError("the node closed the connection")
        return json.loads(line)

    def command(self, line: str) -> Any:
        """Send one text or JSON command and return its decoded JSON reply."""
        self.send_line(line)
        return self.reply()

    def shutdown_write(self) -> None:
        """Tell the node that nothing more will be sent (half-close the connection)."""
        self.file.flush()
        self.sock.shutdown(socket.SHUT_WR)

    def chunks(self, size: int = 65536) -> Iterator[bytes]:
        """What the node sends from here on, as it arrives (up to ``size`` bytes at a time),
        until it closes the connection."""
        while chunk := self.file.read1(size):
            yield chunk

    def copy_rest(self, out: BinaryIO) -> None:
        """Copy everything the node sends from here on to ``out``, flushing each chunk as it
        arrives, until the node closes the connection.  Waits as long as that takes (no
        timeout any more): a stream may pause for as long as its unit runs."""
        self.sock.settimeout(None)
        for chunk in self.chunks():
            out.write(chunk)
            out.flush()

    def close(self) -> None:
        """Close the connection."""
        try:
            self.file.close()
        finally:
            self.sock.close()

    def __enter__(self) -> "ControlClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
