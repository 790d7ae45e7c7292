"""The ``mesh`` command line: a click group whose subcommands arrive through the CLI hook."""

from __future__ import annotations

import sys
from typing import Any

import click

from mesh import __version__
from mesh.plugins import PluginError, PluginHost, make_plugin_manager


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mesh")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto",
              envvar="MESH_LOG_FORMAT", show_default=True,
              help="Log rendering: console on a terminal and JSON lines otherwise (auto).")
@click.option("--log-level", type=click.Choice(["error", "warning", "info", "debug"]),
              default=None, envvar="MESH_LOG_LEVEL",
              help="Override the config's log-level.")
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str | None) -> None:
    """mesh: a Receptor-compatible overlay network."""
    ctx.ensure_object(dict)
    ctx.obj.update(log_format=log_format, log_level=log_level)


def plugin_host(ctx: click.Context) -> PluginHost:
    """The plugin host the CLI was started with."""
    return ctx.find_root().obj["plugins"]


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    import os

    from mesh.log import configure_logging

    # Plugin loading may log; keep those events on stderr, never mixed into stdout output.
    tracing = os.environ.get("MESH_TRACE_PLUGINS", "") not in ("", "0")
    configure_logging(os.environ.get("MESH_LOG_LEVEL") or ("info" if tracing else "warning"),
                      os.environ.get("MESH_LOG_FORMAT", "auto"))  # type: ignore[arg-type]
    try:
        host = make_plugin_manager()
    except PluginError as exc:
        click.echo(f"mesh: {exc}", err=True)
        sys.exit(1)
    host.register_cli(cli)
    return cli.main(args=argv, obj={"plugins": host}, prog_name="mesh")
