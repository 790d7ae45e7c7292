"""mesh-plugin-echo: a work type that writes each unit's input back, line by line, with a prefix.

The smallest complete mesh plugin, meant to be copied (docs/plugin-guide.md walks through it).
A unit runs inside the node process (:class:`mesh.work.simple.SimpleWorkType` does the
bookkeeping), so it does not survive its node: one that was running when the node stopped is
marked Failed when the node starts again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.work.simple import SimpleWorkType, UnitOutput
from mesh.work.worktype import UnitHandle

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterWorkType

__version__ = "0.1.0"


@dataclass
class WorkEchoConfig:
    """One ``work-echo`` entry; each field is a config key (``metadata["doc"]`` documents it)."""

    worktype: str = field(metadata={"doc": "Name of the work type that clients submit."})
    prefix: str = field(default="", metadata={"doc": "Text written before every line of input."})

    def validate(self) -> None:
        """Called after the YAML values are coerced; raise SectionValueError to reject one."""
        if not self.worktype.strip():
            raise SectionValueError("worktype", "must not be empty")


class EchoWorkType(SimpleWorkType[WorkEchoConfig]):
    """Copies a unit's input to its output, ``prefix`` before each line; takes no params."""

    async def run(self, unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        prefix, lines = self.config.prefix.encode(), 0
        while batch := list(itertools.islice(stdin, 1000)):  # one write per 1000 lines
            await stdout.write(b"".join(prefix + line for line in batch))
            lines += len(batch)
        return f"Echoed {lines} lines"


@hookimpl
def mesh_register_work_types(register: RegisterWorkType) -> None:
    """Register the ``work-echo`` section and the factory of its work types."""
    register(SectionSpec("work-echo", WorkEchoConfig, bare="worktype",
                         doc="A work type that writes each unit's input back with a prefix."),
             EchoWorkType)
