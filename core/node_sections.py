"""Config sections owned by the kernel: node, log-level, local-only, control-service.

A plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import ByteSize, Duration, SectionSpec
from mesh.net.firewall import FirewallRuleError, parse_rule

#: Node IDs and work type names become directory and file names and appear in hashes:
#: keep them to safe characters.
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
LOG_LEVELS = ("error", "warning", "info", "debug")


def state_dir() -> Path:
    """The user's state directory for mesh: ``$XDG_STATE_HOME/mesh`` or ``~/.local/state/mesh``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".local", "state")
    return Path(base) / "mesh"


def default_socket() -> str:
    """The control socket used when none is configured or given (``MESH_SOCKET`` overrides)."""
    return os.environ.get("MESH_SOCKET") or str(state_dir() / "control.sock")


def default_node_id() -> str:
    return socket.gethostname().split(".")[0] or "mesh-node"


def check_node_id(node_id: str, key: str = "id") -> None:
    if node_id.lower() == "localhost" or node_id.lower().startswith("localhost."):
        raise SectionValueError(key, "'localhost' is reserved; choose another node ID")
    if not SAFE_NAME_RE.match(node_id):
        raise SectionValueError(key, f"node ID {node_id!r} may only contain letters, digits and "
                                     f"_ . @ - (at most 128, starting with a letter or digit)")


@dataclass
class NodeConfig:
    id: str = field(default_factory=default_node_id,
                    metadata={"doc": "Node ID (default: the host name)."})
    datadir: str = field(default_factory=lambda: str(state_dir() / "data"),
                         metadata={"doc": "Where work units live: {datadir}/{id}/{unit}/."})
    firewallrules: list[dict[str, str]] = field(
        default_factory=list, metadata={"doc": "Rules for data messages (action, fromnode, "
                                               "tonode, fromservice, toservice; /regex/)."})
    maxidleconnectiontimeout: Duration | None = field(
        default=None, metadata={"doc": "Close a link after this long without traffic "
                                        "(Go duration, at least 21s; default 21s)."})

    streamdatagram: int = field(
        default=60000, metadata={"doc": "mesh extension: largest QUIC datagram offered to other "
                                        "mesh nodes (1200-65000; 1200 behaves like Receptor). "
                                        "Go Receptor peers always get 1200."})

    def validate(self) -> None:
        check_node_id(self.id)
        if not 1200 <= self.streamdatagram <= 65000:
            raise SectionValueError("streamdatagram", "must be between 1200 and 65000")
        for index, rule in enumerate(self.firewallrules, 1):
            try:
                parse_rule(rule, index)
            except FirewallRuleError as exc:
                raise SectionValueError("firewallrules", str(exc)) from None
        if self.maxidleconnectiontimeout is not None and self.maxidleconnectiontimeout < 21:
            raise SectionValueError("maxidleconnectiontimeout",
                                    "must be at least 21s (two routing intervals plus one)")


@dataclass
class LogLevelConfig:
    level: str = field(default="error", metadata={"doc": "error, warning, info or debug."})

    def validate(self) -> None:
        self.level = self.level.lower()
        if self.level == "warn":
            self.level = "warning"
        if self.level not in LOG_LEVELS:
            raise SectionValueError("level", f"expected one of {', '.join(LOG_LEVELS)}, "
                                             f"got {self.level!r}")


@dataclass
class LocalOnlyConfig:
    local: bool = field(default=True, metadata={"doc": "Accepted for compatibility; a node "
                                                       "without backends runs anyway."})


@dataclass
class ControlServiceConfig:
    service: str = field(default="control",
                         metadata={"doc": "Mesh service name (\"\" disables the mesh listener)."})
    filename: str | None = field(default=None, metadata={"doc": "Unix socket path."})
    permissions: int = field(default=0o600, metadata={"doc": "Unix socket permissions (octal, default 0600)."})
    tls: str | None = field(default=None,
                            metadata={"doc": "tls-server for the mesh service."})
    tcplisten: str | None = field(default=None,
                                  metadata={"doc": "\"port\" or \"host:port\" for TCP clients."})
    tcptls: str | None = field(default=None, metadata={"doc": "tls-server for tcplisten."})

    def validate(self) -> None:
        if len(self.service.encode()) > 8:
            raise SectionValueError("service", "service names are at most 8 bytes")
        if self.tcplisten is not None:
            port = str(self.tcplisten).rpartition(":")[2]
            if not port.isdigit() or not 0 <= int(port) < 65536:
                raise SectionValueError("tcplisten", "expected \"port\" or \"host:port\"")


@dataclass
class UnitLifecycleConfig:
    retention: Duration | None = field(
        default=None, metadata={"doc": "Release finished units (Succeeded, Failed, Canceled) "
                                       "this long after they finished (Go duration)."})
    pendingttl: Duration | None = field(
        default=None, metadata={"doc": "Fail units still Pending this long after their last "
                                       "change, e.g. a payload that never arrived."})

    def validate(self) -> None:
        for key in ("retention", "pendingttl"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise SectionValueError(key, "must be a positive duration such as '1h'")


@dataclass
class WorkLimitsConfig:
    maxpayload: ByteSize | None = field(
        default=None, metadata={"doc": "Largest payload (stdin) a client may send with `work "
                                       "submit`, e.g. '100M'; a larger one fails the unit and "
                                       "the client gets an ERROR line. Default: no limit."})

    def validate(self) -> None:
        if self.maxpayload is not None and self.maxpayload <= 0:
            raise SectionValueError("maxpayload", "must be a positive size such as '100M'")


@hookimpl
def mesh_register_config_sections(register: Any) -> None:
    register(SectionSpec("node", NodeConfig, singleton=True, bare="id",
                         doc="This node's identity, data directory and firewall."))
    register(SectionSpec("log-level", LogLevelConfig, singleton=True, bare="level",
                         doc="Log verbosity."))
    register(SectionSpec("local-only", LocalOnlyConfig, singleton=True, bare="local",
                         doc="Run without backends (accepted for Receptor compatibility)."))
    register(SectionSpec("unit-lifecycle", UnitLifecycleConfig, singleton=True,
                         plural="unit-lifecycle",
                         doc="mesh extension: automatic release and expiry of work units."))
    register(SectionSpec("work-limits", WorkLimitsConfig, singleton=True, plural="work-limits",
                         doc="mesh extension: limits on what clients may submit."))
    register(SectionSpec("control-service", ControlServiceConfig,
                         doc="The control service (receptorctl, mesh CLI, remote work)."))
