"""A node process from its config file to its exit code: plugins, logging, the event loop.

``mesh node`` (:mod:`mesh.cli_commands`) runs it after click parsed the command line, and
:func:`mesh.cli.main` runs it without click for the usual ``mesh node -c FILE``: a node
process never needs click, whose import costs a node ~60 ms and 1 MB.
"""

from __future__ import annotations

import gc
import json
import sys

from mesh import TYPE_CHECKING
from mesh.defaults import default_node_id, default_socket

if TYPE_CHECKING:  # pragma: no cover
    from mesh.control.early import EarlyControl
    from mesh.node import Node
    from mesh.plugins import PluginHost

#: Exit codes: a bad config, a node that could not start, a duplicate node ID.
EXIT_CONFIG, EXIT_START, EXIT_DUPLICATE = 2, 1, 3


def embedded_config() -> str:
    """The config used by ``mesh node`` without ``-c``."""
    return (f"- node:\n    id: {json.dumps(default_node_id())}\n"
            f"- control-service:\n    filename: {json.dumps(default_socket())}\n")


def _failed(message: str, code: int) -> int:
    sys.stderr.write(f"mesh: {message}\n")
    return code


def pause_garbage_collection() -> None:
    """No cyclic garbage collection while a node starts: imports and start-up allocate
    hundreds of thousands of objects, nearly all for good, and the collector's passes over
    them cost a tenth of the start-up time."""
    gc.disable()


def _collect_garbage_again() -> None:
    """The node has started: what start-up made lives as long as the node, so it goes to the
    collector's permanent generation (never traversed again), and collection resumes."""
    gc.freeze()
    gc.enable()


def run_node(config_path: str | None, *, early: EarlyControl | None = None,
             host: PluginHost | None = None, log_format: str = "auto",
             log_level: str | None = None) -> int:
    """Run a node until it stops; returns the process's exit code (errors are printed).

    :param early: the control sockets bound before (see :mod:`mesh.control.early`); they are
        closed, and their files removed, when the node does not start.
    :param host: the plugin host to load the node's plugins into (default: a new lazy one).
    :param log_level: overrides the config's ``log-level``.
    """
    try:
        return _run(config_path, early, host, log_format, log_level)
    finally:
        if early is not None:
            early.close()  # a no-op once the node took the sockets over


def _run(config_path: str | None, early: EarlyControl | None, host: PluginHost | None,
         log_format: str, log_level: str | None) -> int:
    from mesh.ssl_on_demand import import_asyncio

    import_asyncio()  # before any plugin: OpenSSL only for nodes that use TLS
    from mesh.config.errors import ConfigError
    from mesh.config.loader import build_config, read_config, read_config_text
    from mesh.plugins import PluginError, lazy_plugin_host, make_plugin_manager

    try:
        host = host or lazy_plugin_host()
        if config_path is None:
            raw = read_config_text(embedded_config(), source="<embedded default config>")
        elif early is not None and str(early.raw.path) == config_path:
            raw = early.raw  # read once, by the early start
        else:
            raw = read_config(config_path)
        if host.load_for_node(raw.section_names()):
            host = make_plugin_manager()  # a section no plugin owns: name the closest one
        config = build_config(raw, host.section_specs())
    except ConfigError as exc:
        return _failed(str(exc), EXIT_CONFIG)
    except PluginError as exc:
        return _failed(str(exc), EXIT_START)

    import asyncio
    import faulthandler
    import signal

    from mesh.log import bind_node, configure_logging
    from mesh.node import Node, NodeStartError

    level_cfg = config.one("log-level")
    configure_logging(log_level or (level_cfg.level if level_cfg else "info"),
                      log_format)  # type: ignore[arg-type]
    node_cfg = config.one("node")
    # before Node(): events of the plugins' factories carry node_id too
    bind_node(node_cfg.id if node_cfg is not None else default_node_id())
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` dumps stacks
    try:
        node = Node(config, host, early)
        asyncio.run(node.run(on_started=_collect_garbage_again,
                             on_stuck=lambda: _exit_now(_exit_status(node))))
    except ConfigError as exc:  # found while wiring the node (e.g. duplicate work types)
        return _failed(str(exc), EXIT_CONFIG)
    except NodeStartError as exc:
        return _failed(str(exc), EXIT_START)
    except KeyboardInterrupt:
        return 0
    return _exit_status(node)


def _exit_status(node: Node) -> int:
    return EXIT_DUPLICATE if node.stop_reason == "duplicate node ID" else 0


def _exit_now(status: int) -> None:
    """End the process at once (a task would not stop; see :meth:`mesh.node.Node.run`)."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
