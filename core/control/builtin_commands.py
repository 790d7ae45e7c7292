"""The kernel's own control commands: status, ping, traceroute, connect, reload.

This module is a plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``).
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import structlog

from mesh import hookimpl
from mesh.config.duration import format_go_duration_ns as go_duration
from mesh.control.protocol import CommandError, Request
from mesh.control.server import STREAMED, CommandContext
from mesh.control.status import answer_status, status_reply
from mesh.net.messages import ad_to_status_dict
from mesh.net.pipe import pipe
from mesh.net.ping import PingResult, ping, traceroute

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterControlCommand

log = structlog.get_logger(__name__)


def node_status(node: Any) -> dict[str, Any]:
    """The full ``status`` reply of a running node (the 8 keys Receptor returns)."""
    net = node.netceptor
    return status_reply(
        node.node_id, links={peer: link.cost for peer, link in net.links.items()},
        routing_table=net.router.table,
        advertisements=[ad_to_status_dict(ad) for ad in net.advertisements()],
        known=net.router.confirmed_connections())


async def status_command(ctx: CommandContext, request: Request) -> Any:
    return answer_status(node_status(ctx.node), request)


def _target(request: Request, what: str) -> str:
    target = request.params.get("target") if request.is_json else request.args.strip()
    if not isinstance(target, str) or not target or " " in target:
        raise CommandError(f"{what} needs exactly one target node")
    return target


def _ping_reply(result: PingResult) -> dict[str, Any]:
    reply: dict[str, Any] = {"From": result.from_node, "Time": result.elapsed_ns,
                             "TimeStr": go_duration(result.elapsed_ns)}
    if result.error:
        reply["Error"] = result.error
    return reply


async def ping_command(ctx: CommandContext, request: Request) -> Any:
    result = await ping(ctx.node.netceptor, _target(request, "ping"))
    if result.error:
        reply: dict[str, Any] = {"Success": False, "Error": result.error}
        if result.from_node:
            reply.update(From=result.from_node, Time=result.elapsed_ns,
                         TimeStr=go_duration(result.elapsed_ns))
        return reply
    return {"Success": True, **_ping_reply(result)}


async def traceroute_command(ctx: CommandContext, request: Request) -> Any:
    results = await traceroute(ctx.node.netceptor, _target(request, "traceroute"))
    return {str(i): _ping_reply(result) for i, result in enumerate(results)}


async def connect_command(ctx: CommandContext, request: Request) -> Any:
    if request.is_json:
        node, service, tls = (request.params.get("node"), request.params.get("service"),
                              request.params.get("tls", ""))
    else:
        words = request.words()
        if len(words) not in (2, 3):
            raise CommandError("connect needs a node, a service and optionally a TLS client")
        node, service, tls = words[0], words[1], (words[2] if len(words) == 3 else "")
    if not isinstance(node, str) or not isinstance(service, str) or not node or not service:
        raise CommandError("connect needs a node and a service")
    try:
        stream = await ctx.node.dial_stream(node, service, tls=tls or None)
    except Exception as exc:
        raise CommandError(f"could not connect to {node}:{service}: {exc}") from None
    conn = ctx.conn
    conn.write(b"Connecting\n")
    await conn.drain()
    upstream = asyncio.create_task(pipe(conn.read, stream.write, stream.drain,
                                         stream.write_eof))
    try:
        await pipe(stream.read, conn.write, conn.drain, lambda: None)
    except (ConnectionError, OSError):
        pass
    finally:
        upstream.cancel()
        try:
            await upstream
        except (asyncio.CancelledError, Exception):
            pass
        await stream.close()
    return STREAMED


async def stats_command(ctx: CommandContext, request: Request) -> Any:
    """mesh extension: the mesh core's counters (routing updates, forwarded and dropped data)."""
    net = ctx.node.netceptor.stats()
    return {"NodeID": ctx.node.node_id, "Links": len(net.links),
            "KnownNodes": net.known_nodes, "RoutingUpdatesSent": net.routing_updates_sent,
            "RoutingUpdatesReceived": net.routing_updates_received,
            "DataForwarded": net.data_forwarded, "DataDropped": net.data_dropped,
            "KeepalivesSent": net.keepalives_sent,
            "Tasks": len(asyncio.all_tasks()), "OpenFiles": _open_files()}


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


async def reload_command(ctx: CommandContext, request: Request) -> Any:
    return await ctx.node.reload()


@hookimpl
def mesh_register_control_commands(register: RegisterControlCommand) -> None:
    register("status", status_command)
    register("ping", ping_command)
    register("traceroute", traceroute_command)
    register("connect", connect_command)
    register("reload", reload_command)
    register("stats", stats_command)
