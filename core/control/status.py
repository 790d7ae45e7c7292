"""The ``status`` reply: Receptor's eight keys, built from plain data.

Shared by the ``status`` control command of a running node and by the early control
responder of a node that is still starting (:mod:`mesh.control.early`), so both answer alike.
Standard library only: the early responder runs before the rest of the node is imported.
"""

from __future__ import annotations

import os

from mesh import TYPE_CHECKING, __version__
from mesh.control.protocol import CommandError, Request, go_number

if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Mapping

STATUS_FIELDS = ("Version", "SystemCPUCount", "SystemMemoryMiB", "NodeID", "Connections",
                 "RoutingTable", "Advertisements", "KnownConnectionCosts")


def _memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 0


def status_reply(node_id: str, *, links: Mapping[str, float] | None = None,
                 routing_table: Mapping[str, str] | None = None,
                 advertisements: list[dict[str, Any]] | None = None,
                 known: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, Any]:
    """The full ``status`` reply (the 8 keys Receptor returns).

    :param links: neighbour → link cost.
    :param routing_table: destination → next hop.
    :param advertisements: adverts already in their status form (``ad_to_status_dict``).
    :param known: node → {peer: cost}, every connection the node knows of (default: the node
        itself with no connections, as a node without links reports it).
    """
    known = {node_id: {}} if known is None else known
    return {
        "Version": __version__,
        "SystemCPUCount": os.cpu_count() or 1,
        "SystemMemoryMiB": _memory_mib(),
        "NodeID": node_id,
        "Connections": [{"NodeID": peer, "Cost": go_number(cost)}
                        for peer, cost in sorted((links or {}).items())],
        "RoutingTable": dict(sorted((routing_table or {}).items())),
        "Advertisements": list(advertisements or []),
        "KnownConnectionCosts": {
            node: {peer: go_number(cost) for peer, cost in sorted(edges.items())}
            for node, edges in sorted(known.items())},
    }


def answer_status(status: dict[str, Any], request: Request) -> dict[str, Any]:
    """The reply to one ``status`` request: all of ``status``, or its ``requested_fields``.

    :raises CommandError: arguments in the text form, or ``requested_fields`` that is not a
        list of strings.
    """
    if request.args.strip():
        raise CommandError("status command does not take parameters")
    if "requested_fields" in request.params:
        fields = request.params["requested_fields"]
        if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
            raise CommandError("requested_fields must be a list of strings")
        status = {key: value for key, value in status.items() if key in fields}
    return status
