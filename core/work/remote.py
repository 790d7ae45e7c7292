"""Remote work: a local ``remote`` unit that runs work on another node and mirrors it.

The controller submits to the remote node's ``control`` service over a mesh stream, sends
the payload, then follows the remote unit: its status (State, Detail, StdoutSize) and its
stdout, which is appended to the local stdout file and resumed from the local size after
any disconnect.  Cancel and release propagate; a release that cannot reach the remote node
is recorded and completed when the node comes back.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import structlog

from mesh.control.protocol import GREETING_PATTERN
from mesh.net.stream_errors import StreamError
from mesh.work.states import FINAL, UnitState
from mesh.work.stdout_digest import DigestMismatch, file_digest, recorded
from mesh.work.unitstore import UnitStatus, UnitStoreError, UnknownUnit
from mesh.work.worktype import WorkError

if TYPE_CHECKING:  # pragma: no cover
    from mesh.work.workceptor import Workceptor

log = structlog.get_logger(__name__)

REMOTE_ID = re.compile(r"with ID ([a-zA-Z0-9]+)\.")
ZERO_TIME = "0001-01-01T00:00:00Z"
CONNECT_TIMEOUT = 10.0
REPLY_TIMEOUT = 30.0
#: A status reply takes milliseconds; a silent connection (e.g. the remote node was killed
#: and restarted, so the old QUIC connection is dead but not yet timed out) is given up
#: after this, which also restarts the results stream (see ``_status_loop``).
STATUS_TIMEOUT = 5.0
STATUS_INTERVAL = 1.0
RETRY_INITIAL, RETRY_FACTOR, RETRY_MAX = 0.5, 1.5, 2.0
CHUNK = 1024 * 1024
#: While more results are already buffered, followers are woken once per this many bytes
#: (each wake-up reads the status file), else after every chunk.
NOTIFY_BYTES = 1024 * 1024
#: Results streams in a row that end without bringing the bytes a final remote unit's
#: StdoutSize promises before the unit is Failed (its remote stdout file is damaged).
SHORT_READS = 3
#: A mirrored stdout up to this size is hashed in the event loop (no thread hand-off).
INLINE_HASH = 64 * 1024
#: What a broken mesh stream raises (aborted, closed, reset, transport errors).
STREAM_ERRORS = (ConnectionError, OSError, EOFError, StreamError)
#: Idle control sessions kept per remote node, and for how long (see _SessionPool).
POOL_MAX_IDLE = 16
#: Idle sessions kept ready per remote node once a streaming command took one: a small job's
#: results stream takes one and its status refresh right after needs another.
POOL_SPARES = 2
POOL_IDLE_TIME = 30.0
NOT_PARAMS = ("command", "subcommand", "node", "worktype", "tlsclient", "ttl", "signwork",
              "signature")


class RemoteUnavailable(Exception):
    """The remote control service could not be reached, or the connection broke."""


class RemoteRefused(Exception):
    """The remote node answered ``ERROR: …``."""


class _Retry:
    """Growing pauses between attempts; ``pause(seconds)`` (default ``asyncio.sleep``) may
    end one early, e.g. when a route to the remote node appears."""

    def __init__(self, pause: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.delay = 0.0
        self._pause = pause

    async def wait(self) -> None:
        self.delay = RETRY_INITIAL if not self.delay else min(self.delay * RETRY_FACTOR,
                                                              RETRY_MAX)
        await self._pause(self.delay)

    def reset(self) -> None:
        self.delay = 0.0


class RemoteConn:
    """A control session with a remote node over a mesh stream."""

    def __init__(self, stream: Any, node: str) -> None:
        self.stream = stream
        self.node = node

    async def readline(self, timeout: float = REPLY_TIMEOUT) -> str:
        try:
            async with asyncio.timeout(timeout):
                raw = await self.stream.readline()
        except asyncio.TimeoutError:
            # A silent connection is most likely dead (the remote restarted before its new
            # epoch reached us): drop it, not only this stream, so that no session reuses it.
            connection = getattr(self.stream, "connection", None)
            if connection is not None:
                connection.abort(f"no reply from {self.node} within {timeout:.0f}s")
            raise RemoteUnavailable(f"no reply from {self.node} within {timeout:.0f}s") from None
        except STREAM_ERRORS as exc:
            raise RemoteUnavailable(f"connection to {self.node} broke: {exc}") from None
        if not raw:
            raise RemoteUnavailable(f"{self.node} closed the connection")
        line = raw.decode("utf-8", "replace").strip()
        if line.startswith("ERROR"):
            raise RemoteRefused(line[7:] if line.startswith("ERROR: ") else line)
        return line

    async def send(self, line: str) -> None:
        """Send one command line."""
        try:
            self.stream.write(line.encode() + b"\n")
            await self.stream.drain()
        except STREAM_ERRORS as exc:
            raise RemoteUnavailable(f"connection to {self.node} broke: {exc}") from None

    async def command(self, line: str, timeout: float = REPLY_TIMEOUT) -> str:
        await self.send(line)
        return await self.readline(timeout)

    async def close(self) -> None:
        try:
            await self.stream.close()
        except Exception:
            pass

    def abort(self, problem: str) -> None:
        """Drop a connection that stopped working (close() would linger on unacked data)."""
        try:
            self.stream.abort(problem)
        except Exception:
            pass

    @property
    def usable(self) -> bool:
        """Still open, with nothing unread: fit for another command."""
        try:
            return not self.stream.connection.ended and not self.stream.at_eof()
        except Exception:
            return False


@dataclass
class _ResultsWatch:
    """A unit's open results stream: when it was opened (remote epoch) and last delivered."""

    conn: RemoteConn
    epoch: Any
    progress: float


def _tls_client(extra: dict[str, Any]) -> str:
    """The tls-client a remote unit's control sessions are dialed with ("" for none)."""
    return extra.get("TLSClient") or ""


class _SessionPool:
    """Idle control sessions to remote nodes, reused for one-line commands (status, cancel,
    release).

    Each new session costs a round trip for the greeting, and a QUIC handshake across the
    mesh unless a multiplexed connection to the node is open (see mesh.net.stream_pool); a
    small remote job used to open five of them.  Streaming commands (submit, results) end
    their session, so they take one out of the pool for good (:meth:`take`) and spares
    (:data:`POOL_SPARES`) are dialed in the background for the next ones.  A pooled session
    is dropped when the remote node has restarted meanwhile (its routing epoch changed, or it
    has no route), when its connection ended, or after POOL_IDLE_TIME seconds.
    """

    def __init__(self, remote: "RemoteWork") -> None:
        self.remote = remote
        #: Idle sessions by (node, tls-client name): a unit's ``tlsclient`` needs its own.
        self._idle: dict[tuple[str, str], list[tuple[RemoteConn, Any, float]]] = {}
        self._refilling: set[tuple[str, str]] = set()

    def epoch(self, node: str) -> Any:
        """The remote node's routing epoch (changes when it restarts); None without a route
        (see ``Node.node_epoch``; "unknown" for a node object without routing)."""
        node_epoch = getattr(self.remote.wc.node, "node_epoch", None)
        return "unknown" if node_epoch is None else node_epoch(node)

    def _take(self, node: str, tls: str) -> tuple[RemoteConn, Any] | None:
        idle = self._idle.get((node, tls))
        epoch = self.epoch(node)
        now = time.monotonic()
        while idle:
            conn, conn_epoch, since = idle.pop()
            if not conn.usable or epoch is None or conn_epoch != epoch:
                conn.abort("stale pooled control session")  # dead, or the node restarted
            elif now - since >= POOL_IDLE_TIME:
                self.remote.wc.spawn(conn.close(), f"close-control-session-{node}",
                                     peer=node)
            else:
                return conn, conn_epoch
        return None

    async def take(self, node: str, tls: str = "") -> RemoteConn:
        """A session for a streaming command (which ends it): pooled if one is ready, else
        dialed now; either way a spare is dialed in the background for the next one.
        ``tls`` names the tls-client the session is dialed with ("" for none)."""
        taken = self._take(node, tls)
        self._refill(node, tls)
        if taken is not None:
            return taken[0]
        return await self.remote.connect(node, tls)

    def _refill(self, node: str, tls: str) -> None:
        key = (node, tls)
        if key in self._refilling or len(self._idle.get(key, ())) >= POOL_SPARES:
            return

        async def refill() -> None:
            try:
                for _ in range(POOL_SPARES):  # bounded: a dial may yield no usable session
                    if len(self._idle.get(key, ())) >= POOL_SPARES:
                        break
                    conn = await self.remote.connect(node, tls)
                    self._put(node, tls, conn, self.epoch(node))
            except (RemoteUnavailable, RemoteRefused):
                return
            finally:
                self._refilling.discard(key)

        self._refilling.add(key)
        self.remote.wc.spawn(refill(), f"control-session-spare-{node}", peer=node)

    def _put(self, node: str, tls: str, conn: RemoteConn, epoch: Any) -> None:
        idle = self._idle.setdefault((node, tls), [])
        if conn.usable and epoch is not None and len(idle) < POOL_MAX_IDLE:
            idle.append((conn, epoch, time.monotonic()))
            self.remote.wc.wake_in(POOL_IDLE_TIME)  # to close it if it stays idle
        else:
            self.remote.wc.spawn(conn.close(), f"close-control-session-{node}",
                                     peer=node)

    async def command(self, node: str, line: str, timeout: float, tls: str = "") -> str:
        """Send one command line to ``node``'s control service and return the reply line."""
        for _ in range(2):
            taken = self._take(node, tls)
            if taken is None:
                conn, epoch, pooled = (await self.remote.connect(node, tls), self.epoch(node),
                                       False)
            else:
                (conn, epoch), pooled = taken, True
            try:
                reply = await conn.command(line, timeout=timeout)
            except RemoteRefused:
                self._put(node, tls, conn, epoch)  # an ERROR reply leaves the session usable
                raise
            except RemoteUnavailable:
                conn.abort("control command failed")
                if pooled:
                    continue  # the pooled session had died unnoticed: once more, freshly
                raise
            except BaseException:
                conn.abort("control command interrupted")
                raise
            self._put(node, tls, conn, epoch)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def sweep(self) -> float | None:
        """Close sessions idle for POOL_IDLE_TIME (called by the work manager's watch);
        returns the seconds until the next one will be, or None while none is idle."""
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            node = key[0]
            keep = []
            for conn, epoch, since in idle:
                if conn.usable and now - since < POOL_IDLE_TIME:
                    keep.append((conn, epoch, since))
                elif conn.usable:
                    self.remote.wc.spawn(conn.close(), f"close-control-session-{node}",
                                     peer=node)
                else:
                    conn.abort("stale pooled control session")
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        oldest = min((since for idle in self._idle.values() for _, _, since in idle),
                     default=None)
        return None if oldest is None else max(0.0, oldest + POOL_IDLE_TIME - now)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn, _, _ in idle:
                conn.abort("node shutting down")
        self._idle.clear()


class RemoteWork:
    """Drives every ``remote`` unit of one node."""

    def __init__(self, workceptor: "Workceptor") -> None:
        self.wc = workceptor
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        #: The results stream each monitored unit is reading, so the status loop can drop it.
        self._results_conns: dict[str, _ResultsWatch] = {}
        self.sessions = _SessionPool(self)

    def close(self) -> None:
        """Drop pooled control sessions (at node shutdown)."""
        self.sessions.close()

    # -- helpers -----------------------------------------------------------------------

    def _extra(self, unit_id: str) -> dict[str, Any]:
        extra = self.wc.store.read(unit_id).extra_data
        return extra if isinstance(extra, dict) else {}

    def _peer(self, unit_id: str) -> str | None:
        """The unit's remote node, for the ``peer`` of log events (None if unreadable)."""
        try:
            return self._extra(unit_id).get("RemoteNode")
        except UnitStoreError:
            return None

    def _set_extra(self, unit_id: str, **changes: Any) -> None:
        def change(status: UnitStatus) -> None:
            extra = dict(status.extra_data) if isinstance(status.extra_data, dict) else {}
            extra.update(changes)
            status.extra_data = extra

        self.wc.store.update(unit_id, change, check=False)

    def _update(self, unit_id: str, **fields: Any) -> None:
        def change(status: UnitStatus) -> None:
            for name, value in fields.items():
                setattr(status, name, value)

        try:
            self.wc.store.update(unit_id, change, check=False)
        except UnitStoreError:
            return
        self.wc.notify(unit_id)

    async def connect(self, node: str, tls: str = "") -> RemoteConn:
        """Dial ``node:control`` (through the tls-client ``tls``, if any) and check its
        greeting."""
        try:
            stream = await self.wc.node.dial_stream(node, "control", tls=tls or None,
                                                    timeout=CONNECT_TIMEOUT, pooled=True)
        except Exception as exc:
            raise RemoteUnavailable(f"cannot reach {node}: {exc}") from None
        conn = RemoteConn(stream, node)
        try:
            greeting = GREETING_PATTERN.fullmatch(await conn.readline(timeout=CONNECT_TIMEOUT))
        except (RemoteUnavailable, RemoteRefused):
            await conn.close()
            raise
        if greeting is None or greeting.group(1) != node:
            await conn.close()
            raise RemoteUnavailable(f"{node}:control did not greet as node {node}")
        return conn

    def _retry(self, unit_id: str) -> _Retry:
        """Backoff for one unit's attempts: while its remote node has no route, a pause ends
        as soon as a route appears (a restarted controller or relay is back in the mesh
        within tens of milliseconds; the first retry would otherwise wait 0.5 s)."""
        async def pause(seconds: float) -> None:
            node = self._peer(unit_id)
            node_api = self.wc.node
            if node is None or not hasattr(node_api, "route_to") or node_api.routed(node):
                await asyncio.sleep(seconds)
            else:
                await node_api.route_to(node, seconds)

        return _Retry(pause)

    def _spawn(self, unit_id: str, coro: Any, what: str) -> None:
        _import_streams_soon()  # a no-op unless a restarted node resumes its first unit
        old = self.tasks.get(unit_id)
        if old is not None and not old.done():
            old.cancel()
        self.tasks[unit_id] = self.wc.spawn(coro, f"remote-{what}-{unit_id}",
                                            unit_id=unit_id, peer=self._peer(unit_id))

    def release_pending(self, unit_id: str) -> bool:
        """Whether a release of the unit waits for its remote node (a retry is running)."""
        task = self.tasks.get(unit_id)
        return task is not None and not task.done() and \
            task.get_name() == f"remote-release-{unit_id}"

    def _stop(self, unit_id: str) -> None:
        task = self.tasks.pop(unit_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # -- submission --------------------------------------------------------------------

    def create(self, node: str, work_type: str, params: dict[str, str], *, tlsclient: str = "",
               ttl: float | None = None, signwork: bool = False) -> str:
        expiration = ZERO_TIME
        if ttl:
            expiration = datetime.fromtimestamp(time.time() + ttl, timezone.utc).isoformat()
        extra = {"RemoteNode": node, "RemoteWorkType": work_type, "RemoteParams": params,
                 "RemoteUnitID": "", "RemoteStarted": False, "LocalCancelled": False,
                 "LocalReleased": False, "SignWork": signwork, "TLSClient": tlsclient,
                 "Expiration": expiration}
        unit_id = self.wc.store.create("remote", extra, detail="Waiting for Input Data")
        self.wc.track(unit_id, UnitState.PENDING, "Waiting for Input Data")
        return unit_id

    def _signature(self, extra: dict[str, Any]) -> dict[str, str]:
        """``{"signature": token}`` for a unit submitted with signwork (Receptor signs
        submit, results, cancel and release, not status)."""
        signer = self.wc.node.signer
        if not extra.get("SignWork") or signer is None:
            return {}
        return {"signature": signer.sign(extra["RemoteNode"])}

    async def submit(self, unit_id: str) -> str:
        """First start attempt, during the client's submit: ``Job Started`` or ``Job Submitted``."""
        extra = self._extra(unit_id)
        try:
            await self._start_remote(unit_id, extra)
        except RemoteUnavailable as exc:
            self._update(unit_id, detail=f"Waiting to submit: {exc}")
            self._spawn(unit_id, self._start_loop(unit_id), "start")
            return "Job Submitted"
        except RemoteRefused as exc:
            self._update(unit_id, state=UnitState.FAILED, detail=f"Error from remote: {exc}")
            raise WorkError(f"error from remote: {exc}") from None
        self._spawn(unit_id, self._monitor(unit_id, just_started=True), "monitor")
        return "Job Started"

    async def _start_remote(self, unit_id: str, extra: dict[str, Any]) -> None:
        node = extra["RemoteNode"]
        conn = await self.sessions.take(node, _tls_client(extra))
        try:
            params = extra.get("RemoteParams")
            request = dict(params) if isinstance(params, dict) else {}
            request.update(command="work", subcommand="submit", node=node,
                           worktype=extra["RemoteWorkType"], tlsclient=_tls_client(extra),
                           **self._signature(extra))
            stdin = self.wc.store.path(unit_id) / "stdin"
            pipelined = _pipelines(conn, stdin)
            if pipelined:  # command and (empty) payload in one go: a round trip less
                await conn.send(json.dumps(request))
                await self._send_file(conn, stdin)
                created = await conn.readline()
            else:
                created = await conn.command(json.dumps(request))
            match = REMOTE_ID.search(created)
            if match is None:
                raise RemoteRefused(f"unexpected reply to submit: {created[:200]}")
            remote_id = match.group(1)
            self._set_extra(unit_id, RemoteUnitID=remote_id)
            if not pipelined:
                await self._send_file(conn, stdin)
            await conn.readline()

            def started(status: UnitStatus) -> None:  # one status write, not two
                extra = dict(status.extra_data or {})
                if isinstance(extra.get("RemoteParams"), dict):
                    # secrets were needed for the submit only: keep them off the disk now
                    extra["RemoteParams"] = {k: v for k, v in extra["RemoteParams"].items()
                                             if not k.lower().startswith("secret_")}
                status.extra_data = {**extra, "RemoteStarted": True}
                status.state = UnitState.RUNNING
                status.detail = f"Running on {node} as {remote_id}"

            self.wc.store.update(unit_id, started, check=False)
            self.wc.notify(unit_id)
            log.info("remote_work_started", node_id=self.wc.node.node_id, unit_id=unit_id,
                     peer=node, remote_unit_id=remote_id)
        finally:
            # the remote has ended the session; don't hold the client's reply for the close
            self.wc.spawn(conn.close(), f"close-submit-session-{unit_id}", unit_id=unit_id)

    async def _send_file(self, conn: RemoteConn, path: os.PathLike[str]) -> None:
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return
        with handle:
            try:
                while chunk := handle.read(CHUNK):
                    conn.stream.write(chunk)
                    await conn.stream.drain()
                conn.stream.write_eof()
            except STREAM_ERRORS as exc:
                raise RemoteUnavailable(f"sending the payload broke: {exc}") from None

    async def _start_loop(self, unit_id: str) -> None:
        retry = self._retry(unit_id)
        while True:
            await retry.wait()
            try:
                extra = self._extra(unit_id)
            except UnitStoreError:
                return
            if extra.get("LocalCancelled"):
                return
            if _expired(extra):
                self._update(unit_id, state=UnitState.FAILED,
                             detail=f"Work unit expired on {_go_stamp(extra['Expiration'])}")
                return
            try:
                await self._start_remote(unit_id, extra)
            except RemoteUnavailable as exc:
                self._update(unit_id, detail=f"Waiting to submit: {exc}")
                continue
            except RemoteRefused as exc:
                self._update(unit_id, state=UnitState.FAILED, detail=f"Error from remote: {exc}")
                return
            break
        await self._monitor(unit_id, just_started=True)

    # -- following ---------------------------------------------------------------------

    async def _monitor(self, unit_id: str, *, just_started: bool = False) -> None:
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
        retry = self._retry(unit_id)
        short_reads = 0  # results streams in a row that ended early, bringing nothing
        while True:
            try:
                status = self.wc.store.read(unit_id)
            except UnknownUnit:
                return
            extra = status.extra_data or {}
            local_size = self.wc.store.stdout_size(unit_id)
            if status.state in FINAL and local_size >= status.stdout_size:
                log.info("remote_work_finished", node_id=self.wc.node.node_id, unit_id=unit_id,
                         peer=extra.get("RemoteNode"), state=status.state,
                         stdout_size=local_size)
                return
            try:
                await self._fetch_stdout(unit_id, extra, local_size)
                await self._refresh_status(unit_id, extra, final_ok=True)
                if self.wc.store.stdout_size(unit_id) > local_size:
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
                log.warning("remote_results_refused", node_id=self.wc.node.node_id,
                            unit_id=unit_id, peer=extra.get("RemoteNode"), error=str(exc))
                await retry.wait()
            except RemoteUnavailable as exc:
                self._unreachable(unit_id, extra, exc)
                await retry.wait()
            except Exception:  # never let a bug stop following the unit
                log.exception("remote_stdout_loop_error", node_id=self.wc.node.node_id,
                              unit_id=unit_id, peer=extra.get("RemoteNode"))
                await retry.wait()

    def _results_short(self, unit_id: str, attempts: int) -> bool:
        """A results stream of a remote unit ended without bringing anything.  The remote
        unit is final then (a stream of a running unit stays open), and when the remote's
        StdoutSize is beyond what it sends, its stdout file was damaged: after
        :data:`SHORT_READS` such streams the unit is Failed with why (True)."""
        try:
            status = self.wc.store.read(unit_id)
        except UnitStoreError:
            return True
        if status.state in FINAL or attempts < SHORT_READS:
            return status.state in FINAL
        local_size = self.wc.store.stdout_size(unit_id)
        self._update(unit_id, state=UnitState.FAILED,
                     detail=f"Results incomplete: the remote node's stdout ends at "
                            f"{local_size} of {status.stdout_size} bytes")
        log.error("remote_results_incomplete", node_id=self.wc.node.node_id, unit_id=unit_id,
                  received=local_size, remote_size=status.stdout_size)
        return True

    async def _fetch_stdout(self, unit_id: str, extra: dict[str, Any], start: int) -> None:
        conn = await self.sessions.take(extra["RemoteNode"], _tls_client(extra))
        watch = _ResultsWatch(conn, self.sessions.epoch(extra["RemoteNode"]), time.monotonic())
        self._results_conns[unit_id] = watch
        try:
            request = {"command": "work", "subcommand": "results",
                       "unitid": extra["RemoteUnitID"], "startpos": start,
                       **self._signature(extra)}
            line = await conn.command(json.dumps(request))
            if "Streaming results" not in line:
                raise RemoteRefused(f"unexpected reply to results: {line[:200]}")
            try:
                conn.stream.write_eof()
            except STREAM_ERRORS as exc:
                raise RemoteUnavailable(f"results stream broke: {exc}") from None
            path = self.wc.store.path(unit_id) / "stdout"
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
                        self.wc.notify(unit_id, status_changed=False)
                        unnoticed = 0
            finally:
                if unnoticed:
                    self.wc.notify(unit_id, status_changed=False)
                os.close(fd)
        finally:
            if self._results_conns.get(unit_id) is watch:
                del self._results_conns[unit_id]
            # the remote ended the session; closing needs no waiting on our side
            self.wc.spawn(conn.close(), f"close-results-session-{unit_id}",
                          unit_id=unit_id)

    async def _refresh_status(self, unit_id: str, extra: dict[str, Any], *,
                              final_ok: bool) -> None:
        reply = await self.sessions.command(extra["RemoteNode"],
                                            f"work status {extra['RemoteUnitID']}",
                                            STATUS_TIMEOUT, _tls_client(extra))
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
        size = self.wc.store.stdout_size(unit_id)
        if expected is None or size < expected.size:
            return None  # no digest, or results still to come
        path = self.wc.store.path(unit_id) / "stdout"
        actual = file_digest(path, expected.size) if expected.size <= INLINE_HASH else \
            await asyncio.to_thread(file_digest, path, expected.size)
        try:
            expected.check(actual, "the mirrored stdout")
        except DigestMismatch as exc:
            log.error("remote_results_mismatch", node_id=self.wc.node.node_id,
                      unit_id=unit_id, error=str(exc))
            return str(exc)
        if size > expected.size:
            # bytes the remote streamed before they were cut (maxstdout) or that a process of
            # the unit wrote after it ended: no part of its results
            os.truncate(path, expected.size)
            log.warning("remote_results_trimmed", node_id=self.wc.node.node_id,
                        unit_id=unit_id, received=size, recorded=expected.size)
        return None

    def _mirror(self, unit_id: str, remote: dict[str, Any], *, final_ok: bool,
                mismatch: str | None = None) -> None:
        state, detail = remote.get("State", 0), str(remote.get("Detail", ""))
        size = remote.get("StdoutSize", 0)
        local_size = self.wc.store.stdout_size(unit_id)

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
            self.wc.store.update(unit_id, change, check=False, durable=False)
        except UnitStoreError:
            return
        self.wc.notify(unit_id)

    async def _status_loop(self, unit_id: str, first_delay: float = 0.0) -> None:
        await asyncio.sleep(first_delay)
        retry = self._retry(unit_id)
        while True:
            try:
                extra = self._extra(unit_id)
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
                log.exception("remote_status_loop_error", node_id=self.wc.node.node_id,
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
            remote_size = self.wc.store.read(unit_id).stdout_size
        except UnitStoreError:
            return
        if (remote_size > self.wc.store.stdout_size(unit_id)
                and time.monotonic() - watch.progress > STATUS_TIMEOUT):
            watch.conn.abort("results stream stalled")

    def _unreachable(self, unit_id: str, extra: dict[str, Any], exc: Exception) -> None:
        try:
            status = self.wc.store.read(unit_id)
        except UnitStoreError:
            return
        if status.state not in FINAL:
            self._update(unit_id, detail=f"Remote node {extra.get('RemoteNode')} unreachable "
                                         f"({exc}); retrying")

    def _gone(self, unit_id: str) -> None:
        self._update(unit_id, state=UnitState.FAILED, detail="Remote work unit is gone")

    # -- cancel and release ------------------------------------------------------------

    async def _remote_command(self, unit_id: str, subcommand: str) -> None:
        extra = self._extra(unit_id)
        for key in ("RemoteNode", "RemoteUnitID"):
            if not isinstance(extra.get(key), str) or not extra[key]:
                raise WorkError(f"unit {unit_id}: its status lacks {key} (ExtraData is "
                                f"damaged); force-release removes it")
        await self.sessions.command(
            extra["RemoteNode"], json.dumps({"command": "work", "subcommand": subcommand,
                                             "unitid": extra["RemoteUnitID"],
                                             **self._signature(extra)}),
            REPLY_TIMEOUT, _tls_client(extra))

    async def cancel(self, unit_id: str) -> dict[str, str]:
        self._set_extra(unit_id, LocalCancelled=True)
        extra = self._extra(unit_id)
        if not extra.get("RemoteStarted") and not extra.get("RemoteUnitID"):
            self._stop(unit_id)
            self._update(unit_id, state=UnitState.FAILED, detail="Locally Cancelled")
            return {"cancelled": unit_id}
        try:
            await self._remote_command(unit_id, "cancel")
        except RemoteUnavailable:
            self._spawn(unit_id, self._retry_then_monitor(unit_id, "cancel"), "cancel")
            return {"cancel pending": unit_id}
        except RemoteRefused as exc:
            raise WorkError(f"error from remote: {exc}") from None
        if unit_id not in self.tasks or self.tasks[unit_id].done():
            self._spawn(unit_id, self._monitor(unit_id), "monitor")
        return {"cancelled": unit_id}

    async def release(self, unit_id: str, *, force: bool = False) -> dict[str, str]:
        self._set_extra(unit_id, LocalCancelled=True, LocalReleased=True)
        extra = self._extra(unit_id)
        if not extra.get("RemoteUnitID"):
            self._stop(unit_id)
            self.wc.delete(unit_id)
            return {"released": unit_id}
        try:
            await self._remote_command(unit_id, "release")
        except WorkError:
            if not force:
                raise
        except RemoteRefused as exc:
            if "unknown work unit" not in str(exc) and not force:
                raise WorkError(f"error from remote: {exc}") from None
        except RemoteUnavailable as exc:
            if not force:
                self._update(unit_id, detail=f"Release pending: {exc}")
                self._spawn(unit_id, self._retry_then_delete(unit_id), "release")
                return {"release pending": unit_id}
            log.warning("force_release_remote_unreachable", node_id=self.wc.node.node_id,
                        unit_id=unit_id, peer=extra.get("RemoteNode"), error=str(exc))
        self._stop(unit_id)
        self.wc.delete(unit_id)
        return {"released": unit_id}

    async def _retry_command(self, unit_id: str, subcommand: str) -> None:
        retry = self._retry(unit_id)
        while True:
            try:
                await self._remote_command(unit_id, subcommand)
                return
            except RemoteRefused as exc:
                if "unknown work unit" in str(exc):
                    return
                log.warning("remote_command_refused", node_id=self.wc.node.node_id,
                            unit_id=unit_id, peer=self._peer(unit_id), subcommand=subcommand,
                            error=str(exc))
                return
            except RemoteUnavailable:
                await retry.wait()

    async def _retry_then_monitor(self, unit_id: str, subcommand: str) -> None:
        await self._retry_command(unit_id, subcommand)
        await self._monitor(unit_id)

    async def _retry_then_delete(self, unit_id: str) -> None:
        await self._retry_command(unit_id, "release")
        log.info("remote_release_completed", node_id=self.wc.node.node_id, unit_id=unit_id,
                 peer=self._peer(unit_id))
        self.wc.delete(unit_id)

    # -- restart -----------------------------------------------------------------------

    def resume(self, unit_id: str, status: UnitStatus) -> None:
        """Pick a remote unit up again after a node restart."""
        extra = status.extra_data if isinstance(status.extra_data, dict) else {}
        if extra.get("LocalReleased"):
            self._spawn(unit_id, self._retry_then_delete(unit_id), "release")
        elif not extra.get("RemoteUnitID"):
            if status.state not in FINAL and not extra.get("LocalCancelled"):
                self._spawn(unit_id, self._start_loop(unit_id), "start")
        elif extra.get("LocalCancelled") and status.state not in FINAL:
            self._spawn(unit_id, self._retry_then_monitor(unit_id, "cancel"), "cancel")
        elif status.state not in FINAL or \
                self.wc.store.stdout_size(unit_id) < status.stdout_size:
            self._spawn(unit_id, self._monitor(unit_id), "monitor")


def _pipelines(conn: RemoteConn, stdin: os.PathLike[str]) -> bool:
    """Send a submit's end of payload right behind its command, before ``Work unit created``?

    Only an empty payload (a lone FIN: if the remote refuses the submit, its session just
    ends, no payload bytes are left to be read as commands), and only to a node of this
    project (the session's connection negotiated ``mesh-mux/1``), whose control service
    reads the command and the FIN from the same buffered stream.
    """
    try:
        return bool(conn.stream.connection.mux) and os.path.getsize(stdin) == 0
    except (AttributeError, OSError):
        return False


def _import_streams_soon() -> None:
    """Import the QUIC stack (``mesh.net.streams``, ~0.3 s of CPU) in a thread now: a
    restarted node that follows remote units dials as soon as its first link is up, and the
    import then overlaps with the link handshakes instead of following them."""
    if "mesh.net.streams" in sys.modules or any(
            t.name == "import-quic" for t in threading.enumerate()):
        return
    threading.Thread(target=importlib.import_module, args=("mesh.net.streams",),
                     name="import-quic", daemon=True).start()


def _expired(extra: dict[str, Any]) -> bool:
    expiration = extra.get("Expiration") or ZERO_TIME
    if expiration == ZERO_TIME:
        return False
    try:
        return datetime.fromisoformat(expiration).timestamp() < time.time()
    except ValueError:
        return False


def _go_stamp(expiration: str) -> str:
    try:
        return f"{datetime.fromisoformat(expiration):%a %b %-d %H:%M:%S}"
    except ValueError:
        return expiration


def split_params(params: dict[str, Any]) -> dict[str, str]:
    """The work parameters of a submit request (every key that is not a control key)."""
    return {k: v for k, v in params.items() if k not in NOT_PARAMS}
