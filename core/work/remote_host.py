"""What remote work uses of the work manager and of the node.

The work manager (:class:`mesh.work.workceptor.Workceptor`) builds
:class:`~mesh.work.remote.RemoteWork`, which sees it, and the node behind it, through these
protocols: the remote modules import neither the work manager nor the node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Protocol

if TYPE_CHECKING:  # pragma: no cover - typing only
    import asyncio

    from mesh.work.unitstore import UnitStore


class WorkSigner(Protocol):
    """Signs the work submitted to another node (the node's signer plugin)."""

    def sign(self, audience: str) -> str:
        """A token for the node ``audience``."""


class RemoteNode(Protocol):
    """The node as remote work uses it (a :class:`mesh.node.Node`)."""

    @property
    def node_id(self) -> str:
        """This node's ID."""

    @property
    def signer(self) -> WorkSigner | None:
        """Signs units submitted with ``signwork``; None when no signer is set up."""

    async def dial_stream(self, node: str, service: str, *, tls: str | None = None,
                          timeout: float = 15.0, pooled: bool = False) -> Any:
        """Open a mesh stream to ``node:service``."""

    def routed(self, node: str) -> bool:
        """True if ``node`` is this node or has a route."""

    async def route_to(self, node: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a route to ``node``; True once there is one."""

    def node_epoch(self, node: str) -> Any:
        """``node``'s routing epoch (another after it restarted); None without a route."""


class WorkManager(Protocol):
    """The work manager as remote work uses it (a :class:`mesh.work.workceptor.Workceptor`)."""

    @property
    def node(self) -> RemoteNode:
        """The node the units belong to."""

    @property
    def store(self) -> UnitStore:
        """The unit store on disk."""

    def spawn(self, coro: Awaitable[Any], name: str, *, unit_id: str | None = None,
              peer: str | None = None) -> asyncio.Task[Any]:
        """Run a background task the manager owns (cancelled at shutdown)."""

    def track(self, unit_id: str, state: int, detail: str) -> None:
        """Note a new unit's first state, so that its changes are reported."""

    def notify(self, unit_id: str, *, status_changed: bool = True) -> None:
        """Wake everything following ``unit_id`` (its files changed)."""

    def wake_in(self, delay: float) -> None:
        """Have the manager's upkeep run within ``delay`` seconds."""

    def delete(self, unit_id: str) -> None:
        """Remove the unit from the store."""
