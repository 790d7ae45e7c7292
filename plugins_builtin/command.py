"""command work type: each ``work-command`` section runs an executable once per unit
(Receptor §6.4).

A unit's command runs under a detached runner
(:class:`mesh_builtin.detached_runner.DetachedRunner`), so a unit survives the node being killed
and restarted.  This module adds the configured command line and the submitter's ``params``.

:class:`CommandWorkType` is also the base of work types that run another command line per unit
(``container``, ``mesh-plugin-ansible-runner``): they override :meth:`CommandWorkType.start` to
build the argv and hand it to ``self.runner.start(unit, argv)``, and
:meth:`CommandWorkType.runner_ended` to clean up what lives outside the runner's session.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.work.states import FINAL
from mesh.work.worktype import UnitHandle, WorkError, WorkType
from mesh_builtin.detached_runner import DetachedRunner

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import PluginNode, RegisterWorkType


@dataclass
class WorkCommandConfig:
    worktype: str = field(metadata={"doc": "Name of the work type that clients submit."})
    command: str = field(metadata={
        "doc": "Executable to run (a path, or a name looked up in PATH)."})
    params: str = field(default="", metadata={
        "doc": "Command-line arguments, split like a shell does (quotes and backslashes; no "
               "variable expansion)."})
    allowruntimeparams: bool = field(default=False, metadata={
        "doc": "Allow the submitter to append arguments with the `params` work parameter."})
    verifysignature: bool = field(default=False, metadata={
        "doc": "Require signed work submissions (needs a work-verification section)."})

    def validate(self) -> None:
        if not self.worktype.strip():
            raise SectionValueError("worktype", "must not be empty")
        if not self.command.strip():
            raise SectionValueError("command", "must name an executable")
        try:
            shlex.split(self.params)
        except ValueError as exc:
            raise SectionValueError("params", f"cannot be split into arguments: {exc}; "
                                              "check the quotes") from None


class CommandWorkType(WorkType):
    """One ``work-command`` entry: runs ``command`` with the unit's params under a detached
    runner.

    Extension points for subclasses: :meth:`start_params` (the unit's params, split),
    :meth:`start` (build an argv, then ``await self.runner.start(unit, argv)``) and
    :meth:`runner_ended`.  Cancel and restart are the runner's (:attr:`runner`).
    ``config``, ``node`` and ``runner`` are this class's attributes: a subclass keeps its own
    settings under other names (one that sets ``self.runner`` breaks cancel and restart).
    """

    stops_at_max_stdout = True  # the runner does (see command_runner.Runner.cut)

    def __init__(self, config: WorkCommandConfig, node: PluginNode | None = None) -> None:
        super().__init__(config.worktype, verify_signature=config.verifysignature)
        self.config = config
        self.node = node
        #: Starts, watches, re-attaches and kills the units' runners.
        self.runner = DetachedRunner(max_stdout=self._max_stdout, on_end=self.runner_ended)

    # -- parameters ------------------------------------------------------------------------

    def full_params(self, params: dict[str, str]) -> str:
        """Configured params plus the submitter's ``params`` (joined with a space)."""
        extra = params.get("params", "") or ""
        if extra and not self.config.allowruntimeparams:
            raise WorkError("extra params provided but not allowed")
        if not extra:
            return self.config.params
        return f"{self.config.params} {extra}" if self.config.params else extra

    def check_params(self, params: dict[str, str]) -> Any:
        full = self.full_params(params)
        try:
            shlex.split(full)
        except ValueError as exc:
            raise WorkError(f"params {params.get('params', '')!r} cannot be split into arguments: "
                            f"{exc}") from None
        return {"Pid": 0, "Params": full}

    def start_params(self, unit: UnitHandle) -> tuple[str, list[str]] | None:
        """The unit's params (ExtraData ``Params``, else from its submit params) as text and
        split into arguments; None if the unit is final or they cannot be split (it is then
        Failed with why)."""
        status = unit.status()
        if status.state in FINAL:
            return None
        extra = status.extra_data if isinstance(status.extra_data, dict) else {}
        params = extra.get("Params")
        if not isinstance(params, str):
            params = self.full_params(unit.params)
        try:
            return params, shlex.split(params)
        except ValueError as exc:
            unit.fail(f"Error: params cannot be split into arguments: {exc}")
            return None

    # -- the work type ---------------------------------------------------------------------

    async def start(self, unit: UnitHandle) -> None:
        started = self.start_params(unit)
        if started is None:
            return
        params, args = started
        await self.runner.start(unit, [self.config.command, *args], params=params)

    async def runner_ended(self, unit: UnitHandle) -> None:
        """Called once the unit's runner is gone (it exited, cancel killed it, or a restart
        found it gone; see :class:`~mesh_builtin.detached_runner.DetachedRunner`): override it
        to clean up what lives outside the runner's session.  May run more than once for a
        unit.  Default: nothing."""

    async def cancel(self, unit: UnitHandle) -> None:
        await self.runner.cancel(unit)

    async def restart(self, unit: UnitHandle) -> None:
        await self.runner.restart(unit)

    def _max_stdout(self) -> int | None:
        """``work-limits maxstdout``: the runner stops the unit's command beyond it."""
        return self.node.work.max_stdout if self.node is not None else None  # None: unit tests


@hookimpl
def mesh_register_work_types(register: RegisterWorkType) -> None:
    register(SectionSpec("work-command", WorkCommandConfig,
                         doc="A work type that runs an executable for each unit."),
             CommandWorkType)
