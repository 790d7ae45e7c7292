"""Helpers for tests that run real mesh node processes on loopback.

Used by the project's own tests, benches and examples, and available to plugin authors.  Every
wait polls a condition against a deadline; every process is tracked by pid and stopped in
teardown; a node loads mesh's own plugins only unless a test names others.

* :mod:`~mesh.testing.polling`: :func:`wait_until` and its async twin.
* :mod:`~mesh.testing.ports`: :func:`free_port`.
* :mod:`~mesh.testing.processes`: :class:`NodeProcess`, :class:`ControlSession`.
* :mod:`~mesh.testing.clusters`: :class:`Mesh`, :func:`build_cluster`.
* :mod:`~mesh.testing.sessions`: :func:`kill_runners`, what units leave running.
* :mod:`~mesh.testing.units`: :class:`WatchedUnit`, :func:`make_unit`.
"""

from mesh.testing.clusters import TOPOLOGIES, Mesh, build_cluster, wait_services
from mesh.testing.polling import wait_until, wait_until_async
from mesh.testing.ports import free_port
from mesh.testing.processes import (MESH_BIN, ControlSession, NodeProcess, plugin_selection,
                                    wait_resources_back)
from mesh.testing.sessions import kill_runners, session_members
from mesh.testing.units import WatchedUnit, make_unit

__all__ = [
    "MESH_BIN", "TOPOLOGIES", "ControlSession", "Mesh", "NodeProcess", "WatchedUnit",
    "build_cluster", "free_port", "kill_runners", "make_unit", "plugin_selection",
    "session_members", "wait_resources_back", "wait_services", "wait_until", "wait_until_async",
]
