"""The helpers ``UnitHandle`` gives every work type, on a real unit store: the owning node's ID,
the final-state guard (``is_final``, ``mark_running``, ``report``, ``finish``, ``fail``,
``succeed``), the notification after each write, and what ``WorkType.restart`` does by
default."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from mesh.work.states import UnitState
from mesh.work.unitstore import UnitStatus, UnitStore
from mesh.work.worktype import UnitHandle, WorkType


@dataclass
class Handle(UnitHandle):
    """A UnitHandle whose ``notify()`` records the state it sees."""

    notified: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.notify = lambda: self.notified.append(self.status().state)


def make(store: UnitStore, state: UnitState = UnitState.PENDING, stdout: bytes = b"") -> Handle:
    """A unit in ``state`` with ``stdout`` written (and no notification yet)."""
    unit_id = store.create("test")
    (store.path(unit_id) / "stdout").write_bytes(stdout)
    if state != UnitState.PENDING:
        store.update(unit_id, lambda s: setattr(s, "state", state), check=False)
    return Handle(unit_id, store)


def set_state(unit: UnitHandle, state: UnitState, detail: str) -> None:
    """What the kernel does on ``work cancel``, or a released unit's end."""
    def change(status: UnitStatus) -> None:
        status.state, status.detail = state, detail

    unit.store.update(unit.unit_id, change, check=False)


# -- node_id ---------------------------------------------------------------------------------


def test_node_id_is_the_owning_nodes(unit_store: UnitStore) -> None:
    """The node whose unit store holds the unit, also when no node is passed (a unit test)."""
    assert make(unit_store).node_id == "testnode"


# -- is_final --------------------------------------------------------------------------------


@pytest.mark.parametrize("state, final", [
    (UnitState.PENDING, False), (UnitState.RUNNING, False), (UnitState.SUCCEEDED, True),
    (UnitState.FAILED, True), (UnitState.CANCELED, True)])
def test_is_final(unit_store: UnitStore, state: UnitState, final: bool) -> None:
    assert make(unit_store, state).is_final() is final


def test_a_released_unit_counts_as_final(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.RUNNING)
    unit_store.delete(unit.unit_id)
    assert unit.is_final()


# -- mark_running ----------------------------------------------------------------------------


def test_mark_running(unit_store: UnitStore) -> None:
    unit = make(unit_store)
    assert unit.mark_running() is True
    assert (unit.status().state, unit.status().detail) == (UnitState.RUNNING, "Running")
    assert unit.mark_running("Running: step 2") is True
    assert unit.status().detail == "Running: step 2"
    assert unit.notified == [UnitState.RUNNING, UnitState.RUNNING]


def test_mark_running_leaves_a_canceled_unit_canceled(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.CANCELED)
    assert unit.mark_running() is False
    assert unit.status().state == UnitState.CANCELED
    assert unit.notified == []


# -- report ----------------------------------------------------------------------------------


def test_report_records_detail_and_stdout_size(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.RUNNING, stdout=b"12345")
    assert unit.report(detail="Running: half done", stdout_size=3) is True
    status = unit.status()
    assert (status.state, status.detail, status.stdout_size) == (UnitState.RUNNING,
                                                                 "Running: half done", 3)
    assert unit.report() is True  # no size given: the stdout file's size now
    assert (unit.status().detail, unit.status().stdout_size) == ("Running: half done", 5)
    assert unit.notified == [UnitState.RUNNING, UnitState.RUNNING]


@pytest.mark.parametrize("state", [UnitState.SUCCEEDED, UnitState.FAILED, UnitState.CANCELED])
def test_report_leaves_a_final_unit_alone(unit_store: UnitStore, state: UnitState) -> None:
    unit = make(unit_store, state, stdout=b"12345")
    before = unit.status()
    assert unit.report(detail="late", stdout_size=99) is False
    assert unit.status() == before
    assert unit.notified == []


def test_report_on_a_released_unit(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.RUNNING)
    unit_store.delete(unit.unit_id)
    assert unit.report(detail="late") is False
    assert not unit_store.exists(unit.unit_id)
    assert not unit_store.path(unit.unit_id).exists()  # no stray lock file either


# -- finish, fail, succeed -------------------------------------------------------------------


@pytest.mark.parametrize("end, state", [("succeed", UnitState.SUCCEEDED),
                                        ("fail", UnitState.FAILED)])
def test_the_final_state_is_recorded_with_the_stdout_size(unit_store: UnitStore, end: str,
                                                          state: UnitState) -> None:
    unit = make(unit_store, UnitState.RUNNING, stdout=b"hello\n")
    assert getattr(unit, end)("Echoed 1 lines") is True
    status = unit.status()
    assert (status.state, status.detail, status.stdout_size) == (state, "Echoed 1 lines", 6)
    assert status.digest is not None and status.digest.size == 6  # the final write hashes
    assert unit.notified == [state]


def test_succeed_without_detail(unit_store: UnitStore) -> None:
    unit = make(unit_store)  # Pending may end at once
    assert unit.succeed() is True
    assert (unit.status().state, unit.status().detail) == (UnitState.SUCCEEDED, "")


@pytest.mark.parametrize("final", [UnitState.SUCCEEDED, UnitState.FAILED, UnitState.CANCELED])
@pytest.mark.parametrize("end", ["fail", "succeed"])
def test_a_final_state_wins(unit_store: UnitStore, final: UnitState, end: str) -> None:
    """A unit canceled (or ended) meanwhile keeps its state, detail and size."""
    unit = make(unit_store, UnitState.RUNNING, stdout=b"abc")
    set_state(unit, final, "first")
    before = unit.status()
    assert getattr(unit, end)("second") is False
    assert unit.status() == before
    assert unit.notified == []


def test_finish_on_a_released_unit(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.RUNNING)
    unit_store.delete(unit.unit_id)
    assert unit.fail("late") is False
    assert unit.succeed() is False
    assert not unit_store.path(unit.unit_id).exists()


@pytest.mark.parametrize("state", [UnitState.PENDING, UnitState.RUNNING, UnitState.CANCELED])
def test_finish_takes_succeeded_or_failed_only(unit_store: UnitStore, state: UnitState) -> None:
    unit = make(unit_store, UnitState.RUNNING)
    with pytest.raises(ValueError, match="SUCCEEDED or FAILED"):
        unit.finish(state, "no")
    assert unit.status().state == UnitState.RUNNING


def test_finish_is_fail_or_succeed(unit_store: UnitStore) -> None:
    failed, succeeded = make(unit_store, UnitState.RUNNING), make(unit_store, UnitState.RUNNING)
    assert failed.finish(UnitState.FAILED, "exit status 1") is True
    assert succeeded.finish(UnitState.SUCCEEDED, "exit status 0") is True
    assert (failed.status().state, failed.status().detail) == (UnitState.FAILED, "exit status 1")
    assert (succeeded.status().state, succeeded.status().detail) == (UnitState.SUCCEEDED,
                                                                     "exit status 0")


# -- the default restart ---------------------------------------------------------------------


class InProcess(WorkType):
    """A work type that cannot re-attach to a unit (it keeps the default ``restart``)."""

    async def start(self, unit: UnitHandle) -> None: ...

    async def cancel(self, unit: UnitHandle) -> None: ...


def test_the_default_restart_fails_the_unit_with_why(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.RUNNING, b"partial")
    asyncio.run(InProcess("inprocess").restart(unit))
    status = unit.status()
    assert (status.state, status.detail) == (UnitState.FAILED,
                                             "Failed to restart: work type cannot re-attach")
    assert status.stdout_size == 7 and unit.notified == [UnitState.FAILED]


def test_the_default_restart_leaves_a_final_unit_alone(unit_store: UnitStore) -> None:
    unit = make(unit_store, UnitState.RUNNING)
    set_state(unit, UnitState.CANCELED, "Canceled")
    asyncio.run(InProcess("inprocess").restart(unit))
    assert (unit.status().state, unit.status().detail) == (UnitState.CANCELED, "Canceled")
