"""Where a node keeps its files, and what it is called, when the config does not say.

Built-in modules only: the CLI's client commands read the default socket from here.
"""

from __future__ import annotations

import os

#: ``--log-format`` / ``MESH_LOG_FORMAT`` values.
LOG_FORMATS = ("auto", "console", "json")
#: ``--log-level`` / ``MESH_LOG_LEVEL`` and ``log-level`` section values.
LOG_LEVELS = ("error", "warning", "info", "debug")


def state_dir() -> str:
    """The user's state directory for mesh: ``$XDG_STATE_HOME/mesh`` or ``~/.local/state/mesh``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return os.path.join(base, "mesh")


def default_socket() -> str:
    """The control socket used when none is configured or given (``MESH_SOCKET`` overrides)."""
    return os.environ.get("MESH_SOCKET") or os.path.join(state_dir(), "control.sock")


def default_node_id() -> str:
    """The host name up to its first dot."""
    import socket

    return socket.gethostname().split(".")[0] or "mesh-node"


def cache_dir() -> str:
    """Where the plugin index and the config cache live: ``$MESH_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/mesh`` or ``~/.cache/mesh``."""
    explicit = os.environ.get("MESH_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mesh")
