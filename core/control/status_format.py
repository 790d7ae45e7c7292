"""Human rendering of a ``status`` reply, laid out like ``receptorctl status``."""

from __future__ import annotations

from typing import Any

from mesh.go_json import MessageError
from mesh.go_time import go_datetime

CONN_TYPES = {0: "Datagram", 1: "Stream", 2: "StreamTLS"}


def _time(text: str) -> str:
    """An advert's Go time in its own zone's wall clock, to the second (as is if malformed)."""
    try:
        return f"{go_datetime(text):%Y-%m-%d %H:%M:%S}"
    except MessageError:
        return text


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def format_status(status: dict[str, Any]) -> str:
    """Render the sections receptorctl prints: connections, known connections, routes,
    advertisements and work types."""
    status = dict(status)
    lines = [f"Node ID: {status.pop('NodeID', '')}", f"Version: {status.pop('Version', '')}",
             f"System CPU Count: {status.pop('SystemCPUCount', '')}",
             f"System Memory MiB: {status.pop('SystemMemoryMiB', '')}"]
    connections = status.pop("Connections", None) or []
    costs = status.pop("KnownConnectionCosts", None) or {}
    width = max([12] + [len(c["NodeID"]) for c in connections] + [len(n) for n in costs])
    if connections:
        lines += ["", f"{'Connection':<{width}} Cost"]
        lines += [f"{c['NodeID']:<{width}} {_num(c['Cost'])}" for c in connections]
    if costs:
        lines += ["", f"{'Known Node':<{width}} Known Connections"]
        for node, peers in costs.items():
            lines.append(f"{node:<{width}} " + "".join(f"{p}: {_num(c)} "
                                                        for p, c in peers.items()).rstrip())
    routes = status.pop("RoutingTable", None) or {}
    if routes:
        lines += ["", f"{'Route':<{width}} Via"]
        lines += [f"{node:<{width}} {via}" for node, via in routes.items()]
    ads = status.pop("Advertisements", None) or []
    if ads:
        lines += ["", f"{'Node':<{width}} Service   Type       Last Seen             Tags"]
        for ad in ads:
            tags = "-" if ad.get("Tags") is None else str(ad["Tags"])
            lines.append(f"{ad['NodeID']:<{width}} {ad['Service']:<9} "
                         f"{CONN_TYPES.get(ad['ConnType'], '?'):<10} "
                         f"{_time(ad['Time']):<21} {tags}".rstrip())
        for header, secure in (("Work Types", False), ("Secure Work Types", True)):
            rows: dict[str, list[str]] = {}
            for ad in ads:
                types = [c["WorkType"] for c in ad.get("WorkCommands") or []
                         if c.get("Secure", False) == secure]
                if types and ad["NodeID"] not in rows:
                    rows[ad["NodeID"]] = types
            if rows:
                lines += ["", f"{'Node':<{width}} {header}"]
                lines += [f"{node:<{width}} {', '.join(t)}" for node, t in rows.items()]
    return "\n".join(lines)
