"""The contract between work-type plugins and the kernel's work manager."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from mesh.work.states import FINAL, UnitState
from mesh.work.unitstore import UnitStatus, UnitStore, UnitStoreError

#: Bump when the WorkType/UnitHandle contract changes incompatibly.
WORK_ABI = 1


class WorkError(Exception):
    """A user-caused work error; the control client sees ``ERROR: <message>``."""


class UnitNode(Protocol):
    """The node as a unit's handle declares it.  It is the node that a work type's factory
    gets, a :class:`mesh.plugin_types.PluginNode`: a work type uses that one (kept as
    ``self.node``) for anything more.  The work layer does not import the plugin API, which
    describes the whole node, so it names only this."""

    @property
    def node_id(self) -> str:
        """The node's ID."""


@dataclass
class UnitHandle:
    """What a work type gets for one unit: its files, its params and a way to report."""

    unit_id: str
    store: UnitStore
    params: dict[str, str] = field(default_factory=dict)
    #: Call after changing the unit's files so result streams and watchers wake up.
    notify: Callable[[], None] = lambda: None
    #: The node that runs the unit (None in unit tests that pass none).
    node: UnitNode | None = None

    @property
    def dir(self) -> Path:
        """The unit's directory, ``<datadir>/<node id>/<unit id>``."""
        return self.store.path(self.unit_id)

    @property
    def stdin_path(self) -> Path:
        """The unit's payload (complete before :meth:`WorkType.start` is called)."""
        return self.dir / "stdin"

    @property
    def stdout_path(self) -> Path:
        """The unit's output, which the work type writes and clients read."""
        return self.dir / "stdout"

    def status(self) -> UnitStatus:
        """The unit's status as recorded now; raises UnitStoreError once it was released."""
        return self.store.read(self.unit_id)

    @property
    def node_id(self) -> str:
        """The ID of the node that owns the unit (its unit store is that node's)."""
        return self.store.root.name

    def update(self, change: Callable[[UnitStatus], None], *, check: bool = True) -> UnitStatus:
        """Change the status under the unit lock, then wake watchers."""
        status = self.store.update(self.unit_id, change, check=check)
        self.notify()
        return status

    def is_final(self) -> bool:
        """True once the unit is Succeeded, Failed or Canceled (or released: nothing is left
        to record)."""
        try:
            return self.status().state in FINAL
        except UnitStoreError:
            return True

    def report(self, *, detail: str | None = None, stdout_size: int | None = None) -> bool:
        """Record ``detail`` and/or ``stdout_size`` (None: the stdout file's size now) while the
        unit is not final; False (nothing written) once it is, or was released."""
        def change(status: UnitStatus) -> None:
            if detail is not None:
                status.detail = detail
            status.stdout_size = self.store.stdout_size(self.unit_id) if stdout_size is None \
                else stdout_size

        return self._guarded(change)

    def mark_running(self, detail: str = "Running") -> bool:
        """Mark the unit Running with ``detail`` unless it is already final (canceled before
        it started) or released; True if recorded."""
        def change(status: UnitStatus) -> None:
            status.state, status.detail = UnitState.RUNNING, detail

        return self._guarded(change)

    def finish(self, state: UnitState, detail: str) -> bool:
        """Record the final ``state`` (SUCCEEDED or FAILED) with ``detail`` and the stdout
        size (FAILED also clears ExtraData), unless the unit is already final (a cancel won) or
        released; True if recorded."""
        if state not in (UnitState.SUCCEEDED, UnitState.FAILED):
            raise ValueError(f"finish() takes SUCCEEDED or FAILED, not {state!r}")

        def change(status: UnitStatus) -> None:
            status.state, status.detail = state, detail
            if state == UnitState.FAILED:
                status.extra_data = None  # what the work type kept to re-attach is void now
            status.stdout_size = self.store.stdout_size(self.unit_id)

        return self._guarded(change)

    def fail(self, detail: str) -> bool:
        """Mark the unit Failed with ``detail`` unless it is already final; True if recorded."""
        return self.finish(UnitState.FAILED, detail)

    def succeed(self, detail: str = "") -> bool:
        """Mark the unit Succeeded unless it is already final; True if recorded."""
        return self.finish(UnitState.SUCCEEDED, detail)

    def _guarded(self, change: Callable[[UnitStatus], None]) -> bool:
        """Apply ``change`` under the unit lock unless the unit is final or released; True
        if it was applied."""
        def unless_final(status: UnitStatus) -> None:
            if status.state in FINAL:
                raise _AlreadyFinal
            change(status)

        try:
            self.update(unless_final)
        except (_AlreadyFinal, UnitStoreError):
            return False
        return True


class _AlreadyFinal(Exception):
    """Raised inside a status change to leave a final unit as it is."""


class WorkType(abc.ABC):
    """One named work type (an entry of a ``work-*`` config section).

    The kernel writes Pending states and the stdin file; the work type launches the work,
    keeps ``status`` current (State, Detail, StdoutSize) and writes ``stdout``.
    """

    abi = WORK_ABI
    #: True if the work type stops a unit whose stdout outgrows ``work-limits maxstdout``
    #: itself (the command runner does); else the work manager checks every second, then
    #: cancels the unit, cuts its stdout at the limit and records it Failed.
    stops_at_max_stdout = False

    def __init__(self, name: str, *, verify_signature: bool = False) -> None:
        self.name = name
        self.verify_signature = verify_signature

    def check_params(self, params: dict[str, str]) -> Any:
        """Validate submit parameters; return the unit's initial ExtraData.

        Raise :class:`WorkError` with Receptor's text for refused parameters
        (e.g. ``extra params provided but not allowed``).
        """
        return None

    @abc.abstractmethod
    async def start(self, unit: UnitHandle) -> None:
        """Launch the unit (its stdin file is complete).  Return once it runs or has failed."""

    @abc.abstractmethod
    async def cancel(self, unit: UnitHandle) -> None:
        """Stop everything the unit started; the kernel records Canceled afterwards."""

    async def restart(self, unit: UnitHandle) -> None:
        """Called at node start for a unit recorded as Running: re-attach to it, or mark it
        Failed with a Detail that says why."""
        unit.fail("Failed to restart: work type cannot re-attach")

    async def release(self, unit: UnitHandle) -> None:
        """Clean up anything outside the unit directory (called before it is deleted)."""
