"""``metrics``: a Prometheus text endpoint (``/metrics``) and a health check (``/health``).

A small HTTP/1.1 server on asyncio streams (no framework): it answers GET only, closes
each connection after one response, and bounds request size and time.

``/health`` answers ``200 ok`` while no alarm is raised, and ``200 degraded`` followed by one
``alarm: reason`` line per raised alarm (e.g. ``duplicate_node_id``) otherwise: the node still
serves, and a liveness probe that restarted it on an alarm would let anyone who can raise one
(a forged routing update) restart it.  Monitors alert on the body or on ``mesh_alarm``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import structlog

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.net.stats import LinkStats

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterService

log = structlog.get_logger(__name__)

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0


@dataclass
class MetricsConfig:
    port: int = field(metadata={"doc": "TCP port for /metrics and /health."})
    bindaddr: str = field(default="127.0.0.1", metadata={"doc": "Address to bind."})

    def validate(self) -> None:
        if not 0 <= self.port < 65536:
            raise SectionValueError("port", f"must be 0-65535, got {self.port}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(node: Any) -> str:
    """The node's metrics in Prometheus text exposition format 0.0.4, from the read-only views
    ``node.netceptor.stats()`` and ``node.work.stats()``."""
    net = node.netceptor.stats()
    work = node.work.stats()
    node_label = f'node="{_escape(node.node_id)}"'
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str,
               samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            joined = ",".join(filter(None, [node_label, labels]))
            lines.append(f"{name}{{{joined}}} {value:g}")

    metric("mesh_links_up", "gauge", "Established links to neighbours.",
           [("", len(net.links))])
    metric("mesh_routing_table_size", "gauge", "Destinations in the routing table.",
           [("", net.routes)])
    metric("mesh_known_nodes", "gauge", "Nodes in the known-connections graph.",
           [("", net.known_nodes)])
    per_link = sorted(net.links, key=lambda link: link.peer)
    traffic: list[tuple[str, str, Callable[[LinkStats], int]]] = [
        ("messages_in", "Messages received", lambda link: link.messages_in),
        ("bytes_in", "Bytes received", lambda link: link.bytes_in),
        ("messages_out", "Messages sent", lambda link: link.messages_out),
        ("bytes_out", "Bytes sent", lambda link: link.bytes_out)]
    for name, what, read in traffic:
        metric(f"mesh_link_{name}_total", "counter", f"{what} per link.",
               [(f'peer="{_escape(link.peer)}"', read(link)) for link in per_link])
    metric("mesh_routing_updates_received_total", "counter", "Routing updates received.",
           [("", net.routing_updates_received)])
    metric("mesh_routing_updates_sent_total", "counter", "Routing updates flooded.",
           [("", net.routing_updates_sent)])
    metric("mesh_data_forwarded_total", "counter", "Data messages forwarded for others.",
           [("", net.data_forwarded)])
    metric("mesh_data_dropped_total", "counter", "Data messages dropped (no route, congestion).",
           [("", net.data_dropped)])
    metric("mesh_keepalives_sent_total", "counter",
           "Keepalives sent on mesh links that carried nothing else for an interval.",
           [("", net.keepalives_sent)])
    metric("mesh_units", "gauge", "Work units on disk by state.",
           [(f'state="{state.label}"', count) for state, count in work.units_by_state.items()])
    metric("mesh_stream_bytes_total", "counter", "Bytes of work results streamed to clients.",
           [("", work.results_bytes)])
    metric("mesh_alarm", "gauge", "1 while an alarm is raised (see /health for the reason).",
           [(f'alarm="{_escape(name)}"', 0 if reason is None else 1)
            for name, reason in sorted(node.alarms().items())])
    metric("mesh_duplicate_id_suspicions_total", "counter",
           "Routing updates that said another node uses this node's ID.",
           [("", net.duplicate_id_suspicions)])
    metric("mesh_control_plane_dropped_total", "counter",
           "Routing updates and adverts dropped by a control-plane limit, by kind.",
           [(f'what="{_escape(what)}"', count)
            for what, count in sorted(net.control_plane_drops.items())])
    metric("mesh_route_auth_dropped_total", "counter",
           "Routing updates and adverts dropped by route-auth (unsigned or mis-signed), by kind "
           "and reason; no samples while route-auth is off.",
           [(f'kind="{_escape(kind)}",reason="{_escape(reason)}"', count)
            for kind, reasons in net.route_auth_drops.items()
            for reason, count in reasons.items()])
    return "\n".join(lines) + "\n"


def render_health(node: Any) -> str:
    """``ok``, or ``degraded`` and a line per raised alarm (always served with status 200)."""
    raised = [f"{name}: {reason}" for name, reason in sorted(node.alarms().items())
              if reason is not None]
    return "\n".join(["degraded", *raised]) + "\n" if raised else "ok\n"


class MetricsServer:
    """Serves ``/metrics`` and ``/health`` for one node."""

    def __init__(self, config: MetricsConfig, node: Any) -> None:
        self.config, self.node = config, node
        self.port: int | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method != "GET":
                status, body, ctype = "405 Method Not Allowed", "only GET\n", "text/plain"
            elif path.split("?")[0] == "/metrics":
                status, body = "200 OK", render_metrics(self.node)
                ctype = "text/plain; version=0.0.4; charset=utf-8"
            elif path.split("?")[0] == "/health":
                status, body, ctype = "200 OK", render_health(self.node), "text/plain"
            else:
                status, body, ctype = "404 Not Found", "not found\n", "text/plain"
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, ConnectionError):
            status, body, ctype = "400 Bad Request", "bad request\n", "text/plain"
        data = body.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: "
                     f"{len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async def run(self) -> None:
        server = await asyncio.start_server(self.handle, self.config.bindaddr, self.config.port,
                                            limit=MAX_REQUEST, reuse_address=True)
        self.port = server.sockets[0].getsockname()[1]
        log.info("metrics_listening", node_id=self.node.node_id,
                 address=f"{self.config.bindaddr}:{self.port}")
        try:
            await asyncio.Future()
        finally:
            server.close()


@hookimpl
def mesh_register_services(register: RegisterService) -> None:
    register(SectionSpec("metrics", MetricsConfig, singleton=True, bare="port",
                         doc="Prometheus metrics and /health over HTTP."), MetricsServer)
