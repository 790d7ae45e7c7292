"""``Workceptor.stats()``: the read-only view of the work manager that the metrics read, and
``Node.plugin_state`` (the objects plugins attach to a node; ``services`` is its old name)."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mesh.work.states import UnitState
from mesh.work.stats import WorkStats
from mesh.work.unitstore import UnitStore
from mesh.work.workceptor import Workceptor


def manager(store: UnitStore) -> Workceptor:
    """A work manager of a node without config sections (not started)."""
    host = SimpleNamespace(node_id=store.root.name, config=SimpleNamespace(one=lambda _: None))
    return Workceptor(host, store, {})  # type: ignore[arg-type]


def unit(store: UnitStore, state: UnitState, stdout: bytes = b"") -> str:
    unit_id = store.create("test")
    (store.path(unit_id) / "stdout").write_bytes(stdout)
    store.update(unit_id, lambda s: setattr(s, "state", state), check=False)
    return unit_id


def test_units_by_state_has_every_state(unit_store: UnitStore) -> None:
    work = manager(unit_store)
    assert work.stats() == WorkStats({state: 0 for state in UnitState}, 0)
    for state in (UnitState.SUCCEEDED, UnitState.SUCCEEDED, UnitState.RUNNING,
                  UnitState.CANCELED):
        unit(unit_store, state)
    broken = unit(unit_store, UnitState.RUNNING)
    (unit_store.path(broken) / "status").write_text("{not json")  # listed as Failed
    stats = work.stats()
    assert stats.units_by_state == {UnitState.PENDING: 0, UnitState.RUNNING: 1,
                                    UnitState.SUCCEEDED: 2, UnitState.FAILED: 1,
                                    UnitState.CANCELED: 1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.results_bytes = 1  # type: ignore[misc]


def test_results_bytes_counts_what_results_streams_sent(unit_store: UnitStore) -> None:
    work = manager(unit_store)
    unit_id = unit(unit_store, UnitState.SUCCEEDED, b"hello world")
    sent: list[bytes] = []

    async def drain() -> None:
        pass

    asyncio.run(work.stream_results(unit_id, 0, sent.append, drain))
    asyncio.run(work.stream_results(unit_id, 6, sent.append, drain))
    assert b"".join(sent) == b"hello worldworld"
    assert work.stats().results_bytes == 16


# -- Node.plugin_state -------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path, mesh_plugin_manager: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A node built in-process (not started) that has not warned about ``services`` yet."""
    from mesh.config.loader import parse_config
    from mesh.node import Node

    monkeypatch.setattr(Node, "_services_warned", False)
    config = parse_config(f"- node:\n    id: state\n    datadir: {tmp_path}\n",
                          mesh_plugin_manager.section_specs(), source="state.yml")
    return Node(config, mesh_plugin_manager)


def test_services_is_plugin_state_and_warns_once(node: Any) -> None:
    node.plugin_state["mine"] = 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert node.services is node.plugin_state
        node.services["other"] = 2
    assert node.plugin_state == {"mine": 1, "other": 2}
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "node.plugin_state" in str(caught[0].message)
    assert caught[0].filename == __file__  # points at the plugin that uses the old name
