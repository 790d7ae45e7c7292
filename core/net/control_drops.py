"""Control messages the node drops: counted (``ControlLimits.totals``) and logged in summary.

A routing update or advert over a control-plane limit, or one that cannot be used, is logged at
most once per peer, kind and interval; the drops in between go into the next
``control_plane_limit`` line (see :mod:`mesh.net.control_limits`).
"""

from __future__ import annotations

import time

import structlog

from mesh.net.control_limits import ControlLimits

log = structlog.get_logger(__name__)


class ControlDrops:
    """Counts and logs the control messages one node drops."""

    def __init__(self, node_id: str, limits: ControlLimits) -> None:
        self.node_id = node_id
        self.limits = limits

    def dropped(self, peer: str, what: str) -> None:
        """A control message from ``peer`` was dropped by a limit (logged in summary)."""
        count = self.limits.note_drop(peer, what, time.monotonic())
        if count:
            self._log(peer, what, count)

    def malformed(self, peer: str, event: str, error: str) -> None:
        """A control message from ``peer`` that cannot be used: logged as ``event`` at most
        once per peer and interval (later ones in the ``control_plane_limit`` summary)."""
        count = self.limits.note_drop(peer, f"malformed: {event}", time.monotonic())
        if count:
            log.warning(event, node_id=self.node_id, peer=peer, error=error, dropped=count)

    def flush(self, now: float) -> None:
        """Log the drops not logged yet whose interval has passed."""
        for peer, what, count in self.limits.flush(now):
            self._log(peer, what, count)

    def _log(self, peer: str, what: str, count: int) -> None:
        log.warning("control_plane_limit", node_id=self.node_id, peer=peer, what=what,
                    dropped=count, maxnodes=self.limits.caps.max_nodes,
                    detail="control messages dropped: over a control-plane limit (node "
                           "maxnodes), or malformed")
