"""Single work units driven in-process: a unit created as the kernel creates it, and a handle
that records what the work type reports (the ``unit_handle`` fixture of :mod:`mesh.pytest_plugin`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from mesh.work.states import FINAL
from mesh.work.unitstore import UnitStatus, UnitStore, UnitStoreError
from mesh.work.worktype import UnitHandle, WorkType


@dataclass
class WatchedUnit(UnitHandle):
    """A :class:`UnitHandle` whose ``notify()`` records the status it sees and sets ``changed``.

    Drive a work type with it and wait for what it reports::

        await work_type.start(unit)
        status = await unit.final()
    """

    #: The status read at each ``notify()`` call, in order.
    seen: list[UnitStatus] = field(default_factory=list)
    #: Set by every ``notify()`` call.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.notify = self._notified

    def _notified(self) -> None:
        try:
            self.seen.append(self.status())
        except UnitStoreError:
            pass  # released
        self.changed.set()

    async def until(self, condition: Callable[[UnitStatus], bool], *, timeout: float = 15.0,
                    what: str = "condition") -> UnitStatus:
        """Wait, woken only by ``notify()``, until the status satisfies ``condition``.

        :raises TimeoutError: at the deadline (a work type that forgets to notify ends here).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.changed.clear()
            status = self.status()
            if condition(status):
                return status
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"unit {self.unit_id}: timed out after {timeout}s waiting for "
                                   f"{what} (last status {status.to_dict()}; does the work type "
                                   f"call unit.notify() after each change?)")
            try:
                async with asyncio.timeout(remaining):
                    await self.changed.wait()
            except asyncio.TimeoutError:
                pass

    async def final(self, *, timeout: float = 15.0) -> UnitStatus:
        """Wait until the unit is Succeeded, Failed or Canceled; returns that status."""
        return await self.until(lambda s: s.state in FINAL, timeout=timeout,
                                what="a final state")

    @property
    def stdout(self) -> bytes:
        """The unit's output so far."""
        try:
            return self.stdout_path.read_bytes()
        except FileNotFoundError:
            return b""


def make_unit(store: UnitStore, work_type: WorkType | str = "test", *, stdin: bytes = b"",
              params: dict[str, str] | None = None, node: Any = None) -> WatchedUnit:
    """Create a Pending unit as the kernel does before ``start``: status, ExtraData, stdin.

    :param work_type: the work type (its ``check_params(params)`` gives the ExtraData) or just
        the name to record.
    """
    params = dict(params or {})
    if isinstance(work_type, str):
        name, extra = work_type, None
    else:
        name, extra = work_type.name, work_type.check_params(params)
    unit_id = store.create(name, extra, detail="Waiting for Input Data")
    (store.path(unit_id) / "stdin").write_bytes(stdin)
    return WatchedUnit(unit_id, store, params, node=node)
