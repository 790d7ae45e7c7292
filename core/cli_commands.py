"""The built-in ``mesh`` subcommands: node, status, ping, traceroute, control, plugins.

A plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``); its commands are added
through ``mesh_register_cli_commands``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from mesh import hookimpl
from mesh.control.client import ControlClient, ControlClientError
from mesh.control.status_format import format_status
from mesh.defaults import default_socket

socket_option = click.option(
    "--socket", "socket_path", envvar="MESH_SOCKET", default=None, metavar="ADDRESS",
    help="Control socket: a path, unix:PATH or tcp://host:port "
         "(default: $MESH_SOCKET or the default node socket).")


def fail(message: str, code: int = 1) -> None:
    """Print ``mesh: message`` on stderr and exit with ``code``."""
    click.echo(f"mesh: {message}", err=True)
    sys.exit(code)


def connect(socket_path: str | None) -> ControlClient:
    """A control session with the node at ``socket_path`` (None: the default socket); exits
    with the reason when it cannot be opened."""
    try:
        return ControlClient(socket_path or default_socket())
    except ControlClientError as exc:
        fail(str(exc))
        raise  # unreachable


def print_json(obj: Any) -> None:
    """Print ``obj`` as JSON indented by 4, keys sorted."""
    click.echo(json.dumps(obj, indent=4, sort_keys=True))


@click.command("node")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Receptor-style YAML config (list or version-2 form).")
@click.pass_context
def node_command(ctx: click.Context, config_path: str | None) -> None:
    """Run a mesh node."""
    from mesh.cli import plugin_host
    from mesh.node_process import run_node

    root = ctx.find_root().obj
    code = run_node(config_path, early=root.get("early"), host=plugin_host(ctx),
                    log_format=root.get("log_format", "auto"), log_level=root.get("log_level"))
    if code:
        sys.exit(code)


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


@click.command("control")
@socket_option
@click.argument("words", nargs=-1, required=True, metavar="LINE...")
def control_command(socket_path: str | None, words: tuple[str, ...]) -> None:
    """Send one control command line to a node and print its reply.

    The words are joined by spaces and sent as one line, as it is: the text form (mesh control
    work list) or the JSON form (mesh control '{"command":"work","subcommand":"list"}') of a
    builtin command or of a plugin's. A JSON reply is printed indented, an ERROR reply on
    stderr with exit status 1, and what a streaming command (work results) sends after its
    first line as it arrives. Nothing is sent after the line: a command that reads a payload
    gets none. Put -- before a line with a word that begins with -.
    """
    line = " ".join(words)
    if not line.strip():
        raise click.UsageError("give a control command, e.g. 'status'")
    if "\n" in line or "\r" in line:
        raise click.UsageError("a control command is one line: remove the line breaks")
    with connect(socket_path) as client:
        try:
            client.send_line(line)
            client.shutdown_write()  # the line is all this command sends
            print_reply(client)
        except ControlClientError as exc:
            fail(str(exc))
        except OSError as exc:  # a timeout, or the node went away mid-reply
            fail(f"no reply from {socket_path or default_socket()}: {exc}")


def print_reply(client: ControlClient) -> None:
    """Print what the node sends back to the command ``client`` sent: its first line as
    indented JSON (as it is if it is not JSON: a streaming command's header line), then
    anything after it as received, until the node closes the connection."""
    try:
        print_json(client.reply())
    except json.JSONDecodeError as exc:
        click.echo(exc.doc)
    client.copy_rest(sys.stdout.buffer)


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins, their hooks and what they registered."""
    from mesh.plugins import PluginError, build_index, make_plugin_manager
    from mesh.plugin_index import write_index

    try:
        host = make_plugin_manager()  # every plugin, imported now: what is really there
    except PluginError as exc:
        fail(str(exc))
    index = build_index(host)  # also records each plugin's CLI commands
    if host.all_loaded():
        write_index(index)
    infos = [info.as_dict() for info in host.plugin_list()]
    if as_json:
        print_json(infos)
        return
    for info in infos:
        click.echo(f"{info['name']}  ({info['distribution']} {info['version']})")
        click.echo(f"  hooks: {', '.join(info['hooks']) or '-'}")
        for kind, names in info["registered"].items():
            if kind == "work type":  # what a config's `worktype: foo` is found under
                click.echo(f"  work types: named by the worktype key of each "
                           f"{' or '.join(names)} entry")
            else:
                click.echo(f"  {kind}: {', '.join(names)}")
        if "problem" in info:
            click.echo(f"  problem: {info['problem']}")


@hookimpl
def mesh_register_cli_commands(cli: click.Group) -> None:
    for command in (node_command, status_command, ping_command, traceroute_command,
                    control_command, plugins_command):
        cli.add_command(command)
