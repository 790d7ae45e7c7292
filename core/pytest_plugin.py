"""pytest fixtures for mesh plugin authors.

Installed with mesh as the ``pytest11`` entry point ``mesh``, so every test run in an environment
where mesh is installed has these fixtures (``pytest -p no:mesh`` turns them off):

* ``mesh_plugin_manager``: a :class:`mesh.plugins.PluginHost` with only the kernel's defaults,
  whatever is installed (tests never see ambient plugins).
* ``register_plugin``: ``register_plugin(obj, name=None) -> PluginHost``; a fresh host with the
  kernel's defaults plus every plugin this test registered so far.  Undone at teardown.
* ``mesh_cluster``: ``mesh_cluster(n=3, topology="line", sections={node: [...]}, ...)`` starts
  N real node processes on loopback (free ports) and returns a :class:`mesh.testing.Mesh`;
  every node and command runner is stopped by pid at teardown.
* ``unit_store``: a temporary :class:`mesh.work.unitstore.UnitStore`.
* ``unit_handle``: ``unit_handle(work_type, stdin=b"", params=None)`` creates a Pending unit in
  ``unit_store`` and returns a :class:`mesh.testing.WatchedUnit` (a ``UnitHandle`` whose
  ``notify`` sets an event: ``await unit.final()``).

pytest loads this module in every run, so it imports nothing heavy at import time: the mesh
modules load when a fixture is first used.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugins import PluginHost
    from mesh.testing import Mesh, WatchedUnit
    from mesh.work.unitstore import UnitStore
    from mesh.work.worktype import WorkType

#: The node ID of the ``unit_store`` fixture's store (its directory name).
UNIT_STORE_NODE = "testnode"


@pytest.fixture
def mesh_plugin_manager() -> PluginHost:
    """A plugin host with the kernel's default plugins only: no entry points are loaded."""
    from mesh.plugins import make_plugin_manager

    return make_plugin_manager(entry_points=False)


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., PluginHost]]:
    """``register_plugin(obj, name=None) -> PluginHost``: register a plugin for this test.

    Each call returns a fresh host built without entry points from the kernel's defaults plus
    every plugin registered so far in this test (so two calls can test a clash).  ``name``
    defaults to the object's ``__name__`` (a module's dotted name) or its class name.  A call
    that raises (a duplicate registration, an unknown hook) registers nothing.  At teardown every
    plugin is unregistered from every host handed out.
    """
    from mesh.plugins import make_plugin_manager

    registered: list[tuple[str, object]] = []
    hosts: list[PluginHost] = []

    def register(obj: object, name: str | None = None) -> PluginHost:
        plugin_name = name or getattr(obj, "__name__", None) or type(obj).__name__
        registered.append((plugin_name, obj))
        try:
            host = make_plugin_manager(entry_points=False, extra=list(registered))
        except BaseException:
            registered.pop()
            raise
        hosts.append(host)
        return host

    yield register
    for host in hosts:
        for plugin_name, _ in registered:
            if host.pm.get_plugin(plugin_name) is not None:
                host.pm.unregister(name=plugin_name)
    registered.clear()


@pytest.fixture
def mesh_cluster() -> Iterator[Callable[..., Mesh]]:
    """``mesh_cluster(n=3, topology="line", ...) -> Mesh``: N started nodes on loopback.

    Keyword arguments:

    * ``topology``: ``"line"`` (each node dials the one before it), ``"star"`` (all dial the
      first) or ``"full"`` (every pair is linked).
    * ``names``: node IDs (default ``node1`` ... ``nodeN``).
    * ``sections``: extra config sections per node ID, e.g.
      ``{"node2": [{"work-echo": {"worktype": "echo"}}]}``.
    * ``env``: extra environment variables per node ID.
    * ``plugins``: distributions the nodes load besides mesh's own, e.g.
      ``["mesh-plugin-echo"]`` (``MESH_LOAD_PLUGINS``); ``None`` loads every installed plugin.

    The returned mesh has converged (every node routes to every other) and every node sees every
    other node's control service, so remote work can be submitted at once.  Each call makes a
    separate mesh in its own short scratch directory (Unix socket paths are limited to 108 bytes).
    """
    from mesh.testing import build_cluster, kill_runners, wait_services

    clusters: list[Mesh] = []

    def start(n: int = 3, topology: str = "line", *, names: Iterable[str] | None = None,
              sections: dict[str, Iterable[dict[str, Any]]] | None = None,
              env: dict[str, dict[str, str]] | None = None,
              plugins: Iterable[str] | None = ()) -> Mesh:
        workdir = Path(tempfile.mkdtemp(prefix="mesh-"))
        try:
            cluster = build_cluster(workdir, n, topology, names=names, sections=sections,
                                    env=env, plugins=plugins)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        clusters.append(cluster)
        cluster.start()
        cluster.wait_converged()
        wait_services(cluster, "control")
        return cluster

    yield start
    for cluster in clusters:
        cluster.stop()
        kill_runners(cluster.workdir)
        cluster.cleanup()


@pytest.fixture
def unit_store(tmp_path: Path) -> Iterator[UnitStore]:
    """A unit store under ``tmp_path`` (node ID ``testnode``); runners left in it are killed."""
    from mesh.testing import kill_runners
    from mesh.work.unitstore import UnitStore

    store = UnitStore(tmp_path / "units", UNIT_STORE_NODE)
    yield store
    kill_runners(store.root)


@pytest.fixture
def unit_handle(unit_store: UnitStore) -> Callable[..., WatchedUnit]:
    """``unit_handle(work_type="test", stdin=b"", params=None, node=None) -> WatchedUnit``.

    Creates a Pending unit in ``unit_store`` the way the kernel does before calling
    ``work_type.start(unit)``: the status (with ``work_type.check_params(params)`` as ExtraData
    when a :class:`~mesh.work.worktype.WorkType` is given) and the stdin file.
    """
    from mesh.testing import make_unit

    def make(work_type: WorkType | str = "test", stdin: bytes = b"",
             params: dict[str, str] | None = None, node: Any = None) -> WatchedUnit:
        return make_unit(unit_store, work_type, stdin=stdin, params=params, node=node)

    return make
