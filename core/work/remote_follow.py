"""Following remote units: their status and their results, mirrored on this node.

For each followed unit a results stream appends the remote stdout to the local stdout file
(resumed from the local size after any disconnect) while a status loop mirrors State,
Detail and StdoutSize; a final unit's mirrored stdout is checked against the remote's
recorded digest.  :class:`~mesh.work.remote.RemoteWork` starts them.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from mesh.work.remote_sessions import (
    CHUNK,
    STREAM_ERRORS,
    RemoteConn,
    RemoteRefused,
    RemoteUnavailable,
    Retry,
    SessionPool,
    tls_client,
)
from mesh.work.states import FINAL, UnitState
from mesh.work.stdout_digest import DigestMismatch, file_digest, recorded
from mesh.work.unitstore import UnitStatus, UnitStoreError, UnknownUnit

if TYPE_CHECKING:  # pragma: no cover
    from mesh.work.remote_host import WorkManager

log = structlog.get_logger(__name__)

#: A status reply takes milliseconds; a silent connection (e.g. the remote node was killed
#: and restarted, so the old QUIC connection is dead but not yet timed out) is given up
#: after this, which also restarts the results stream (see ``_status_loop``).
STATUS_TIMEOUT = 5.0
STATUS_INTERVAL = 1.0
#: While more results are already buffered, followers are woken once per this many bytes
#: (each wake-up reads the status file), else after every chunk.
NOTIFY_BYTES = 1024 * 1024
#: Results streams in a row that end without bringing the bytes a final remote unit's
#: StdoutSize promises before the unit is Failed (its remote stdout file is damaged).
SHORT_READS = 3
#: A mirrored stdout up to this size is hashed in the event loop (no thread hand-off).
INLINE_HASH = 64 * 1024


@dataclass
class _ResultsWatch:
    """A unit's open results stream: when it was opened (remote epoch) and last delivered."""

    conn: RemoteConn
    epoch: Any
    progress: float


class FollowedWork(Protocol):
    """What the follow loops use of :class:`~mesh.work.remote.RemoteWork`, which builds
    the follower."""

    @property
    def manager(self) -> WorkManager:
        """The work manager."""

    @property
    def sessions(self) -> SessionPool:
        """The pooled control sessions to remote nodes."""

    def retry(self, unit_id: str) -> Retry:
        """Backoff for one unit's attempts."""

    def extra(self, unit_id: str) -> dict[str, Any]:
        """The unit's ExtraData; raises UnitStoreError."""

    def update(self, unit_id: str, **fields: Any) -> None:
        """Set status fields of the unit and wake its followers."""

    def signature(self, extra: dict[str, Any]) -> dict[str, str]:
        """``{"signature": token}`` for a unit submitted with signwork, else {}."""


class RemoteFollower:
    """Follows the remote units of one node: a results stream and a status loop each."""

    def __init__(self, remote: FollowedWork) -> None:
        self.remote = remote
        self.manager = remote.manager
        self.sessions = remote.sessions
        #: The results stream each monitored unit is reading, so the status loop can drop it.
        self._results_conns: dict[str, _ResultsWatch] = {}

    async def monitor(self, unit_id: str, *, just_started: bool = False) -> None:
        """Follow a started remote unit until it is final and its results are all here."""
        # Right after the submit we know the remote unit runs; the results stream ends with a
        # status refresh anyway, so a short job needs no status poll (and no extra session).
        status_task = asyncio.create_task(
            self._status_loop(unit_id, STATUS_INTERVAL if just_started else 0.0))
        try:
            await self._stdout_loop(unit_id)
        finally:
            status_task.cancel()
            try:
                await status_task
            except (asyncio.CancelledError, Exception):
                pass

    async def _stdout_loop(self, unit_id: str) -> None:
        retry = self.remote.retry(unit_id)
        short_reads = 0  # results streams in a row that ended early, bringing nothing
        while True:
            try:
                status = self.manager.store.read(unit_id)
            except UnknownUnit:
                return
            extra = status.extra_data or {}
            local_size = self.manager.store.stdout_size(unit_id)
            if status.state in FINAL and local_size >= status.stdout_size:
                log.info("remote_work_finished", node_id=self.manager.node.node_id, unit_id=unit_id,
                         peer=extra.get("RemoteNode"), state=status.state,
                         stdout_size=local_size)
                return
            try:
                await self._fetch_stdout(unit_id, extra, local_size)
                await self._refresh_status(unit_id, extra, final_ok=True)
                if self.manager.store.stdout_size(unit_id) > local_size:
                    short_reads = 0
                    retry.reset()
                elif self._results_short(unit_id, short_reads := short_reads + 1):
                    return
                else:
                    await retry.wait()
            except RemoteRefused as exc:
                if "unknown work unit" in str(exc):
                    self._gone(unit_id)
                    return
                log.warning("remote_results_refused", node_id=self.manager.node.node_id,
                            unit_id=unit_id, peer=extra.get("RemoteNode"), error=str(exc))
                await retry.wait()
            except RemoteUnavailable as exc:
                self._unreachable(unit_id, extra, exc)
                await retry.wait()
            except Exception:  # never let a bug stop following the unit
                log.exception("remote_stdout_loop_error", node_id=self.manager.node.node_id,
                              unit_id=unit_id, peer=extra.get("RemoteNode"))
                await retry.wait()

    def _results_short(self, unit_id: str, attempts: int) -> bool:
        """A results stream of a remote unit ended without bringing anything.  The remote
        unit is final then (a stream of a running unit stays open), and when the remote's
        StdoutSize is beyond what it sends, its stdout file was damaged: after
        :data:`SHORT_READS` such streams the unit is Failed with why (True)."""
        try:
            status = self.manager.store.read(unit_id)
        except UnitStoreError:
            return True
        if status.state in FINAL or attempts < SHORT_READS:
            return status.state in FINAL
        local_size = self.manager.store.stdout_size(unit_id)
        self.remote.update(unit_id, state=UnitState.FAILED,
                     detail=f"Results incomplete: the remote node's stdout ends at "
                            f"{local_size} of {status.stdout_size} bytes")
        log.error("remote_results_incomplete", node_id=self.manager.node.node_id, unit_id=unit_id,
                  received=local_size, remote_size=status.stdout_size)
        return True

    async def _fetch_stdout(self, unit_id: str, extra: dict[str, Any], start: int) -> None:
        conn = await self.sessions.take(extra["RemoteNode"], tls_client(extra))
        watch = _ResultsWatch(conn, self.sessions.epoch(extra["RemoteNode"]), time.monotonic())
        self._results_conns[unit_id] = watch
        try:
            request = {"command": "work", "subcommand": "results",
                       "unitid": extra["RemoteUnitID"], "startpos": start,
                       **self.remote.signature(extra)}
            line = await conn.command(json.dumps(request))
            if "Streaming results" not in line:
                raise RemoteRefused(f"unexpected reply to results: {line[:200]}")
            try:
                conn.stream.write_eof()
            except STREAM_ERRORS as exc:
                raise RemoteUnavailable(f"results stream broke: {exc}") from None
            path = self.manager.store.path(unit_id) / "stdout"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            unnoticed = 0  # bytes written since followers were last woken
            try:
                while True:
                    try:
                        chunk = await conn.stream.read(CHUNK)
                    except STREAM_ERRORS as exc:
                        raise RemoteUnavailable(f"results stream broke: {exc}") from None
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    watch.progress = time.monotonic()
                    unnoticed += len(chunk)
                    if unnoticed >= NOTIFY_BYTES or not getattr(conn.stream, "buffered", 0):
                        # followers read the new output; the status did not change
                        self.manager.notify(unit_id, status_changed=False)
                        unnoticed = 0
            finally:
                if unnoticed:
                    self.manager.notify(unit_id, status_changed=False)
                os.close(fd)
        finally:
            if self._results_conns.get(unit_id) is watch:
                del self._results_conns[unit_id]
            # the remote ended the session; closing needs no waiting on our side
            self.manager.spawn(conn.close(), f"close-results-session-{unit_id}",
                               unit_id=unit_id)

    async def _refresh_status(self, unit_id: str, extra: dict[str, Any], *,
                              final_ok: bool) -> None:
        reply = await self.sessions.command(extra["RemoteNode"],
                                            f"work status {extra['RemoteUnitID']}",
                                            STATUS_TIMEOUT, tls_client(extra))
        try:
            remote = json.loads(reply)
        except json.JSONDecodeError as exc:
            raise RemoteUnavailable(f"bad status reply: {exc}") from None
        if not isinstance(remote, dict):
            raise RemoteUnavailable(f"bad status reply: {reply[:200]}")
        mismatch = None
        if final_ok and remote.get("State") in FINAL:
            mismatch = await self._verified(unit_id, remote)
        self._mirror(unit_id, remote, final_ok=final_ok, mismatch=mismatch)

    async def _verified(self, unit_id: str, remote: dict[str, Any]) -> str | None:
        """Check the complete mirrored stdout, as it is on disk, against the size and SHA-256
        the remote node recorded (a Receptor node records none); why they differ, or None.
        A large file is hashed in a thread (~1 ms per MB)."""
        expected = recorded(remote)
        size = self.manager.store.stdout_size(unit_id)
        if expected is None or size < expected.size:
            return None  # no digest, or results still to come
        path = self.manager.store.path(unit_id) / "stdout"
        actual = file_digest(path, expected.size) if expected.size <= INLINE_HASH else \
            await asyncio.to_thread(file_digest, path, expected.size)
        try:
            expected.check(actual, "the mirrored stdout")
        except DigestMismatch as exc:
            log.error("remote_results_mismatch", node_id=self.manager.node.node_id,
                      unit_id=unit_id, error=str(exc))
            return str(exc)
        if size > expected.size:
            # bytes the remote streamed before they were cut (maxstdout) or that a process of
            # the unit wrote after it ended: no part of its results
            os.truncate(path, expected.size)
            log.warning("remote_results_trimmed", node_id=self.manager.node.node_id,
                        unit_id=unit_id, received=size, recorded=expected.size)
        return None

    def _mirror(self, unit_id: str, remote: dict[str, Any], *, final_ok: bool,
                mismatch: str | None = None) -> None:
        state, detail = remote.get("State", 0), str(remote.get("Detail", ""))
        size = remote.get("StdoutSize", 0)
        local_size = self.manager.store.stdout_size(unit_id)

        def change(status: UnitStatus) -> None:
            if isinstance(size, int):
                status.stdout_size = size
            if status.state in FINAL:
                return
            if state in FINAL and not (final_ok and local_size >= status.stdout_size):
                status.state = UnitState.RUNNING
                status.detail = f"Receiving results ({local_size} of {status.stdout_size} bytes)"
                return
            if isinstance(state, int) and 0 <= state <= 4:
                status.state = state
            status.detail = detail
            if state in FINAL:
                # the remote's record (a Receptor node has none: the store hashes the mirror)
                status.digest = recorded(remote)
                if mismatch is not None:
                    status.state = UnitState.FAILED
                    status.detail = f"Results corrupted: {mismatch} (remote state: {detail})"

        try:
            # Not fsynced even when it makes the unit final: the remote node holds the
            # durable copy until the unit is released, and a controller whose mirror fell
            # behind (an OS crash) follows the unit again at restart.
            self.manager.store.update(unit_id, change, check=False, durable=False)
        except UnitStoreError:
            return
        self.manager.notify(unit_id)

    async def _status_loop(self, unit_id: str, first_delay: float = 0.0) -> None:
        await asyncio.sleep(first_delay)
        retry = self.remote.retry(unit_id)
        while True:
            try:
                extra = self.remote.extra(unit_id)
            except UnitStoreError:
                return
            try:
                await self._refresh_status(unit_id, extra, final_ok=False)
                self._check_results_stream(unit_id, extra)
                retry.reset()
                await asyncio.sleep(STATUS_INTERVAL)
            except RemoteRefused as exc:
                if "unknown work unit" in str(exc) and not extra.get("LocalReleased"):
                    self._gone(unit_id)
                    return
                await retry.wait()
            except RemoteUnavailable as exc:
                # The results stream most likely died with the same connection path (a
                # restarted node forgets its QUIC connections, and they would only time out
                # after 30 s): make the stdout loop reconnect and resume now.
                results = self._results_conns.get(unit_id)
                if results is not None:
                    results.conn.abort("remote status unavailable")
                self._unreachable(unit_id, extra, exc)
                await retry.wait()
            except Exception:  # never let a bug stop following the unit
                log.exception("remote_status_loop_error", node_id=self.manager.node.node_id,
                              unit_id=unit_id, peer=extra.get("RemoteNode"))
                await retry.wait()

    def _check_results_stream(self, unit_id: str, extra: dict[str, Any]) -> None:
        """Drop a results stream that cannot deliver any more: the remote node restarted
        since it was opened, or the remote has output we lack and nothing arrived for a
        while.  Its connection would otherwise only fail at the QUIC idle timeout; the stdout
        loop then resumes from the local size on a new stream."""
        watch = self._results_conns.get(unit_id)
        if watch is None:
            return
        epoch = self.sessions.epoch(extra["RemoteNode"])
        if epoch != watch.epoch:
            watch.conn.abort("remote node restarted")
            return
        try:
            remote_size = self.manager.store.read(unit_id).stdout_size
        except UnitStoreError:
            return
        if (remote_size > self.manager.store.stdout_size(unit_id)
                and time.monotonic() - watch.progress > STATUS_TIMEOUT):
            watch.conn.abort("results stream stalled")

    def _unreachable(self, unit_id: str, extra: dict[str, Any], exc: Exception) -> None:
        try:
            status = self.manager.store.read(unit_id)
        except UnitStoreError:
            return
        if status.state not in FINAL:
            self.remote.update(unit_id, detail=f"Remote node {extra.get('RemoteNode')} "
                                               f"unreachable ({exc}); retrying")

    def _gone(self, unit_id: str) -> None:
        self.remote.update(unit_id, state=UnitState.FAILED, detail="Remote work unit is gone")
