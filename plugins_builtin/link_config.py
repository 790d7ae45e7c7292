"""Config keys every link backend shares (tcp, udp, websocket): one definition, one doc.

Each helper returns a dataclass ``field`` for a section schema, e.g.::

    @dataclass
    class UdpListenerConfig:
        port: int = field(metadata={"doc": "UDP port to listen on."})
        bindaddr: str = bindaddr_field()
        cost: float = listener_cost_field()
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from mesh.config.errors import SectionValueError


def bindaddr_field() -> Any:
    return field(default="0.0.0.0", metadata={"doc": "Address to bind (IPv4 or IPv6)."})


def listener_cost_field() -> Any:
    return field(default=1.0, metadata={"doc": "Cost of links accepted here (> 0)."})


def nodecost_field() -> Any:
    return field(default_factory=dict, metadata={"doc": "Per-node cost overrides."})


def listener_allowedpeers_field() -> Any:
    return field(default_factory=list, metadata={"doc": "Only these node IDs may connect."})


def peer_cost_field() -> Any:
    return field(default=1.0, metadata={"doc": "Link cost (> 0); must match the listener's."})


def peer_allowedpeers_field() -> Any:
    return field(default_factory=list,
                 metadata={"doc": "The peer's node ID must be one of these."})


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        raise ValueError(f"address {address!r} must be host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"address {address!r} has a non-numeric port") from None
    if not 0 < number < 65536:
        raise ValueError(f"address {address!r}: port must be 1-65535")
    return host, number


def check_costs(cost: float, nodecost: dict[str, float] | None = None) -> None:
    """Link costs must be positive (Receptor refuses zero and negative costs)."""
    if not cost > 0:
        raise SectionValueError("cost", f"must be greater than 0, got {cost}")
    for node, value in (nodecost or {}).items():
        if not value > 0:
            raise SectionValueError("nodecost", f"cost for {node!r} must be greater than 0")


def check_listener(port: int, cost: float, nodecost: dict[str, float]) -> None:
    """A listener's port is 0-65535 (0: any free port) and its costs are positive."""
    if not 0 <= port < 65536:
        raise SectionValueError("port", f"must be 0-65535, got {port}")
    check_costs(cost, nodecost)


def check_peer_address(address: str) -> None:
    """A peer's ``host:port`` address, as a config error naming the key."""
    try:
        split_address(address)
    except ValueError as exc:
        raise SectionValueError("address", str(exc)) from None
