"""Units on disk: ``{datadir}/{node}/{unit}/status|stdin|stdout`` plus ``status.lock``.

Every read-modify-write of ``status`` holds the unit's file lock.  The write that makes a
unit final (Succeeded, Failed, Canceled) replaces the file atomically (temp file, fsync,
rename).  The others overwrite it in place with one ``pwrite`` when the new JSON fits in the
file (it is padded with spaces to the file's size, which JSON allows): on ext4, renaming
over a file flushes the new file's data first (``auto_da_alloc``), which made each of the
dozen status writes of a small job cost about a millisecond, against microseconds in place.
A single write to a regular file cannot be half done by a process crash, and after an OS
crash a unit that was not final is failed at restart anyway.  A file written by replacement
gets :data:`STATUS_SLACK` spaces of room for the writes that follow.  Readers take no lock:
a read counts when the next read returns the same bytes (one that overlapped an in-place
write is read again).  A remote unit's mirrored final state is written in place too (see
``mesh.work.remote``): the remote node holds the durable copy.

The write that makes a unit final also records the size and SHA-256 of its stdout
(``StdoutFinalSize``, ``StdoutSHA256``; see :mod:`mesh.work.stdout_digest`) unless the
writer recorded them already: inline up to ``INLINE_MAX`` bytes, else the work manager calls
:meth:`UnitStore.record_digest` from a thread.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import string
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable


from mesh.work.states import FINAL, UnitState, check_transition
from mesh.work.unit_lock import UnitLock

if TYPE_CHECKING:  # pragma: no cover
    from mesh.work.stdout_digest import Digest

UNIT_ID_ALPHABET = string.ascii_letters + string.digits
UNIT_ID_LENGTH = 8
#: Unit IDs come from the OS's random source (``secrets`` would load OpenSSL for hmac).
_RANDOM = random.SystemRandom()
#: Go reads StdoutSize into an int64.
MAX_STDOUT_SIZE = 2 ** 63 - 1
_STATES = frozenset(int(s) for s in UnitState)


class UnitStoreError(Exception):
    """A unit's files are missing or unreadable; the message names the unit and the file."""


class UnknownUnit(UnitStoreError):
    """No such unit (``unknown work unit <id>``)."""

    def __init__(self, unit_id: str) -> None:
        super().__init__(f"unknown work unit {unit_id}")
        self.unit_id = unit_id


def new_unit_id() -> str:
    return "".join(_RANDOM.choice(UNIT_ID_ALPHABET) for _ in range(UNIT_ID_LENGTH))


def valid_unit_id(unit_id: object) -> bool:
    """1 to 64 ASCII letters and digits (anything else, of any type, is not a unit ID)."""
    return isinstance(unit_id, str) and 0 < len(unit_id) <= 64 and \
        all(c in UNIT_ID_ALPHABET for c in unit_id)


@dataclass
class UnitStatus:
    """The ``status`` file, with Receptor's field names on disk."""

    state: int = UnitState.PENDING
    detail: str = ""
    stdout_size: int = 0
    work_type: str = ""
    extra_data: Any = None
    #: Size and SHA-256 of the complete stdout, recorded when the unit became final
    #: (``StdoutFinalSize`` and ``StdoutSHA256``, see :mod:`mesh.work.stdout_digest`).
    digest: "Digest | None" = None

    def to_dict(self) -> dict[str, Any]:
        data = {"State": int(self.state), "Detail": self.detail, "StdoutSize": self.stdout_size,
                "WorkType": self.work_type, "ExtraData": self.extra_data}
        if self.digest is not None:
            data["StdoutFinalSize"], data["StdoutSHA256"] = self.digest.size, self.digest.sha256
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "UnitStatus":
        if not isinstance(data, dict):
            raise ValueError("status is not a JSON object")
        state, size = data.get("State", 0), data.get("StdoutSize", 0)
        detail, work_type = data.get("Detail", ""), data.get("WorkType", "")
        if not isinstance(state, int) or isinstance(state, bool):
            raise ValueError("State is not an integer")
        if state not in _STATES:
            raise ValueError(f"State {state} is not a unit state (0 to 4)")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_STDOUT_SIZE:
            raise ValueError("StdoutSize is not a non-negative 64-bit integer")
        if not isinstance(detail, str) or not isinstance(work_type, str):
            raise ValueError("Detail and WorkType must be strings")
        digest = None
        if "StdoutSHA256" in data:  # a final status of a mesh node: a Receptor one has none
            from mesh.work.stdout_digest import recorded

            digest = recorded(data)
        return cls(state, detail, size, work_type, data.get("ExtraData"), digest)


#: Spaces written after the JSON when a status file is replaced, so that the next writes (a
#: growing StdoutSize, another Detail) fit in place.
STATUS_SLACK = 128
#: How often a reader reads a status file again that it found invalid (an in-place write
#: may have been half copied at that instant).
READ_ATTEMPTS = 3


def write_json_atomic(path: Path, data: Any, *, durable: bool = True, slack: int = 0) -> None:
    """Replace ``path`` with ``data`` as JSON (and ``slack`` spaces): temp file, fsync (if
    ``durable``), rename."""
    _replace(path, _encode(data), durable=durable, slack=slack)


def _encode(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _replace(path: Path, encoded: bytes, *, durable: bool, slack: int) -> None:
    # the PID in the name lets a sweep at start tell a live writer's file from debris
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".status.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encoded + b" " * slack + b"\n")
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)  # mkstemp made it 0600
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_status(path: Path, data: Any, *, durable: bool) -> None:
    """Write a status file: in place if not ``durable`` and the JSON fits, else by atomic
    replacement (see the module docstring).  The caller holds the unit's lock."""
    encoded = _encode(data)
    if not durable and _overwrite(path, encoded):
        return
    _replace(path, encoded, durable=durable, slack=STATUS_SLACK)


def _overwrite(path: Path, encoded: bytes) -> bool:
    """Write ``encoded`` over ``path``, padded to its size, in one ``pwrite``; False (nothing
    written) if the file is missing or too small."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        room = os.fstat(fd).st_size - 1
        if len(encoded) > room:
            return False
        padded = encoded + b" " * (room - len(encoded)) + b"\n"
        return os.pwrite(fd, padded, 0) == len(padded)
    finally:
        os.close(fd)


def _identity(path: Path) -> tuple[int, int, int] | None:
    """(size, mtime in ns, inode) of a file, None if it is missing: changes when it does."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _writer_alive(temp_name: str) -> bool:
    """Whether the process that made the temp status file ``.status.PID.*.tmp`` still runs
    (and so may be between writing and renaming it).  Every writer names its temp files so:
    :func:`write_json_atomic` here and the command runner.  This process itself writes
    nothing while the store is swept."""
    parts = temp_name.split(".")
    if len(parts) < 5 or not parts[2].isdigit() or int(parts[2]) == os.getpid():
        return False
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, but not ours to signal
    return True


class UnitStore:
    """All units of one node under ``{datadir}/{node_id}``."""

    def __init__(self, datadir: Path, node_id: str) -> None:
        self.root = Path(datadir) / node_id

    def path(self, unit_id: str) -> Path:
        """The unit's directory; UnknownUnit for anything that is not a unit ID."""
        if not valid_unit_id(unit_id):
            raise UnknownUnit(unit_id)
        return self.root / unit_id

    def lock(self, unit_id: str) -> UnitLock:
        """The unit's file lock; UnknownUnit if the unit directory does not exist (so that
        locking a released unit leaves no stray lock file behind)."""
        path = self.path(unit_id)
        if not path.is_dir():
            raise UnknownUnit(unit_id)
        return UnitLock(str(path / "status.lock"), timeout=30)

    def create(self, work_type: str, extra_data: Any = None, *, detail: str = "Unit Created",
               ) -> str:
        """Make a new unit directory with a Pending status; returns its ID.

        Raises :class:`UnitStoreError` (naming the directory and the cause, e.g. a full
        disk) and leaves no half-made unit directory behind.
        """
        unit_id = ""
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            while not unit_id:
                try:
                    (self.root / (candidate := new_unit_id())).mkdir(mode=0o700)
                    unit_id = candidate
                except FileExistsError:
                    continue
            self.write(unit_id, UnitStatus(UnitState.PENDING, detail, 0, work_type, extra_data))
        except OSError as exc:
            if unit_id:
                shutil.rmtree(self.root / unit_id, ignore_errors=True)
            raise UnitStoreError(f"cannot create a unit in {self.root}: "
                                 f"{exc.strerror or exc}") from None
        return unit_id

    def exists(self, unit_id: str) -> bool:
        return valid_unit_id(unit_id) and (self.root / unit_id / "status").exists()

    def ids(self) -> list[str]:
        """Every unit directory that holds a status file, sorted."""
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if valid_unit_id(p.name) and (p / "status").exists())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise UnitStoreError(f"cannot list units in {self.root}: {exc}") from None

    def sweep_debris(self) -> list[str]:
        """Remove what a kill can leave behind; returns what was removed (for the log).

        A node killed between making a unit directory and writing its first status leaves a
        directory no command can reach, and one killed mid-write leaves a ``.status.*.tmp``
        file.  Called at node start, when no unit is being created.
        """
        removed: list[str] = []
        try:
            entries = [p for p in self.root.iterdir() if valid_unit_id(p.name) and p.is_dir()]
        except OSError:
            return removed
        for unit_dir in entries:
            if not (unit_dir / "status").exists():
                shutil.rmtree(unit_dir, ignore_errors=True)
                removed.append(unit_dir.name)
                continue
            for tmp in unit_dir.glob(".status.*.tmp"):
                if _writer_alive(tmp.name):
                    continue
                try:
                    tmp.unlink()
                    removed.append(f"{unit_dir.name}/{tmp.name}")
                except OSError:
                    pass
        return removed

    def read(self, unit_id: str) -> UnitStatus:
        """The unit's status: UnknownUnit if it has none, UnitStoreError if it is unreadable
        or not a valid status (whatever the file holds)."""
        path = self.path(unit_id) / "status"
        for attempt in range(READ_ATTEMPTS):
            try:
                data = path.read_bytes()
                # a read that overlapped an in-place write may even be valid JSON: only two
                # equal reads in a row count
                for _ in range(READ_ATTEMPTS):
                    again = path.read_bytes()
                    if again == data:
                        break
                    data = again
            except FileNotFoundError:
                raise UnknownUnit(unit_id) from None
            except OSError as exc:
                raise UnitStoreError(f"unit {unit_id}: cannot read status: {exc}") from None
            try:
                return UnitStatus.from_dict(json.loads(data.decode("utf-8")))
            except RecursionError:
                raise UnitStoreError(f"unit {unit_id}: status file is invalid: "
                                     f"nested too deeply") from None
            except ValueError as exc:  # bad UTF-8, bad JSON, bad fields, too many digits
                if attempt == READ_ATTEMPTS - 1:
                    raise UnitStoreError(f"unit {unit_id}: status file is invalid: "
                                         f"{exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def write(self, unit_id: str, status: UnitStatus) -> None:
        with self.lock(unit_id):
            write_status(self.path(unit_id) / "status", status.to_dict(),
                         durable=status.state in FINAL)

    def update(self, unit_id: str, change: Callable[[UnitStatus], None], *,
               check: bool = True, durable: bool | None = None) -> UnitStatus:
        """Read, change and write the status under the unit's lock; returns the new status.

        With ``check`` the change must be an allowed state transition (else TransitionError).
        ``durable`` (default: when the change makes the unit final) fsyncs the write.
        """
        with self.lock(unit_id):
            status = self.read(unit_id)
            old_state = status.state
            before = copy.deepcopy(status.to_dict())  # change() may mutate ExtraData in place
            change(status)
            if check:
                check_transition(old_state, status.state)
            if status.state in FINAL and status.digest is None:
                status.digest = self._inline_digest(unit_id)
            after = status.to_dict()
            if after != before:  # followers re-read on every notify: skip no-op rewrites
                if durable is None:
                    durable = status.state != old_state and status.state in FINAL
                write_status(self.path(unit_id) / "status", after, durable=durable)
            return status

    def _inline_digest(self, unit_id: str) -> "Digest | None":
        """The stdout digest recorded with a final state, if stdout is small enough to hash
        inline (the work manager records a larger one from a thread, see
        :meth:`record_digest`)."""
        from mesh.work.stdout_digest import INLINE_MAX, file_digest

        path = self.path(unit_id) / "stdout"
        if self.stdout_size(unit_id) > INLINE_MAX:
            return None
        return file_digest(path)

    def record_digest(self, unit_id: str) -> bool:
        """Hash the stdout of a final unit that has no digest yet and record it.  Slow for a
        large stdout: called from a thread, without the unit's lock while hashing.  False
        (nothing recorded: call again) if the status or stdout changed meanwhile, e.g. the
        unit was stopped at ``maxstdout`` and its stdout cut; True when done or not needed."""
        from mesh.work.stdout_digest import file_digest

        status = self.read(unit_id)
        if status.state not in FINAL or status.digest is not None:
            return True
        path = self.path(unit_id) / "stdout"
        before = _identity(path)
        digest = file_digest(path)
        fresh = True

        def change(current: UnitStatus) -> None:
            nonlocal fresh
            if current.digest is not None:
                return
            if _identity(path) != before or (current.state, current.detail, current.stdout_size) \
                    != (status.state, status.detail, status.stdout_size):
                fresh = False
                return
            current.digest = digest

        self.update(unit_id, change, check=False, durable=True)
        return fresh

    def changed_at(self, unit_id: str) -> float:
        """When the unit's status last changed (its file's mtime, wall clock): the age that
        ``unit-lifecycle`` and ``work release-matching`` go by.  OSError if it has none."""
        return (self.path(unit_id) / "status").stat().st_mtime

    def stdout_size(self, unit_id: str) -> int:
        try:
            return (self.path(unit_id) / "stdout").stat().st_size
        except FileNotFoundError:
            return 0

    def delete(self, unit_id: str) -> bool:
        """Remove the unit directory; returns False if it did not exist."""
        path = self.path(unit_id)
        if not path.exists():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
