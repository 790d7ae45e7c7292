"""Units on disk (mesh.work.unitstore): files, atomic status writes, the unit lock."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mesh.work.states import TransitionError, UnitState
from mesh.work.unitstore import (
    UNIT_ID_LENGTH,
    UnitStatus,
    UnitStore,
    UnitStoreError,
    UnknownUnit,
    new_unit_id,
    valid_unit_id,
    write_json_atomic,
)

#: Holds the unit's status.lock with a raw flock (as the command runner does) until stdin closes.
HOLD_LOCK = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""

#: Tries the lock without waiting; prints "acquired" or "blocked".
TRY_LOCK = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("acquired")
except BlockingIOError:
    print("blocked")
"""


@pytest.fixture
def store(tmp_path: Path) -> UnitStore:
    return UnitStore(tmp_path / "data", "node1")


def test_unit_ids_are_8_alphanumerics() -> None:
    ids = {new_unit_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[0-9A-Za-z]{8}", i) for i in ids)
    assert UNIT_ID_LENGTH == 8


@pytest.mark.parametrize("unit_id", ["", "../etc", "a/b", "abc def", "x" * 65, "ab.cd"])
def test_invalid_unit_ids(store: UnitStore, unit_id: str) -> None:
    assert not valid_unit_id(unit_id)
    assert not store.exists(unit_id)
    with pytest.raises(UnknownUnit):
        store.path(unit_id)


def test_create_writes_a_pending_status(store: UnitStore) -> None:
    unit_id = store.create("echo", {"Pid": 0, "Params": "-n"})
    unit_dir = store.root / unit_id
    assert valid_unit_id(unit_id) and len(unit_id) == 8
    assert stat.S_IMODE(unit_dir.stat().st_mode) == 0o700
    assert store.exists(unit_id)
    assert store.read(unit_id) == UnitStatus(UnitState.PENDING, "Unit Created", 0, "echo",
                                             {"Pid": 0, "Params": "-n"})
    on_disk = (unit_dir / "status").read_text()
    assert on_disk.endswith("\n")
    assert json.loads(on_disk) == {"State": 0, "Detail": "Unit Created", "StdoutSize": 0,
                                   "WorkType": "echo", "ExtraData": {"Pid": 0, "Params": "-n"}}
    assert stat.S_IMODE((unit_dir / "status").stat().st_mode) == 0o600


def test_create_with_detail(store: UnitStore) -> None:
    unit_id = store.create("remote", detail="Waiting for Input Data")
    assert store.read(unit_id).detail == "Waiting for Input Data"


def test_ids_lists_units_sorted_and_ignores_strays(store: UnitStore) -> None:
    assert store.ids() == []  # no root directory yet
    made = sorted(store.create("echo") for _ in range(5))
    (store.root / "notaunit.txt").write_text("x")
    (store.root / "emptydir").mkdir()  # no status file
    assert store.ids() == made


def test_update_reads_changes_and_writes(store: UnitStore) -> None:
    unit_id = store.create("echo")

    def run(status: UnitStatus) -> None:
        status.state, status.detail, status.stdout_size = UnitState.RUNNING, "Running: PID 1", 5

    new = store.update(unit_id, run)
    assert new == store.read(unit_id)
    assert (new.state, new.detail, new.stdout_size, new.work_type) == (1, "Running: PID 1", 5,
                                                                       "echo")


def test_update_refuses_forbidden_transitions(store: UnitStore) -> None:
    unit_id = store.create("echo")
    store.update(unit_id, lambda s: setattr(s, "state", UnitState.SUCCEEDED))
    before = (store.root / unit_id / "status").read_bytes()
    with pytest.raises(TransitionError):
        store.update(unit_id, lambda s: setattr(s, "state", UnitState.RUNNING))
    assert (store.root / unit_id / "status").read_bytes() == before
    # check=False is the escape hatch for repairs
    store.update(unit_id, lambda s: setattr(s, "state", UnitState.RUNNING), check=False)
    assert store.read(unit_id).state == UnitState.RUNNING


def test_atomic_writes_leave_no_temp_files(store: UnitStore) -> None:
    unit_id = store.create("echo")
    for size in range(50):
        store.update(unit_id, lambda s, n=size: setattr(s, "stdout_size", n))
    assert sorted(os.listdir(store.root / unit_id)) == ["status", "status.lock"]
    assert store.read(unit_id).stdout_size == 49


def test_failed_write_keeps_the_old_status_and_no_temp_file(store: UnitStore) -> None:
    unit_id = store.create("echo")
    path = store.root / unit_id / "status"
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json_atomic(path, {"State": object()})
    assert path.read_bytes() == before
    assert sorted(os.listdir(store.root / unit_id)) == ["status", "status.lock"]


@pytest.mark.parametrize(("content", "why"), [
    ("", "Expecting value"),
    ("{not json", "Expecting property name"),
    ("[1, 2]", "not a JSON object"),
    ('{"State": "1"}', "State is not an integer"),
    ('{"State": true}', "State is not an integer"),
    ('{"State": 1, "StdoutSize": -4}', "StdoutSize"),
    ('{"State": 1, "Detail": 7}', "must be strings"),
])
def test_invalid_status_raises_unitstoreerror(store: UnitStore, content: str, why: str) -> None:
    unit_id = store.create("echo")
    (store.root / unit_id / "status").write_text(content)
    with pytest.raises(UnitStoreError, match=f"unit {unit_id}: status file is invalid:.*{why}"):
        store.read(unit_id)
    with pytest.raises(UnitStoreError):
        store.update(unit_id, lambda s: None)


def test_unknown_unit(store: UnitStore) -> None:
    with pytest.raises(UnknownUnit) as info:
        store.read("abcd1234")
    assert str(info.value) == "unknown work unit abcd1234"
    assert info.value.unit_id == "abcd1234"
    assert isinstance(info.value, UnitStoreError)
    with pytest.raises(UnknownUnit, match="unknown work unit nope0000"):
        store.update("nope0000", lambda s: None)


def test_missing_fields_take_defaults(store: UnitStore) -> None:
    unit_id = store.create("echo")
    (store.root / unit_id / "status").write_text('{"State": 1}')
    assert store.read(unit_id) == UnitStatus(UnitState.RUNNING, "", 0, "", None)


def test_stdout_size(store: UnitStore) -> None:
    unit_id = store.create("echo")
    assert store.stdout_size(unit_id) == 0
    (store.root / unit_id / "stdout").write_bytes(b"x" * 1234)
    assert store.stdout_size(unit_id) == 1234


def test_delete(store: UnitStore) -> None:
    unit_id = store.create("echo")
    (store.root / unit_id / "stdout").write_bytes(b"data")
    assert store.delete(unit_id) is True
    assert not (store.root / unit_id).exists()
    assert not store.exists(unit_id)
    assert store.delete(unit_id) is False
    with pytest.raises(UnknownUnit):
        store.read(unit_id)


def test_store_lock_excludes_a_raw_flock_holder(store: UnitStore) -> None:
    unit_id = store.create("echo")
    lock_path = str(store.root / unit_id / "status.lock")
    with store.lock(unit_id):
        other = subprocess.run([sys.executable, "-c", TRY_LOCK, lock_path], capture_output=True,
                               text=True, timeout=30)
        assert other.stdout.strip() == "blocked"
    other = subprocess.run([sys.executable, "-c", TRY_LOCK, lock_path], capture_output=True,
                           text=True, timeout=30)
    assert other.stdout.strip() == "acquired"


def test_update_waits_for_a_concurrent_writer(store: UnitStore) -> None:
    unit_id = store.create("echo")
    lock_path = str(store.root / unit_id / "status.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, lock_path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"
        done = threading.Event()

        def writer() -> None:
            store.update(unit_id, lambda s: setattr(s, "detail", "after the holder"))
            done.set()

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        assert not done.wait(0.5), "update ran while another process held the unit lock"
        assert store.read(unit_id).detail == "Unit Created"
        holder.stdin.close()  # the holder exits and its flock goes away
        assert done.wait(15), "update did not run after the lock was released"
        thread.join(5)
        assert store.read(unit_id).detail == "after the holder"
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(10)
