"""``Netceptor.stats()``: the read-only view of a node's mesh layer that metrics and the
``stats`` command read (links with their traffic, routes, counters, dropped control messages).

Three in-process mesh layers in a line, a - b - c, linked by the kernel's framed sessions over
loopback TCP (what the tcp backend uses), so the per-link traffic is the sessions' own count.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from mesh.net.backend import LinkOptions
from mesh.net.netceptor import Netceptor
from mesh.net.stats import LinkStats, NetStats
from mesh.net.stream_session import FramedSession
from mesh.testing import free_port, wait_until_async

COST = 2.0


class Links:
    """Loopback TCP links between in-process mesh layers, and their cleanup."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[str]] = []
        self.servers: list[asyncio.Server] = []

    async def link(self, dialer: Netceptor, listener: Netceptor) -> None:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[FramedSession] = loop.create_future()

        def accept() -> FramedSession:
            session = FramedSession(f"{listener.node_id} accepted")
            accepted.set_result(session)
            return session

        port = free_port()
        self.servers.append(await loop.create_server(accept, "127.0.0.1", port))
        _, dialed = await loop.create_connection(
            lambda: FramedSession(f"{dialer.node_id} dialed"), "127.0.0.1", port)
        options = LinkOptions(cost=COST)
        self.tasks += [asyncio.create_task(dialer.run_session(dialed, options)),
                       asyncio.create_task(listener.run_session(await accepted, options))]

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)


class CountingAuthenticator:
    """A route authenticator that accepts everything and reports drops it did not make."""

    def __init__(self) -> None:
        self.dropped = {"update": {"unsigned": 3}, "ad": {"bad signature": 1}}

    def sign_update(self, update: Any) -> None:
        pass

    def sign_advertisement(self, ad: Any) -> None:
        pass

    def accept_update(self, update: Any, peer: str) -> bool:
        return True

    def accept_advertisement(self, ad: Any, peer: str) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {"dropped_by": self.dropped}


def test_stats_is_a_read_only_view_of_links_routes_counters_and_drops() -> None:
    async def main() -> None:
        nodes = {name: Netceptor(name) for name in "abc"}
        for node in nodes.values():
            node.start()
        a, b, c = nodes.values()
        links = Links()
        try:
            await links.link(a, b)
            await links.link(b, c)
            await wait_until_async(lambda: "c" in a.router.table and "a" in c.router.table,
                                   timeout=10, what="a and c to route to each other")
            received: list[bytes] = []
            echo = c.listen("echo")
            echo.datagram_handler = lambda data, node, service: received.append(data)
            a.send_datagram(b"hello", "c", "echo", from_service="test")
            await wait_until_async(lambda: received, timeout=10, what="the datagram at c")

            view = b.stats()
            assert isinstance(view, NetStats)
            assert [link.peer for link in view.links] == list(b.links)  # in link-up order
            for link in view.links:
                session = b.links[link.peer].session
                assert link == LinkStats(link.peer, COST, session.messages_in,
                                         session.messages_out, session.bytes_in,
                                         session.bytes_out)
                assert link.messages_in > 0 and link.bytes_out > link.messages_out
            assert (view.routes, view.known_nodes) == (2, 3)
            assert view.data_forwarded == 1
            assert view.routing_updates_sent > 0 and view.routing_updates_received > 0
            for counter, value in b.counters.items():
                assert getattr(view, counter) == value
            assert view.control_plane_drops == {} and view.route_auth_drops == {}

            a.links["b"].send(b"\x02{")  # an advert that is not JSON
            await wait_until_async(
                lambda: b.stats().control_plane_drops == {"malformed: bad_advertisement": 1},
                timeout=10, what="b to count the malformed advert")
            assert view.control_plane_drops == {}  # a view taken before does not change
            with pytest.raises(dataclasses.FrozenInstanceError):
                view.routes = 0  # type: ignore[misc]

            auth = CountingAuthenticator()
            b.route_auth = auth
            drops = b.stats().route_auth_drops
            assert drops == auth.dropped
            drops["update"]["unsigned"] = 0
            assert auth.dropped["update"]["unsigned"] == 3  # a copy
        finally:
            for node in nodes.values():
                await node.stop()
            await links.close()

    asyncio.run(asyncio.wait_for(main(), 60))
