"""A read-only view of one node's work manager: :meth:`mesh.work.workceptor.Workceptor.stats`.

Imported when first asked (a metrics scrape), not at node start: building a frozen dataclass
costs about a millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.work.states import UnitState


@dataclass(frozen=True)
class WorkStats:
    """The units by state and the results streamed, taken at one moment."""

    #: Units on disk by state, every state present (0 when none); an unreadable unit counts
    #: as Failed, as ``work list`` shows it.
    units_by_state: dict[UnitState, int]
    #: Bytes of work results streamed to clients since the node started.
    results_bytes: int
