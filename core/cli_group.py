"""The ``mesh`` click group: subcommands come from plugins, each imported when it runs.

The group lists every subcommand from the plugin index (:mod:`mesh.plugin_index`), with the
help text the index recorded, and imports a subcommand's plugin only when that subcommand is
invoked: ``mesh status`` imports the kernel's CLI plugin and not the QUIC stack, a work type or
a backend.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from mesh import __version__
from mesh.defaults import LOG_FORMATS, LOG_LEVELS
from mesh.plugins import PluginError, PluginHost, lazy_plugin_host

#: Subcommands that report invalid plugins themselves: ``node`` refuses to start, ``plugins``
#: lists them.  The others warn and go on without them.
REPORTS_INVALID_PLUGINS = frozenset({"node", "plugins"})


class PluginGroup(click.Group):
    """A group whose subcommands are added by plugins as they are needed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.host: PluginHost | None = None
        self._listing = False

    def attach(self, host: PluginHost) -> None:
        """Take subcommands from ``host``'s plugins, loaded now or later."""
        self.host = host
        host.register_cli(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        indexed = self.host.index.cli_commands if self.host and self.host.index else {}
        return sorted(set(self.commands) | set(indexed))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and self.host is not None:
            info = self.host.index.cli_commands.get(cmd_name) if self.host.index else None
            if info is not None and self._listing:
                # --help lists it with the help text the index recorded: no import
                return click.Command(cmd_name, help=info.help, short_help=info.short_help,
                                     hidden=info.hidden)
            self.host.load_cli_command(cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mesh")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="auto",
              envvar="MESH_LOG_FORMAT", show_default=True,
              help="Log rendering: console on a terminal and JSON lines otherwise (auto).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS),
              default=None, envvar="MESH_LOG_LEVEL",
              help="Override the config's log-level.")
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str | None) -> None:
    """mesh: a Receptor-compatible overlay network."""
    ctx.ensure_object(dict)
    ctx.obj.update(log_format=log_format, log_level=log_level)
    host = ctx.obj.get("plugins")
    if host is not None and ctx.invoked_subcommand not in REPORTS_INVALID_PLUGINS:
        for name in sorted(host.invalid):
            click.echo(f"mesh: warning: {host.invalid[name].problem_line()} (skipped)", err=True)


def run(args: list[str], *, early: Any = None) -> Any:
    """Run the command line ``args``; ``early`` is the node's early control responder."""
    try:
        host = lazy_plugin_host()
    except PluginError as exc:
        if early is not None:
            early.close()
        click.echo(f"mesh: {exc}", err=True)
        sys.exit(1)
    assert isinstance(cli, PluginGroup)
    cli.attach(host)
    return cli.main(args=args, obj={"plugins": host, "early": early}, prog_name="mesh")
