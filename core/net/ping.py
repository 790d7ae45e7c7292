"""Ping and traceroute over the mesh datagram layer (reference §3.1, §3.2)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mesh.net.endpoint import RouteError
from mesh.net.messages import MAX_FORWARDING_HOPS, Unreachable
from mesh.net.netceptor import Netceptor

PING_TIMEOUT = 10.0


@dataclass
class PingResult:
    """One ping's outcome; ``error`` is empty on success."""

    from_node: str
    elapsed_ns: int
    error: str = ""


async def ping(netceptor: Netceptor, target: str, *, hops: int = MAX_FORWARDING_HOPS,
               timeout: float = PING_TIMEOUT) -> PingResult:
    """Send an empty datagram to ``target:ping`` and wait for its echo or an unreachable."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[tuple[str, str]] = loop.create_future()
    endpoint = netceptor.listen(hops=hops)

    def on_data(data: bytes, node: str, service: str) -> None:
        if not answer.done():
            answer.set_result((node, ""))

    def on_unreachable(notice: Unreachable, reporter: str) -> None:
        if not answer.done():
            answer.set_result((reporter, notice.problem))

    endpoint.datagram_handler = on_data
    endpoint.unreachable_handler = on_unreachable
    start = time.perf_counter_ns()
    try:
        try:
            endpoint.send_checked(b"", target, "ping")
        except RouteError as exc:
            return PingResult("", time.perf_counter_ns() - start, str(exc))
        try:
            async with asyncio.timeout(timeout):
                node, problem = await answer
        except asyncio.TimeoutError:
            return PingResult("", time.perf_counter_ns() - start, "timeout")
        return PingResult(node, time.perf_counter_ns() - start, problem)
    finally:
        endpoint.close()


async def traceroute(netceptor: Netceptor, target: str, *, timeout: float = PING_TIMEOUT,
                     ) -> list[PingResult]:
    """Ping with hop limits 0..30; "message expired" marks an intermediate hop."""
    results = []
    for hops in range(MAX_FORWARDING_HOPS + 1):
        result = await ping(netceptor, target, hops=hops, timeout=timeout)
        if result.error == "message expired":
            results.append(PingResult(result.from_node, result.elapsed_ns))
            continue
        results.append(result)
        break
    return results
