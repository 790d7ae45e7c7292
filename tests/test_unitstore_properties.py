"""Property tests for units on disk (mesh.work.unitstore): status files and unit IDs.

Whatever is in a unit's status file, reading it gives a valid UnitStatus or a UnitStoreError;
whatever a client passes as a unit ID, the store refuses it with UnknownUnit before it
touches the filesystem.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.work.states import UnitState
from mesh.work.unitstore import (UnitStatus, UnitStore, UnitStoreError, UnknownUnit,
                                 valid_unit_id)

from json_strategies import PROPS, json_values

FIELDS = ["State", "Detail", "StdoutSize", "WorkType", "ExtraData"]
GO_INT64_MAX = 2 ** 63 - 1

JSON_VALUES = json_values()
#: Values that are right for a field more often than chance would make them.
FIELD_VALUES = st.one_of(st.integers(min_value=-3, max_value=8), JSON_VALUES,
                         st.sampled_from([True, 1.0, "1", 2 ** 63, 2 ** 64, -1, None, ""]))
STATUS_OBJECTS = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), FIELD_VALUES,
                                 max_size=6)
VALID_STATUSES = st.builds(
    UnitStatus,
    state=st.sampled_from(list(UnitState)),
    detail=st.text(alphabet=st.characters(), max_size=30),   # lone surrogates included
    stdout_size=st.integers(min_value=0, max_value=GO_INT64_MAX),
    work_type=st.text(max_size=12),
    extra_data=JSON_VALUES)
UNIT = "abcd1234"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> UnitStore:
    """One store for a module's examples (hypothesis reruns a test body many times)."""
    store = UnitStore(tmp_path_factory.mktemp("props") / "data", "node1")
    (store.root / UNIT).mkdir(parents=True)
    return store


def status_path(store: UnitStore) -> Path:
    return store.root / UNIT / "status"


def read_or_error(store: UnitStore) -> UnitStatus | UnitStoreError:
    try:
        status = store.read(UNIT)
    except UnitStoreError as exc:
        assert f"unit {UNIT}" in str(exc) or isinstance(exc, UnknownUnit), str(exc)
        return exc
    assert_valid(status)
    return status


def assert_valid(status: UnitStatus) -> None:
    assert type(status.state) in (int, UnitState) and status.state in set(UnitState)
    assert isinstance(status.detail, str) and isinstance(status.work_type, str)
    assert type(status.stdout_size) is int and 0 <= status.stdout_size <= GO_INT64_MAX
    json.dumps(status.to_dict())  # can be written back


# -- status file contents -----------------------------------------------------------------

@PROPS
@given(st.binary(max_size=200))
def test_any_status_bytes_read_as_a_valid_status_or_unit_store_error(
        store: UnitStore, data: bytes) -> None:
    status_path(store).write_bytes(data)
    read_or_error(store)


@PROPS
@given(JSON_VALUES)
def test_non_object_json_is_a_unit_store_error(store: UnitStore, value: Any) -> None:
    if isinstance(value, dict):
        return
    status_path(store).write_text(json.dumps(value))
    with pytest.raises(UnitStoreError, match="not a JSON object"):
        store.read(UNIT)


@PROPS
@given(STATUS_OBJECTS)
def test_status_fields_of_any_type_give_a_valid_status_or_unit_store_error(
        store: UnitStore, obj: dict[str, Any]) -> None:
    status_path(store).write_text(json.dumps(obj))
    result = read_or_error(store)
    if isinstance(result, UnitStoreError):
        assert "status file is invalid" in str(result)
        return
    assert result == UnitStatus(obj.get("State", 0), obj.get("Detail", ""),
                                obj.get("StdoutSize", 0), obj.get("WorkType", ""),
                                obj.get("ExtraData"))


@PROPS
@given(VALID_STATUSES)
def test_written_statuses_read_back_equal(store: UnitStore, status: UnitStatus) -> None:
    store.write(UNIT, status)
    assert store.read(UNIT) == status
    assert status_path(store).read_bytes().isascii()


@PROPS
@given(VALID_STATUSES, st.data())
def test_truncated_status_files_are_unit_store_errors(store: UnitStore, status: UnitStatus,
                                                      data: st.DataObject) -> None:
    text = json.dumps(status.to_dict(), separators=(",", ":")).encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    status_path(store).write_bytes(text[:cut])
    with pytest.raises(UnitStoreError, match="status file is invalid"):
        store.read(UNIT)


@pytest.mark.parametrize("content", [
    b"",
    b"\n",
    b"\x00" * 64,
    b"\xff\xfe{\x00}\x00",                                   # UTF-16 with a BOM
    b'{"Detail": "caf\xe9"}',                                # Latin-1, not UTF-8
    b'{"Detail": "\xed\xa0\x80"}',                           # an encoded surrogate
    b'{"State": 1, "Detail": "x"}\x00garbage',
    b'{"State": 1}{"State": 2}',
    b"[" * 200_000,                                          # past the recursion limit
    b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    b'{"State": ' + b"9" * 5000 + b"}",                      # past int's digit limit
    b'{"State": -1}',
    b'{"State": 5}',
    b'{"State": 99}',
    b'{"State": 18446744073709551616}',
    b'{"State": 1.0}',
    b'{"State": NaN}',
    b'{"State": 1, "StdoutSize": Infinity}',
    b'{"State": 1, "StdoutSize": 9223372036854775808}',       # past Go's int64
    b'{"State": 1, "StdoutSize": 1e3}',
    b'{"State": 1, "WorkType": null}',
    b'{"State": 1, "Detail": ["x"]}',
    b"x" * (4 * 1024 * 1024),                                # big garbage
    b'{"State": 1, "Detail": "' + b"y" * (4 * 1024 * 1024),  # big and truncated
])
def test_corrupt_status_files_are_unit_store_errors(store: UnitStore, content: bytes) -> None:
    status_path(store).write_bytes(content)
    with pytest.raises(UnitStoreError, match=f"unit {UNIT}: status file is invalid"):
        store.read(UNIT)
    with pytest.raises(UnitStoreError):
        store.update(UNIT, lambda s: None)
    assert status_path(store).read_bytes() == content  # a failed update changes nothing


def test_big_valid_status_reads(store: UnitStore) -> None:
    status = UnitStatus(UnitState.RUNNING, "d" * (8 * 1024 * 1024), 5, "cat", {"Params": "x"})
    store.write(UNIT, status)
    assert store.read(UNIT) == status


def test_status_that_is_not_a_regular_file(store: UnitStore) -> None:
    path = status_path(store)
    path.unlink(missing_ok=True)
    path.mkdir()
    try:
        with pytest.raises(UnitStoreError, match=f"unit {UNIT}: cannot read status"):
            store.read(UNIT)
    finally:
        path.rmdir()
    path.symlink_to(path.parent / "nowhere")
    try:
        with pytest.raises(UnknownUnit):
            store.read(UNIT)
        assert not store.exists(UNIT) and UNIT not in store.ids()
    finally:
        path.unlink()


# -- unit IDs ---------------------------------------------------------------------------------

def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with file contents (None for directories)."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.join(dirpath, name)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[path] = Path(path).read_bytes()
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, UnitStore]]:
    """A store inside a directory of decoys that hostile IDs might reach."""
    top = tmp_path_factory.mktemp("sandbox")
    store = UnitStore(top / "data", "node1")
    store.root.mkdir(parents=True)
    for decoy in (top / "x", top / "data" / "x", top / "data" / "node1" / "x"):
        decoy.mkdir()
        (decoy / "status").write_text('{"State": 2}')
    (top / "status").write_text('{"State": 2}')
    (top / "data" / "status").write_text('{"State": 2}')
    yield top, store


def assert_refused(store: UnitStore, unit_id: Any) -> None:
    """Every store method refuses ``unit_id`` with UnknownUnit (exists() says False)."""
    assert not valid_unit_id(unit_id)
    assert store.exists(unit_id) is False
    for call in (lambda: store.path(unit_id), lambda: store.read(unit_id),
                 lambda: store.lock(unit_id), lambda: store.stdout_size(unit_id),
                 lambda: store.delete(unit_id), lambda: store.write(unit_id, UnitStatus()),
                 lambda: store.update(unit_id, lambda s: None, check=False)):
        with pytest.raises(UnknownUnit) as info:
            call()
        assert info.value.unit_id == unit_id
        assert str(info.value).startswith("unknown work unit")


HOSTILE_IDS = ["", ".", "..", "../x", "..\\x", "x/..", "a/b", "/", "/etc", "/tmp/x", "x\x00",
               "\x00", "a\x00b", "x" * 65, "x" * 100_000, " abcd1234", "abcd1234 ",
               "abcd1234\n", "abcd-123", "ab.cd", "~", "$HOME", "*", "ａｂｃ", "١٢٣", "ß",
               "\ud800", "x\udcff", None, 5, 1.5, ["x"], {"a": 1}, b"abcd1234"]


@pytest.mark.parametrize("unit_id", HOSTILE_IDS)
def test_hostile_unit_ids_are_refused_before_touching_files(
        sandbox: tuple[Path, UnitStore], unit_id: Any) -> None:
    top, store = sandbox
    before = tree(top)
    assert_refused(store, unit_id)
    assert tree(top) == before


@PROPS
@given(st.text(alphabet=st.characters(), max_size=80)
       | st.text(alphabet=st.sampled_from(list("./\\x\x00~ 1aZ")), max_size=12))
def test_any_text_unit_id_is_valid_or_refused(sandbox: tuple[Path, UnitStore],
                                              unit_id: str) -> None:
    top, store = sandbox
    before = tree(top)
    if valid_unit_id(unit_id):
        assert unit_id.isascii() and unit_id.isalnum() and len(unit_id) <= 64
        assert store.path(unit_id).parent == store.root
    else:
        assert_refused(store, unit_id)
    assert tree(top) == before


@PROPS
@given(st.text(alphabet=st.sampled_from("abcXYZ0189"), min_size=1, max_size=64))
def test_unknown_units_are_unknown_and_leave_nothing_behind(
        sandbox: tuple[Path, UnitStore], unit_id: str) -> None:
    top, store = sandbox
    before = tree(top)
    assert store.exists(unit_id) is False and store.delete(unit_id) is False
    assert store.stdout_size(unit_id) == 0
    for call in (lambda: store.read(unit_id),
                 lambda: store.update(unit_id, lambda s: None, check=False),
                 lambda: store.write(unit_id, UnitStatus())):
        with pytest.raises(UnknownUnit):
            call()
    assert tree(top) == before  # no stray unit directory (or status.lock) was created
