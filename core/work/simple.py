"""In-process work types written as one coroutine: :class:`SimpleWorkType`.

A plugin subclasses it and writes ``run``; the kernel side here does the bookkeeping every
in-process work type needs::

    class EchoWorkType(SimpleWorkType[WorkEchoConfig]):
        async def run(self, unit, stdin, stdout):
            await stdout.write(stdin.read())
            return "Echoed"

* ``start`` marks the unit Running and runs ``run`` in a task of the node's event loop;
* each ``await stdout.write(data)`` records the new ``StdoutSize`` and wakes the unit's
  followers (and the work manager's ``work-limits maxstdout`` check), then yields to the loop;
* ``run``'s return value becomes the Detail of a Succeeded unit; a :class:`WorkError` it
  raises fails the unit with its message as Detail, any other exception with ``Error: ...``;
  a unit canceled meanwhile stays Canceled;
* ``cancel`` cancels the task and waits for it; ``restart`` (the node started again) marks a
  unit that was Running Failed, since the task ended with the node that ran it;
* ``check_params`` refuses ``params`` (command-line words) unless
  :attr:`SimpleWorkType.allowed_params` names it, in Receptor's words; other keys pass.
"""

from __future__ import annotations

import abc
import asyncio
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Generic, Protocol, TypeVar

import structlog

from mesh.work.worktype import UnitHandle, WorkError, WorkType

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import PluginNode

log = structlog.get_logger(__name__)


class WorkTypeConfig(Protocol):
    """What :class:`SimpleWorkType` reads from an entry of its config section."""

    #: The name clients submit work under.
    worktype: str


#: A work type's config: one entry of its config section (a dataclass instance).
ConfigT = TypeVar("ConfigT", bound=WorkTypeConfig)

#: The Detail of a Succeeded unit whose ``run`` returned None.
DONE = "Done"


class UnitOutput:
    """A unit's ``stdout`` file as ``run`` writes it."""

    def __init__(self, unit: UnitHandle, file: BinaryIO) -> None:
        self._unit = unit
        self._file = file

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._file.tell()

    async def write(self, data: bytes) -> None:
        """Append ``data``, record the new StdoutSize (waking the unit's followers), then let
        the node's event loop run (a cancel lands here).  Each call writes the unit's status:
        write chunks (lines in batches, say), not single bytes."""
        self._file.write(data)
        self._file.flush()
        self._unit.report(stdout_size=self._file.tell())
        await asyncio.sleep(0)


class SimpleWorkType(WorkType, Generic[ConfigT]):
    """A work type that runs each unit as one coroutine (:meth:`run`) inside the node.

    The factory registered with ``mesh_register_work_types`` can be the subclass itself:
    ``Subclass(config, node)``.  The config must have a ``worktype`` field (the name clients
    submit under); a ``verifysignature`` field, if it has one, requires signed submissions.
    Units do not survive their node: work that must outlive a restart runs in a separate
    process (see ``mesh_builtin.command``).
    """

    #: The submit parameters a unit may carry (``unit.params``); a submission with any other
    #: non-empty one is refused.  ``params`` is the one ``work submit NODE TYPE WORDS...`` sets.
    allowed_params: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ConfigT, node: PluginNode | None = None) -> None:
        super().__init__(config.worktype,
                         verify_signature=bool(getattr(config, "verifysignature", False)))
        self.config = config
        self.node = node
        self._tasks: dict[str, asyncio.Task[None]] = {}  # running units, by unit ID

    @abc.abstractmethod
    async def run(self, unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str | None:
        """Do the unit's work: read ``stdin`` (the submitted payload, a binary file), write
        the output with ``await stdout.write(data)``, return the Detail of the Succeeded unit
        (None: ``Done``).  Raise :class:`WorkError` to fail the unit with its message as
        Detail.  Await often: the node's links and control service share the event loop
        (use ``asyncio.to_thread`` for long computations)."""

    def check_params(self, params: dict[str, str]) -> Any:
        """Refuse a non-empty ``params`` unless :attr:`allowed_params` names it (Receptor's
        rule and words); other keys pass, as with Receptor's work types.  No ExtraData."""
        if params.get("params") and "params" not in self.allowed_params:
            raise WorkError("extra params provided but not allowed")
        return None

    async def start(self, unit: UnitHandle) -> None:
        """Mark the unit Running and run :meth:`run` in a task of the node's event loop."""
        if not unit.mark_running():
            return  # canceled (or released) before it started
        task = asyncio.get_running_loop().create_task(self._run(unit),
                                                      name=f"{self.name}-{unit.unit_id}")
        self._tasks[unit.unit_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(unit.unit_id, None))

    async def _run(self, unit: UnitHandle) -> None:
        try:
            with open(unit.stdin_path, "rb") as stdin, open(unit.stdout_path, "wb") as stdout:
                detail = await self.run(unit, stdin, UnitOutput(unit, stdout))
        except Exception as exc:  # the unit fails; the node goes on
            if not isinstance(exc, (WorkError, OSError)):
                log.exception("unit_run_failed", work_type=self.name, unit_id=unit.unit_id)
            unit.fail(failure_detail(exc))
        else:
            unit.succeed(DONE if detail is None else detail)

    async def cancel(self, unit: UnitHandle) -> None:
        """Cancel the unit's task and wait until it ended; the kernel then records Canceled."""
        task = self._tasks.pop(unit.unit_id, None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def restart(self, unit: UnitHandle) -> None:
        """The unit's task ended with the node that ran it: the unit fails, saying so."""
        unit.fail(f"Failed to restart: {self.name} runs inside the node process and ended "
                  f"when the node stopped")


def failure_detail(exc: Exception) -> str:
    """The Detail of a unit whose ``run`` raised ``exc``."""
    if isinstance(exc, WorkError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"Error: {exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return f"Error: {type(exc).__name__}: {exc}"
