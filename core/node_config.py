"""The schemas of the config sections the kernel owns, and where a node keeps its files.

Kept apart from :mod:`mesh.node_sections` (the plugin that registers them) so that a node's
early start can read its ``node`` and ``control-service`` sections without loading pluggy.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from mesh.config.errors import SectionValueError
from mesh.config.schema import ByteSize, Duration, SectionSpec
from mesh.defaults import LOG_LEVELS, default_node_id, default_socket, state_dir
from mesh.net.control_limits import DEFAULT_MAX_NODES
from mesh.net.firewall import FirewallRuleError, parse_rule

__all__ = ["KERNEL_SPECS", "SAFE_NAME_RE", "ControlServiceConfig", "LogLevelConfig",
           "LocalOnlyConfig", "NodeConfig", "UnitLifecycleConfig", "WorkLimitsConfig",
           "check_node_id", "default_node_id", "default_socket", "state_dir"]

#: Node IDs and work type names become directory and file names and appear in hashes:
#: keep them to safe characters.
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


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
    datadir: str = field(default_factory=lambda: os.path.join(state_dir(), "data"),
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
    maxnodes: int = field(
        default=DEFAULT_MAX_NODES,
        metadata={"doc": "mesh extension: most nodes this node keeps track of; routing updates "
                         "and adverts that would add more are dropped (and logged as "
                         "control_plane_limit). The other control-plane limits (connections, "
                         "adverts, per-link message budget) scale with it."})

    def validate(self) -> None:
        check_node_id(self.id)
        if self.maxnodes <= 0:
            raise SectionValueError("maxnodes", f"must be greater than 0, got {self.maxnodes}")
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
    maxstdout: ByteSize | None = field(
        default=None, metadata={"doc": "Largest stdout a unit run on this node may write, e.g. "
                                       "'2G'; a unit that writes more is stopped and Failed "
                                       "(Detail `stdout larger than the limit of N bytes "
                                       "(work-limits maxstdout)`) and its stdout up to the "
                                       "limit is kept. Default: no limit."})

    def validate(self) -> None:
        for key in ("maxpayload", "maxstdout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise SectionValueError(key, "must be a positive size such as '100M'")


#: The kernel's sections, registered by :mod:`mesh.node_sections`.
KERNEL_SPECS: tuple[SectionSpec, ...] = (
    SectionSpec("node", NodeConfig, singleton=True, bare="id",
                doc="This node's identity, data directory and firewall."),
    SectionSpec("log-level", LogLevelConfig, singleton=True, bare="level",
                doc="Log verbosity."),
    SectionSpec("local-only", LocalOnlyConfig, singleton=True, bare="local",
                doc="Run without backends (accepted for Receptor compatibility)."),
    SectionSpec("unit-lifecycle", UnitLifecycleConfig, singleton=True,
                plural="unit-lifecycle",
                doc="mesh extension: automatic release and expiry of work units."),
    SectionSpec("work-limits", WorkLimitsConfig, singleton=True, plural="work-limits",
                doc="mesh extension: limits on what clients may submit and units may write."),
    SectionSpec("control-service", ControlServiceConfig,
                doc="The control service (receptorctl, mesh CLI, remote work)."),
)
