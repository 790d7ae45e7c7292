"""A fake mesh node on a raw TCP connection, for tests that speak the link protocol to a real
node: Receptor's framing (2-byte little-endian length + one message, §1.1), the handshake
(§2.6), routing updates, data messages and an in-band ping barrier.
"""

from __future__ import annotations

import itertools
import queue
import random
import socket
import struct
import threading
import time
from typing import Callable

from mesh.net import messages as m
from mesh.net.framing import FrameDecoder
from mesh.net.highwayhash import node_hash

INTRUDER = "intruder"
PROBE_SERVICE = "probe"

# Every fake peer gets a larger epoch than the last one: the target remembers epochs of node IDs
# it has seen and silently drops updates with an older epoch (§10).
_epochs = itertools.count(int(time.time()) << 24)


def frame(payload: bytes) -> bytes:
    """One frame, without the sender-side checks of mesh.net.framing (we want to send junk)."""
    return struct.pack("<H", len(payload)) + payload


class Inbox:
    """What a fake peer's reader thread received, taken by predicate.

    The reader puts each message into :attr:`messages` and sets :attr:`eof` when the
    connection ends; a test waits with :meth:`next_message` (or :meth:`wait_closed`).
    """

    def __init__(self) -> None:
        self.messages: queue.Queue[bytes] = queue.Queue()
        #: Received messages that no ``next_message`` call has wanted yet.
        self.backlog: list[bytes] = []
        self.eof = threading.Event()

    def next_message(self, predicate: Callable[[bytes], bool], timeout: float = 15.0,
                     what: str = "message") -> bytes:
        """The next received message matching ``predicate`` (others stay in the backlog).

        :raises TimeoutError: none within ``timeout`` s.
        :raises ConnectionError: the connection ended first.
        """
        for index, message in enumerate(self.backlog):
            if predicate(message):
                return self.backlog.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout}s")
            try:
                message = self.messages.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if self.eof.is_set() and self.messages.empty():
                    raise ConnectionError(f"connection closed while waiting for {what}") \
                        from None
                continue
            if predicate(message):
                return message
            self.backlog.append(message)
            del self.backlog[:-1000]

    def wait_closed(self, timeout: float = 15.0) -> None:
        if not self.eof.wait(timeout):
            raise TimeoutError(f"connection not closed within {timeout}s")


class RawPeer(Inbox):
    """A fake node on a raw TCP connection to a tcp-listener."""

    def __init__(self, port: int, node_id: str = INTRUDER) -> None:
        super().__init__()
        self.node_id = node_id
        self.epoch = next(_epochs)
        self.sequence = 0
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self.peer_id: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                for message in decoder.feed(chunk):
                    self.messages.put(message)
        except OSError:
            pass
        finally:
            self.eof.set()

    # -- sending -----------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: bytes) -> None:
        self.send_raw(frame(message))

    def routing_update(self, connections: dict[str, float], *, node_id: str | None = None,
                       forwarding_node: str | None = None) -> bytes:
        self.sequence += 1
        return m.encode_routing_update(m.RoutingUpdate(
            node_id=self.node_id if node_id is None else node_id,
            update_id=f"{random.getrandbits(40):010x}"[:8], update_epoch=self.epoch,
            update_sequence=self.sequence, connections=connections,
            forwarding_node=self.node_id if forwarding_node is None else forwarding_node))

    def data(self, to_node: int | str, to_service: str, payload: bytes = b"",
             *, from_node: int | str | None = None, from_service: str = PROBE_SERVICE,
             hops: int = m.MAX_FORWARDING_HOPS) -> bytes:
        def as_hash(node: int | str) -> int:
            return node if isinstance(node, int) else node_hash(node)

        return m.encode_data(hops, as_hash(self.node_id if from_node is None else from_node),
                             as_hash(to_node), from_service, to_service, payload)

    # -- handshake and barrier ---------------------------------------------------------

    def handshake(self, timeout: float = 15.0) -> str:
        """Complete the link handshake (§2.6); returns the target's node ID."""
        self.send(self.routing_update({}))

        def lists_us(message: bytes) -> bool:
            if message[:1] != b"\x01":
                return False
            update = m.decode_routing_update(message[1:])
            return (update.node_id == update.forwarding_node
                    and self.node_id in update.connections)

        update = m.decode_routing_update(
            self.next_message(lists_us, timeout, "routing update listing us")[1:])
        self.peer_id = update.node_id
        # Our own update, listing the target with the cost it gave us: we are established too.
        self.send(self.routing_update({self.peer_id: update.connections[self.node_id]}))
        return self.peer_id

    def ping_barrier(self, timeout: float = 15.0) -> None:
        """Ping the target in-band and wait for the reply.

        Returns once everything sent before has been processed by the target.
        """
        assert self.peer_id is not None
        service = f"p{random.getrandbits(24):06x}"[:8]
        self.send(self.data(self.peer_id, "ping", from_service=service))

        def is_reply(message: bytes) -> bool:
            if message[:1] != b"\x00" or len(message) < m.HEADER_LEN:
                return False
            header = m.decode_data_header(message)
            return (header.from_node == node_hash(self.peer_id or "")
                    and header.to_service == service and header.from_service == "ping")

        self.next_message(is_reply, timeout, "ping reply")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(timeout=5)
