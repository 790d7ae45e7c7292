"""The built-in ``mesh`` subcommands: node, status, ping, traceroute, plugins.

A plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``); its commands are added
through ``mesh_register_cli_commands``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from mesh import hookimpl
from mesh.config.errors import ConfigError
from mesh.control.client import ControlClient, ControlClientError
from mesh.control.status_format import format_status
from mesh.node_sections import default_node_id, default_socket

socket_option = click.option(
    "--socket", "socket_path", envvar="MESH_SOCKET", default=None, metavar="ADDRESS",
    help="Control socket: a path, unix:PATH or tcp://host:port "
         "(default: $MESH_SOCKET or the default node socket).")


def fail(message: str, code: int = 1) -> None:
    click.echo(f"mesh: {message}", err=True)
    sys.exit(code)


def connect(socket_path: str | None) -> ControlClient:
    try:
        return ControlClient(socket_path or default_socket())
    except ControlClientError as exc:
        fail(str(exc))
        raise  # unreachable


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=4, sort_keys=True))


def embedded_config() -> str:
    """The config used by ``mesh node`` without ``-c``."""
    return (f"- node:\n    id: {json.dumps(default_node_id())}\n"
            f"- control-service:\n    filename: {json.dumps(default_socket())}\n")


@click.command("node")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Receptor-style YAML config (list or version-2 form).")
@click.pass_context
def node_command(ctx: click.Context, config_path: Path | None) -> None:
    """Run a mesh node."""
    from mesh.cli import plugin_host
    from mesh.config.loader import load_config, parse_config
    from mesh.log import bind_node, configure_logging
    from mesh.node import Node, NodeStartError

    host = plugin_host(ctx)
    specs = host.section_specs()
    try:
        if config_path is None:
            config = parse_config(embedded_config(), specs, source="<embedded default config>")
        else:
            config = load_config(config_path, specs)
    except ConfigError as exc:
        fail(str(exc), 2)
    level_cfg = config.one("log-level")
    level = ctx.find_root().obj.get("log_level") or (level_cfg.level if level_cfg else "info")
    configure_logging(level, ctx.find_root().obj.get("log_format", "auto"))
    node_cfg = config.one("node")
    # before Node(): events of the plugins' factories carry node_id too
    bind_node(node_cfg.id if node_cfg is not None else default_node_id())
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps stacks
    try:
        node = Node(config, host)
        asyncio.run(node.run())
    except ConfigError as exc:  # found while wiring the node (e.g. duplicate work types)
        fail(str(exc), 2)
    except NodeStartError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass
    if node.stop_reason == "duplicate node ID":
        sys.exit(3)


@click.command("status")
@socket_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option("--graph", "as_graph", is_flag=True,
              help="Print the known topology as a graph (see --format).")
@click.option("--format", "graph_format", type=click.Choice(["dot", "mermaid"]), default=None,
              help="Graph language for --graph: Graphviz DOT (default) or Mermaid.")
def status_command(socket_path: str | None, as_json: bool, as_graph: bool,
                   graph_format: str | None) -> None:
    """Show a node's connections, routes, services and work types."""
    if as_json and as_graph:
        raise click.UsageError("give either --json or --graph, not both")
    if graph_format is not None and not as_graph:
        raise click.UsageError("--format only applies to --graph")
    with connect(socket_path) as client:
        try:
            status = client.command("status")
        except ControlClientError as exc:
            fail(str(exc))
    if as_json:
        print_json(status)
    elif as_graph:
        from mesh.control.graph import to_dot, to_mermaid

        render = to_mermaid if graph_format == "mermaid" else to_dot
        click.echo(render(status), nl=False)
    else:
        click.echo(format_status(status))


@click.command("ping")
@socket_option
@click.argument("node")
@click.option("--count", default=4, show_default=True, help="Number of pings.")
@click.option("--delay", default=1.0, show_default=True, help="Seconds between pings.")
def ping_command(socket_path: str | None, node: str, count: int, delay: float) -> None:
    """Ping a node over the mesh."""
    failed = False
    with connect(socket_path) as client:
        for i in range(count):
            try:
                reply = client.command(f"ping {node}")
            except ControlClientError as exc:
                fail(str(exc), 2)
            if reply.get("Success"):
                click.echo(f"Reply from {reply['From']} in {reply['TimeStr']}")
            else:
                failed = True
                where = f" from {reply['From']}" if reply.get("From") else ""
                click.echo(f"Error{where}: {reply.get('Error')}")
            if i + 1 < count:
                time.sleep(delay)
    if failed:
        sys.exit(2)


@click.command("traceroute")
@socket_option
@click.argument("node")
def traceroute_command(socket_path: str | None, node: str) -> None:
    """Show the hops to a node."""
    with connect(socket_path) as client:
        try:
            reply = client.command(f"traceroute {node}")
        except ControlClientError as exc:
            fail(str(exc), 2)
    failed = False
    for key in sorted(reply, key=int):
        hop = reply[key]
        if hop.get("Error"):
            failed = True
            where = f" from {hop['From']}" if hop.get("From") else ""
            click.echo(f"{key}: Error {hop['Error']}{where} in {hop.get('TimeStr', '')}")
        else:
            click.echo(f"{key}: {hop['From']} in {hop['TimeStr']}")
    if failed:
        sys.exit(2)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins, their hooks and what they registered."""
    from mesh.cli import plugin_host

    infos = [info.as_dict() for info in plugin_host(ctx).plugin_list()]
    if as_json:
        print_json(infos)
        return
    for info in infos:
        click.echo(f"{info['name']}  ({info['distribution']} {info['version']})")
        click.echo(f"  hooks: {', '.join(info['hooks']) or '-'}")
        for kind, names in info["registered"].items():
            click.echo(f"  {kind}: {', '.join(names)}")


@hookimpl
def mesh_register_cli_commands(cli: click.Group) -> None:
    for command in (node_command, status_command, ping_command, traceroute_command,
                    plugins_command):
        cli.add_command(command)
