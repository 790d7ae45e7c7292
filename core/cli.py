"""The ``mesh`` command line: a click group whose subcommands arrive through the CLI hook.

Start-up is staged so that each command pays only for what it uses (docs/architecture.md):

1. ``mesh --version`` answers here, before click is imported, and so does ``mesh --help``
   while the plugin index holds the help text click rendered for it.
2. ``mesh node -c FILE`` reads its config and binds its control sockets here, before click,
   pluggy and asyncio are imported; a thread answers ``status`` on them until the node is up
   (:mod:`mesh.control.early`).
3. The click group (:mod:`mesh.cli_group`) lists subcommands from the plugin index and
   imports a subcommand's plugin only when that subcommand runs.
"""

from __future__ import annotations

import sys

from mesh import TYPE_CHECKING, __version__

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any

#: Options of the ``mesh`` group that take a value (``--log-level debug``).
_VALUE_OPTIONS = ("--log-format", "--log-level")


def _split_global_options(args: list[str]) -> tuple[list[str], list[str]]:
    """``args`` as (options of the ``mesh`` group, the subcommand and its arguments)."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in _VALUE_OPTIONS else 1
    return args[:i], args[i:]


def _log_options(options: list[str]) -> dict[str, str | None] | None:
    """``log_format`` and ``log_level`` from the group's options (``--opt value`` or
    ``--opt=value``) and their environment variables, as click would give them; None for
    anything else (an unknown option, a value not among the choices), which click then
    parses and reports."""
    import os

    from mesh.defaults import LOG_FORMATS, LOG_LEVELS

    given: dict[str, str] = {}
    i = 0
    while i < len(options):
        name, eq, value = options[i].partition("=")
        if name not in _VALUE_OPTIONS:
            return None
        if not eq:
            i += 1
            if i >= len(options):
                return None
            value = options[i]
        given[name] = value
        i += 1
    log_format = given.get("--log-format") or os.environ.get("MESH_LOG_FORMAT") or "auto"
    log_level = given.get("--log-level") or os.environ.get("MESH_LOG_LEVEL") or None
    if log_format not in LOG_FORMATS or (log_level is not None and log_level not in LOG_LEVELS):
        return None
    return {"log_format": log_format, "log_level": log_level}


def _node_config_argument(rest: list[str]) -> str | None:
    """The config file of ``node -c FILE`` (or ``--config FILE``, ``--config=FILE``,
    ``-cFILE``); None for any other command line, which click then parses alone."""
    if not rest or rest[0] != "node":
        return None
    args = rest[1:]
    if len(args) == 2 and args[0] in ("-c", "--config"):
        return args[1]
    if len(args) == 1 and args[0].startswith("--config="):
        return args[0].partition("=")[2]
    if len(args) == 1 and args[0].startswith("-c") and len(args[0]) > 2:
        return args[0][2:]
    return None


def _terminal_columns() -> int:
    """The width click would format help for (``COLUMNS``, the terminal, else 80)."""
    import os

    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 80


def _indexed_help() -> str | None:
    """``mesh --help`` as the plugin index recorded it, if it is current and fits."""
    if _terminal_columns() < 80:
        return None
    from mesh.plugin_index import read_index

    index = read_index()
    return index.help if index is not None and index.help else None


def plugin_host(ctx: Any) -> Any:
    """The :class:`~mesh.plugins.PluginHost` the CLI was started with."""
    return ctx.find_root().obj["plugins"]


def main(argv: list[str] | None = None) -> Any:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    options, rest = _split_global_options(args)
    if "--version" in options:  # what click's version option prints
        sys.stdout.write(f"mesh, version {__version__}\n")
        return None
    if not rest and options in (["--help"], ["-h"]) and (text := _indexed_help()):
        sys.stdout.write(text)  # rendered by click when the index was built
        return None
    if rest[:1] == ["node"]:
        return _run_node(args, options, _node_config_argument(rest))
    from mesh.cli_group import run

    return run(args)


def _run_node(args: list[str], options: list[str], config: str | None) -> Any:
    """``mesh node``: bind the control sockets early when the config is known, run the node
    without click when the command line is the usual one, and stop quietly on SIGTERM or
    SIGINT however far start-up got (the running node installs its own handlers; a signal
    before that would otherwise kill it mid-import)."""
    import signal

    from mesh.node_process import pause_garbage_collection

    pause_garbage_collection()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    early = None
    try:
        if config:
            from mesh.control.early import start_early_control

            early = start_early_control(config)
            log_options = _log_options(options)
            if log_options is not None:
                from mesh.node_process import run_node

                return run_node(config, early=early, **log_options) or None
        from mesh.cli_group import run  # click and the plugins, after the sockets are bound

        return run(args, early=early)
    except KeyboardInterrupt:
        return None
    finally:
        if early is not None:
            early.close()
