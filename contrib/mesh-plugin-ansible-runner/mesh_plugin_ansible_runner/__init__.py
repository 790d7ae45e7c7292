"""mesh-plugin-ansible-runner: run ``ansible-runner worker`` for each unit (the AWX flow).

A node configured with::

    - work-ansible-runner:
        worktype: ansible-runner

accepts the output of ``ansible-runner transmit`` as a unit's payload and runs
``ansible-runner worker --private-data-dir <dir>`` on it, where ``<dir>`` is a private data
directory of the unit's own; the unit's stdout is the worker's event stream, which
``ansible-runner process`` turns back into artifacts on the submitting side.

The work type is the builtin ``command`` work type with a per-unit command line, handed to its
detached runner (``self.runner.start(unit, argv)``): a unit survives its node being restarted,
and cancel stops the worker's whole process tree.  The private data directory is removed when
the unit is released (unless ``cleanup: false``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.work.worktype import UnitHandle
from mesh_builtin.command import CommandWorkType, WorkCommandConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import PluginNode, RegisterWorkType

__version__ = "0.1.0"

log = structlog.get_logger(__name__)

#: Directory under the node's datadir that holds the private data dirs by default.
DEFAULT_BASE = "ansible-runner"


@dataclass
class WorkAnsibleRunnerConfig:
    worktype: str = field(metadata={"doc": "Name of the work type that clients submit."})
    ansiblerunner: str = field(default="ansible-runner", metadata={
        "doc": "The ansible-runner executable (a path, or a name looked up in PATH). "
               "ansible-playbook must be in the node's PATH too."})
    privatedatadir: str = field(default="", metadata={
        "doc": "Base directory of the units' private data directories; a unit gets "
               "`<base>/<node id>/<unit id>`. Empty: `ansible-runner` under the node's datadir."})
    cleanup: bool = field(default=True, metadata={
        "doc": "Remove a unit's private data directory when the unit is released."})
    verifysignature: bool = field(default=False, metadata={
        "doc": "Require signed work submissions (needs a work-verification section)."})

    def validate(self) -> None:
        for key in ("worktype", "ansiblerunner"):
            if not getattr(self, key).strip():
                raise SectionValueError(key, "must not be empty")


class AnsibleRunnerWorkType(CommandWorkType):
    """One ``work-ansible-runner`` entry: a command work type whose command is
    ``ansible-runner worker --private-data-dir <the unit's dir>``."""

    def __init__(self, config: WorkAnsibleRunnerConfig, node: PluginNode | None = None) -> None:
        super().__init__(WorkCommandConfig(worktype=config.worktype,
                                           command=config.ansiblerunner,
                                           verifysignature=config.verifysignature), node)
        self.settings = config

    def private_data_dir(self, unit: UnitHandle) -> Path:
        """``<base>/<node id>/<unit id>``; the store's root is ``<datadir>/<node id>``."""
        if self.settings.privatedatadir:
            base = Path(self.settings.privatedatadir).expanduser()
        else:  # no node: a unit test, whose unit store is under a datadir of its own
            datadir = self.node.datadir if self.node is not None else unit.store.root.parent
            base = datadir / DEFAULT_BASE
        return base / unit.node_id / unit.unit_id

    async def start(self, unit: UnitHandle) -> None:
        if unit.is_final():
            return
        private = self.private_data_dir(unit)
        try:
            private.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            unit.fail(f"Error: cannot create the private data directory {private}: "
                      f"{exc.strerror or exc}")
            return
        await self.runner.start(unit, [self.settings.ansiblerunner, "worker",
                                       "--private-data-dir", str(private)])

    async def release(self, unit: UnitHandle) -> None:
        await super().release(unit)
        if self.settings.cleanup:
            private = self.private_data_dir(unit)
            shutil.rmtree(private, ignore_errors=True)
            log.debug("private_data_dir_removed", unit_id=unit.unit_id, path=str(private))


@hookimpl
def mesh_register_work_types(register: RegisterWorkType) -> None:
    register(SectionSpec("work-ansible-runner", WorkAnsibleRunnerConfig, bare="worktype",
                         doc="A work type that runs `ansible-runner worker` for each unit."),
             AnsibleRunnerWorkType)
