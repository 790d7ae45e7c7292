"""mesh-plugin-echo: a work type that writes each unit's input back, line by line, with a prefix.

The smallest complete mesh plugin, meant to be copied.  A node configured with::

    - work-echo:
        worktype: echo
        prefix: "echo: "

runs every unit of work type ``echo`` inside the node process: no external command, no runner
process.  That is also its limit: a unit does not survive its node, so a unit that was running
when the node stopped is marked Failed when the node starts again (see :meth:`EchoWorkType.restart`).
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import structlog

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.work.states import FINAL, UnitState
from mesh.work.unitstore import UnitStatus, UnitStoreError
from mesh.work.worktype import UnitHandle, WorkError, WorkType

__version__ = "0.1.0"

log = structlog.get_logger(__name__)

#: Lines copied between two status updates; the copy yields to the node's event loop after each
#: batch, so a large input never stalls the node.
BATCH_LINES = 1000


@dataclass
class WorkEchoConfig:
    """One ``work-echo`` entry; each field is a config key (``metadata["doc"]`` documents it)."""

    worktype: str = field(metadata={"doc": "Name of the work type that clients submit."})
    prefix: str = field(default="", metadata={"doc": "Text written before every line of input."})

    def validate(self) -> None:
        """Called after the YAML values are coerced; raise SectionValueError to reject one."""
        if not self.worktype.strip():
            raise SectionValueError("worktype", "must not be empty")


class EchoWorkType(WorkType):
    """One ``work-echo`` entry: copies ``stdin`` to ``stdout``, ``prefix`` before each line."""

    def __init__(self, config: WorkEchoConfig, node: Any = None) -> None:
        super().__init__(config.worktype)
        self.prefix = config.prefix.encode()
        self._tasks: dict[str, asyncio.Task[None]] = {}  # running copies, by unit ID

    def check_params(self, params: dict[str, str]) -> Any:
        """Echo takes no parameters (Receptor's wording for refused ones)."""
        if params.get("params"):
            raise WorkError("extra params provided but not allowed")
        return None

    async def start(self, unit: UnitHandle) -> None:
        """Mark the unit Running and copy its input in a task of the node's event loop."""
        if unit.status().state in FINAL:
            return
        _report(unit, UnitState.RUNNING, "Running")
        self._tasks[unit.unit_id] = asyncio.get_running_loop().create_task(self._echo(unit))

    async def _echo(self, unit: UnitHandle) -> None:
        lines = 0
        try:
            with open(unit.stdin_path, "rb") as src, open(unit.stdout_path, "wb") as dst:
                while batch := list(itertools.islice(src, BATCH_LINES)):
                    dst.write(b"".join(self.prefix + line for line in batch))
                    dst.flush()
                    lines += len(batch)
                    _report(unit, UnitState.RUNNING, "Running", stdout_size=dst.tell())
                    await asyncio.sleep(0)  # let the node serve others; cancel() lands here
            _report(unit, UnitState.SUCCEEDED, f"Echoed {lines} lines")
        except OSError as exc:
            _report(unit, UnitState.FAILED, f"Error: {exc.strerror or exc}")
        finally:
            self._tasks.pop(unit.unit_id, None)
        log.debug("unit_echoed", unit_id=unit.unit_id, lines=lines)

    async def cancel(self, unit: UnitHandle) -> None:
        """Stop the copy; the kernel records Canceled once this returns."""
        task = self._tasks.pop(unit.unit_id, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def restart(self, unit: UnitHandle) -> None:
        """The copy ran inside the node that stopped, so it is gone: the unit fails."""
        if unit.status().state not in FINAL:
            _report(unit, UnitState.FAILED, "Failed to restart: echo runs inside the node "
                                            "process and ended when the node stopped")

    # release() is inherited: everything echo writes is in the unit directory, which the
    # kernel deletes.


class _Final(Exception):
    """Raised inside a status change to leave a final status untouched."""


def _report(unit: UnitHandle, state: UnitState, detail: str, *,
            stdout_size: int | None = None) -> None:
    """Record state, detail and output size, then notify, unless the unit is final already."""

    def change(status: UnitStatus) -> None:
        if status.state in FINAL:
            raise _Final  # canceled meanwhile: a final state is never overwritten
        status.state, status.detail = state, detail
        if stdout_size is not None:
            status.stdout_size = stdout_size
        elif state in FINAL:
            status.stdout_size = unit.store.stdout_size(unit.unit_id)

    try:
        unit.update(change)
    except (_Final, UnitStoreError):
        pass  # canceled or released meanwhile


@hookimpl
def mesh_register_work_types(register: Callable[..., None]) -> None:
    """Register the ``work-echo`` section and the factory of its work types."""
    register(SectionSpec("work-echo", WorkEchoConfig, bare="worktype",
                         doc="A work type that writes each unit's input back with a prefix."),
             EchoWorkType)
