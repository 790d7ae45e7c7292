"""The work manager: creates, starts, follows, cancels and releases units.

Local units are run by their work type (a plugin); units for another node are ``remote``
units driven by :mod:`mesh.work.remote`.  All state lives on disk in the unit store; the
in-memory parts (watchers, background tasks) are rebuilt by :meth:`Workceptor.start`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

import structlog

from mesh.tasks import DueTimer, cancel_and_wait
from mesh.work.remote import RemoteWork
from mesh.work.remote_host import RemoteNode
from mesh.work.states import FINAL, UnitState, state_name
from mesh.work.unitstore import UnitStatus, UnitStore, UnitStoreError, UnknownUnit
from mesh.work.worktype import UnitHandle, WorkError, WorkType

if TYPE_CHECKING:  # pragma: no cover
    from mesh.config.loader import LoadedConfig
    from mesh.net.messages import WorkCommand
    from mesh.work.stats import WorkStats
    from mesh.work.stdout_digest import Digest

log = structlog.get_logger(__name__)

REMOTE = "remote"
#: How often followers re-check a unit when nobody notified them.
FOLLOW_POLL = 0.25
#: While units are not final, how often the manager looks for state changes that nobody
#: notified (to report them through the lifecycle hook).
WATCH_POLL = 1.0
CHUNK = 1024 * 1024
#: Threads hashing large stdouts at once, and how often one unit is hashed again when its
#: status or stdout changed while it was hashed.
DIGEST_THREADS, DIGEST_ATTEMPTS = 2, 3


class PayloadRejected(WorkError):
    """A payload the node will not keep: over ``maxpayload``, or the disk is full."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        #: Bytes read from the client when the payload was rejected.
        self.received = received


def redact(status: UnitStatus) -> dict[str, Any]:
    """The status object of control replies: the file's fields plus StateName, secrets hidden."""
    data = status.to_dict()
    data["StateName"] = state_name(status.state)
    extra = data.get("ExtraData")
    if isinstance(extra, dict) and isinstance(extra.get("RemoteParams"), dict):
        extra = dict(extra)
        extra["RemoteParams"] = {k: v for k, v in extra["RemoteParams"].items()
                                 if not k.lower().startswith("secret_")}
        data["ExtraData"] = extra
    return data


class WorkHost(RemoteNode, Protocol):
    """The node as the work manager uses it (a :class:`mesh.node.Node`): its config (the
    ``unit-lifecycle`` and ``work-limits`` sections), and what remote work needs of it."""

    @property
    def config(self) -> LoadedConfig:
        """The node's loaded config."""


class Workceptor:
    """All work units of one node."""

    def __init__(self, node: WorkHost, store: UnitStore, work_types: dict[str, WorkType], *,
                 on_state_changed: Callable[[str, int, str], None] | None = None) -> None:
        self.node = node
        self.store = store
        self.work_types = work_types
        #: Called with (unit_id, state, detail) when a unit's state or Detail changes.
        self._on_state_changed = on_state_changed
        #: Bytes of work results streamed to clients (:meth:`stream_results`).
        self._results_bytes = 0
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._known_states: dict[str, tuple[int, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch_task: asyncio.Task[None] | None = None
        #: When the watch (:meth:`_watch`) next has something to do.
        self._due = DueTimer()
        #: The node's ``unit-lifecycle`` section (retention, pendingttl), if any.
        self.lifecycle = node.config.one("unit-lifecycle")
        #: Wall-clock time at which a unit next falls under a lifecycle policy.
        self._lifecycle_due = 0.0
        #: Final units whose digest a thread is computing (and those to hash once more);
        #: units being stopped at maxstdout.
        self._digesting: set[str] = set()
        self._digest_again: set[str] = set()
        self._digest_slots = asyncio.Semaphore(DIGEST_THREADS)
        self._over_limit: set[str] = set()
        self.remote = RemoteWork(self)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile every unit on disk with reality, then watch for state changes."""
        debris = self.store.sweep_debris()
        if debris:
            log.info("datadir_debris_removed", node_id=self.node.node_id, removed=debris)
        for unit_id in self.store.ids():
            try:
                await self._reconcile(unit_id)
            except Exception as exc:  # one broken unit must not stop the node
                log.error("unit_reconcile_failed", node_id=self.node.node_id, unit_id=unit_id,
                          error=str(exc))
        self._watch_task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        self.remote.close()
        await cancel_and_wait([*self._tasks, self._watch_task])

    async def _reconcile(self, unit_id: str) -> None:
        status = self.store.read(unit_id)
        if status.state not in FINAL:
            self.track(unit_id, status.state, status.detail)
        if status.work_type == REMOTE:
            self.remote.resume(unit_id, status)
            return
        if status.state in FINAL:
            return
        work_type = self.work_types.get(status.work_type)
        if status.state == UnitState.PENDING:
            self.handle(unit_id).update(lambda s: _set(s, UnitState.FAILED, "Pending at restart"))
            return
        if work_type is None:
            self.handle(unit_id).update(lambda s: _set(
                s, UnitState.FAILED, f"Failed to restart: work type {status.work_type!r} is "
                                     f"not configured on this node"))
            return
        await work_type.restart(self.handle(unit_id))

    def spawn(self, coro: Awaitable[Any], name: str, *, unit_id: str | None = None,
              peer: str | None = None) -> asyncio.Task[Any]:
        """Run a background task owned by the manager (cancelled at shutdown); ``unit_id``
        and ``peer`` say what it works on, for the log event if it dies."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        context = {k: v for k, v in (("unit_id", unit_id), ("peer", peer)) if v}
        task.add_done_callback(lambda done: self._task_done(done, context))
        return task

    def _task_done(self, task: asyncio.Task[Any], context: dict[str, str]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # a background task that dies must say so (a remote unit would stop being
            # followed without a trace otherwise)
            exc = task.exception()
            log.error("work_task_failed", node_id=self.node.node_id, task=task.get_name(),
                      error=f"{type(exc).__name__}: {exc}", **context,
                      exc_info=(type(exc), exc, exc.__traceback__))

    def track(self, unit_id: str, state: int, detail: str) -> None:
        """Note a new unit's first state, so its changes are logged and reported through
        ``mesh_unit_state_changed`` from the start (until it is final)."""
        self._known_states[unit_id] = (state, detail)
        self.wake_in(WATCH_POLL)
        if state == UnitState.PENDING:
            self._lifecycle_in(getattr(self.lifecycle, "pendingttl", None))

    def wake_in(self, delay: float) -> None:
        """Have the watch (:meth:`_watch`) run within ``delay`` seconds."""
        self._due.request(delay)

    def _lifecycle_in(self, delay: float | None) -> None:
        """A unit falls under a lifecycle policy in ``delay`` seconds (None: never)."""
        if delay is not None:
            self._lifecycle_due = min(self._lifecycle_due, time.time() + delay)
            self.wake_in(delay)

    async def _watch(self) -> None:
        """The manager's upkeep, each part when it is due and nothing while none is: report
        state changes of units that are not final and that nobody notified (every WATCH_POLL
        while there are such units), close pooled control sessions left idle, and apply the
        unit-lifecycle policies when a unit falls under them."""
        if self.lifecycle is not None:
            self.wake_in(0.0)
        while True:
            await self._due.wait()
            try:
                next_sweep = self.remote.sessions.sweep()
                if next_sweep is not None:
                    self.wake_in(next_sweep)
            except Exception:  # must not stop the state watch
                log.exception("control_session_sweep_failed", node_id=self.node.node_id)
            for unit_id in list(self._known_states):
                self._check_state(unit_id)
            if self._known_states:
                self.wake_in(WATCH_POLL)
            if self.lifecycle is not None:
                await self._lifecycle_upkeep()

    async def _lifecycle_upkeep(self) -> None:
        """Apply the lifecycle policies if a unit falls under one now; wake for the next."""
        now = time.time()
        if now >= self._lifecycle_due:
            # units that change during the scan pull _lifecycle_due earlier again
            self._lifecycle_due = float("inf")
            try:
                next_due = await self._apply_lifecycle(now)
            except Exception:  # must not stop the state watch
                log.exception("unit_lifecycle_failed", node_id=self.node.node_id)
                next_due = now + WATCH_POLL
            self._lifecycle_due = min(self._lifecycle_due, next_due)
        if self._lifecycle_due != float("inf"):  # (also when woken a little early)
            self.wake_in(max(0.0, self._lifecycle_due - time.time()))

    async def _apply_lifecycle(self, now: float) -> float:
        """Fail units Pending longer than ``pendingttl``; release finished units older than
        ``retention`` (both measured from the status file's last change).  Returns when the
        next unit falls under a policy (wall clock; infinity for never)."""
        policy = self.lifecycle
        next_due = float("inf")
        for unit_id in self.store.ids():
            try:
                status = self.store.read(unit_id)
                changed = self.store.changed_at(unit_id)
            except (UnitStoreError, OSError):
                continue
            age = now - changed
            limit = policy.retention if status.state in FINAL else (
                policy.pendingttl if status.state == UnitState.PENDING else None)
            if limit is not None and age < limit:
                next_due = min(next_due, changed + limit)
            if status.state in FINAL and policy.retention is not None \
                    and age >= policy.retention:
                log.info("unit_retention_release", node_id=self.node.node_id, unit_id=unit_id,
                         age=round(age, 1))
                try:
                    await self.release(unit_id)
                except WorkError as exc:
                    log.warning("unit_retention_release_failed", node_id=self.node.node_id,
                                unit_id=unit_id, error=str(exc))
            elif status.state == UnitState.PENDING and policy.pendingttl is not None \
                    and age >= policy.pendingttl:
                self.fail(unit_id, f"Expired: not started within {policy.pendingttl:g}s "
                                   f"(unit-lifecycle pendingttl)")
        return next_due

    def _check_state(self, unit_id: str) -> None:
        try:
            status = self.store.read(unit_id)
        except UnitStoreError:
            self._known_states.pop(unit_id, None)
            return
        current = (status.state, status.detail)
        self._check_stdout_limit(unit_id, status)
        if self._known_states.get(unit_id) != current:
            self._known_states[unit_id] = current
            log.info("unit_state_changed", node_id=self.node.node_id, unit_id=unit_id,
                     state=state_name(status.state), detail=status.detail)
            if self._on_state_changed is not None:
                self._on_state_changed(unit_id, status.state, status.detail)
        if status.state in FINAL:  # a final state never changes: stop watching it
            self._known_states.pop(unit_id, None)
            self._lifecycle_in(getattr(self.lifecycle, "retention", None))
            if status.digest is None:
                self._record_digest(unit_id)

    def _record_digest(self, unit_id: str) -> None:
        """Record the digest of a unit that became final with too large a stdout to hash
        inline, from a thread (see :mod:`mesh.work.stdout_digest`); asked again while it
        runs (the stdout was cut meanwhile), it hashes again."""
        if unit_id in self._digesting:
            self._digest_again.add(unit_id)
            return
        self._digesting.add(unit_id)

        async def record() -> None:
            try:
                async with self._digest_slots:
                    for _ in range(DIGEST_ATTEMPTS):
                        self._digest_again.discard(unit_id)
                        done = await asyncio.to_thread(self.store.record_digest, unit_id)
                        if done and unit_id not in self._digest_again:
                            break
            except (UnitStoreError, OSError):
                pass  # released meanwhile
            finally:
                self._digesting.discard(unit_id)
                self._digest_again.discard(unit_id)
            self.notify(unit_id, status_changed=False)

        self.spawn(record(), f"digest-{unit_id}", unit_id=unit_id)

    # -- work-limits maxstdout -----------------------------------------------------------

    @property
    def max_stdout(self) -> int | None:
        """The ``work-limits`` section's ``maxstdout`` in bytes, or None for no limit."""
        return self._work_limit("maxstdout")

    def _work_limit(self, key: str) -> int | None:
        """A key of the ``work-limits`` section (None without the section)."""
        limits = self.node.config.one("work-limits")
        return getattr(limits, key) if limits is not None else None

    def _check_stdout_limit(self, unit_id: str, status: UnitStatus) -> None:
        """Stop a unit whose stdout outgrew ``maxstdout``, for work types that do not stop
        their units at the limit themselves (the command runner does, within 20 ms while
        stdout grows); checked every WATCH_POLL and on each notify while the unit runs, and
        when it becomes final (a unit that ended over the limit is Failed all the same)."""
        limit = self.max_stdout
        work_type = self.work_types.get(status.work_type)
        if limit is None or work_type is None or work_type.stops_at_max_stdout \
                or unit_id in self._over_limit or self.store.stdout_size(unit_id) <= limit:
            return
        self._over_limit.add(unit_id)

        async def stop() -> None:
            try:
                if status.state not in FINAL:
                    await work_type.cancel(self.handle(unit_id))
                os.truncate(self.store.path(unit_id) / "stdout", limit)
                failed = self.handle(unit_id).update(lambda s: _set_size(
                    s, UnitState.FAILED, stdout_limit_detail(limit), limit), check=False)
                if failed.digest is None:
                    self._record_digest(unit_id)
            except (UnitStoreError, OSError):
                pass  # released meanwhile
            finally:
                self._over_limit.discard(unit_id)

        log.warning("unit_stdout_limit", node_id=self.node.node_id, unit_id=unit_id,
                    limit=limit)
        self.spawn(stop(), f"stdout-limit-{unit_id}", unit_id=unit_id)

    # -- notifications -----------------------------------------------------------------

    def notify(self, unit_id: str, *, status_changed: bool = True) -> None:
        """Wake everything following ``unit_id`` (its files changed); ``status_changed``
        False when only its stdout grew (no state change to log)."""
        for waiter in self._waiters.pop(unit_id, []):
            if not waiter.done():
                waiter.set_result(None)
        if status_changed and unit_id in self._known_states:
            self._check_state(unit_id)

    async def wait_change(self, unit_id: str, timeout: float = FOLLOW_POLL) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(unit_id, []).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except asyncio.TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(unit_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)

    def handle(self, unit_id: str, params: dict[str, str] | None = None) -> UnitHandle:
        return UnitHandle(unit_id, self.store, params or {},
                          notify=lambda: self.notify(unit_id), node=self.node)

    # -- queries -----------------------------------------------------------------------

    def work_commands(self) -> "list[WorkCommand] | None":
        """The work types this node advertises (Receptor's WorkCommands, minus ``remote``)."""
        from mesh.net.messages import WorkCommand

        if not self.work_types:
            return None
        return [WorkCommand(name, wt.verify_signature)
                for name, wt in sorted(self.work_types.items())]

    def status(self, unit_id: str) -> UnitStatus:
        return self.store.read(unit_id)

    def list(self, unit_id: str | None = None) -> dict[str, Any]:
        if unit_id:
            return {unit_id: redact(self.store.read(unit_id))}
        out = {}
        for uid in self.store.ids():
            try:
                out[uid] = redact(self.store.read(uid))
            except UnitStoreError as exc:
                out[uid] = {"State": UnitState.FAILED, "StateName": "Failed",
                            "Detail": str(exc), "StdoutSize": 0, "WorkType": "",
                            "ExtraData": None}
        return out

    def stats(self) -> WorkStats:
        """The units by state and the bytes of results streamed (for the metrics)."""
        from mesh.work.stats import WorkStats  # when first asked: see mesh.work.stats

        counts = {state: 0 for state in UnitState}
        for unit in self.list().values():
            try:
                counts[UnitState(unit["State"])] += 1
            except (ValueError, KeyError):
                pass
        return WorkStats(units_by_state=counts, results_bytes=self._results_bytes)

    def is_local(self, node: str) -> bool:
        return node.lower() in ("localhost", self.node.node_id.lower())

    # -- local units -------------------------------------------------------------------

    def create_local(self, work_type_name: str, params: dict[str, str]) -> str:
        work_type = self.work_types.get(work_type_name)
        if work_type is None:
            raise WorkError(f"unknown work type {work_type_name}")
        extra = work_type.check_params(params)
        unit_id = self.store.create(work_type_name, extra, detail="Waiting for Input Data")
        self.track(unit_id, UnitState.PENDING, "Waiting for Input Data")
        return unit_id

    @property
    def max_payload(self) -> int | None:
        """The ``work-limits`` section's ``maxpayload`` in bytes, or None for no limit."""
        return self._work_limit("maxpayload")

    async def receive_payload(self, unit_id: str, read: Callable[[int], Awaitable[bytes]],
                              ) -> int:
        """Copy the client's payload into the unit's stdin file until EOF; returns its size.

        Raises :class:`PayloadRejected` when the payload exceeds ``maxpayload`` or cannot be
        stored (a full disk); the partial stdin is then truncated so it takes no space, and
        the caller fails the unit.  Errors of ``read`` (the client) propagate unchanged.
        """
        size, limit = 0, self.max_payload
        path = self.store.path(unit_id) / "stdin"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            raise PayloadRejected(f"cannot store the payload of unit {unit_id}: "
                                  f"{exc.strerror or exc}", 0) from None
        try:
            while chunk := await read(CHUNK):
                size += len(chunk)
                if limit is not None and size > limit:
                    raise PayloadRejected(f"payload larger than the limit of {limit} bytes "
                                          f"(work-limits maxpayload)", size)
                try:
                    _write_all(fd, chunk)
                except OSError as exc:
                    raise PayloadRejected(f"cannot store the payload of unit {unit_id}: "
                                          f"{exc.strerror or exc}", size) from None
        except PayloadRejected:
            os.ftruncate(fd, 0)
            raise
        finally:
            os.close(fd)
        return size

    async def start_local(self, unit_id: str, params: dict[str, str]) -> None:
        status = self.store.read(unit_id)
        if status.state in FINAL:
            raise WorkError(f"unit {unit_id} ended before it started: {status.detail}")
        work_type = self.work_types[status.work_type]
        handle = self.handle(unit_id, params)
        handle.update(lambda s: _set(s, UnitState.PENDING, "Starting Worker"))
        try:
            await work_type.start(handle)
        except Exception as exc:
            detail = f"Error starting worker: {exc}"
            handle.update(lambda s: _set(s, UnitState.FAILED, detail), check=False)
            raise WorkError(f"error starting worker: {exc}") from None

    def fail(self, unit_id: str, detail: str) -> None:
        """Mark the unit Failed with ``detail`` (logged as ``unit_state_changed`` like every
        change); a status that cannot be written (a full disk) is logged here."""
        try:
            self.handle(unit_id).update(lambda s: _set(s, UnitState.FAILED, detail), check=False)
        except (UnitStoreError, OSError) as exc:
            log.error("unit_fail_not_recorded", node_id=self.node.node_id, unit_id=unit_id,
                      detail=detail, error=str(exc))

    # -- cancel and release ------------------------------------------------------------

    async def cancel(self, unit_id: str) -> dict[str, str]:
        status = self.store.read(unit_id)
        if status.work_type == REMOTE:
            return await self.remote.cancel(unit_id)
        if status.state in FINAL:
            return {"cancelled": unit_id}
        work_type = self.work_types.get(status.work_type)
        if work_type is not None:
            await work_type.cancel(self.handle(unit_id))
        size = self.store.stdout_size(unit_id)  # final now: the command was stopped
        self.handle(unit_id).update(lambda s: _cancel(s, size), check=False)
        return {"cancelled": unit_id}

    async def release(self, unit_id: str, *, force: bool = False) -> dict[str, str]:
        self.store.path(unit_id)  # UnknownUnit for what can never be a unit ID
        if not self.store.exists(unit_id):
            return {"already released": unit_id}
        try:
            status = self.store.read(unit_id)
        except UnitStoreError:
            if not force:
                raise
            self.delete(unit_id)  # a damaged status file: force-release removes the unit
            return {"released": unit_id}
        if status.work_type == REMOTE:
            return await self.remote.release(unit_id, force=force)
        try:
            if status.state not in FINAL:
                await self.cancel(unit_id)
            work_type = self.work_types.get(status.work_type)
            if work_type is not None:
                await work_type.release(self.handle(unit_id))
        except Exception as exc:
            if not force:
                raise WorkError(f"cannot release {unit_id}: {exc}") from None
        self.delete(unit_id)
        return {"released": unit_id}

    def delete(self, unit_id: str) -> None:
        self.store.delete(unit_id)
        self._known_states.pop(unit_id, None)
        self.notify(unit_id)

    # -- results -----------------------------------------------------------------------

    async def verify(self, unit_id: str) -> "Digest":
        """Check the unit's stdout on disk against the size and SHA-256 recorded when it
        became final; returns the digest, or raises WorkError saying what differs."""
        from mesh.work.stdout_digest import DigestMismatch, file_digest

        status = self.store.read(unit_id)
        if status.state not in FINAL:
            raise WorkError(f"unit {unit_id} is {state_name(status.state)}: its size and "
                            f"SHA-256 are recorded when it ends")
        if status.digest is None:
            raise WorkError(f"unit {unit_id} has no recorded size and SHA-256 (it ended on "
                            f"a node that does not record them, e.g. Receptor)")
        actual = await asyncio.to_thread(file_digest, self.store.path(unit_id) / "stdout",
                                         status.digest.size)
        try:
            status.digest.check(actual, "the stored stdout")
        except DigestMismatch as exc:
            raise WorkError(f"unit {unit_id}: {exc}") from None
        return actual

    async def stream_results(self, unit_id: str, start: int,
                             write: Callable[[bytes], None], drain: Callable[[], Awaitable[None]],
                             ) -> None:
        """Send stdout from ``start`` until the unit is final and all output was sent.

        A final unit's stream ends at its recorded size (``StdoutFinalSize``; what processes
        the unit started write after it ended is not sent, as Receptor ends at StdoutSize),
        or at the end of the file if it has no record or the file is shorter (a damaged
        copy: the client's digest check says what is missing, instead of a stream that never
        ends).  A unit run here is never streamed past ``work-limits maxstdout``: the bytes
        it writes beyond it before it is stopped are cut.  Unlike Receptor, a Canceled
        unit's stream ends too.
        """
        pos = start
        path = self.store.path(unit_id) / "stdout"
        handle = None
        try:
            while True:
                try:
                    status = self.store.read(unit_id)
                except UnknownUnit:
                    return  # released while we streamed
                if handle is None:
                    try:
                        handle = open(path, "rb")
                    except FileNotFoundError:
                        if status.state in FINAL:
                            return
                        await self.wait_change(unit_id)
                        continue
                final = status.state in FINAL
                end = _stream_end(status, self.max_stdout)
                handle.seek(pos)
                while end is None or pos < end:
                    chunk = handle.read(CHUNK if end is None else min(CHUNK, end - pos))
                    if not chunk:
                        break
                    pos += len(chunk)
                    self._results_bytes += len(chunk)
                    write(chunk)
                    await drain()
                if final:
                    # the status may have been written just before the last bytes were
                    # read: re-check the size
                    if (end is not None and pos >= end) or \
                            os.fstat(handle.fileno()).st_size <= pos:
                        return
                    continue
                await self.wait_change(unit_id)
        finally:
            if handle is not None:
                handle.close()


def _stream_end(status: UnitStatus, max_stdout: int | None) -> int | None:
    """Where a results stream of a unit in ``status`` stops for now (None: end of file)."""
    if status.state in FINAL:
        return status.digest.size if status.digest is not None else None
    return max_stdout if status.work_type != REMOTE else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _set(status: UnitStatus, state: int, detail: str) -> None:
    status.state, status.detail = state, detail


def stdout_limit_detail(limit: int) -> str:
    """The Detail of a unit stopped at ``work-limits maxstdout`` (the command runner's too)."""
    return f"stdout larger than the limit of {limit} bytes (work-limits maxstdout)"


def _set_size(status: UnitStatus, state: int, detail: str, stdout_size: int) -> None:
    status.state, status.detail, status.stdout_size = state, detail, stdout_size
    status.digest = None  # the output was cut: hash what is kept


def _cancel(status: UnitStatus, stdout_size: int) -> None:
    if status.state not in FINAL:
        status.state, status.detail = UnitState.CANCELED, "Canceled"
        # Receptor keeps the last periodic StdoutSize; the real size keeps `work list`
        # consistent with what `work results` sends
        status.stdout_size = max(status.stdout_size, stdout_size)
