"""Config sections owned by the kernel: node, log-level, local-only, control-service,
unit-lifecycle and work-limits (their schemas live in :mod:`mesh.node_config`).

A plugin like any other (listed in ``mesh.plugins.DEFAULT_PLUGINS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mesh import hookimpl
from mesh.node_config import KERNEL_SPECS

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import RegisterSection


@hookimpl
def mesh_register_config_sections(register: RegisterSection) -> None:
    for spec in KERNEL_SPECS:
        register(spec)
