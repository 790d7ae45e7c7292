"""Remote work: a local ``remote`` unit that runs work on another node and mirrors it.

The controller submits to the remote node's ``control`` service over a mesh stream, sends
the payload, then follows the remote unit: its status (State, Detail, StdoutSize) and its
stdout, which is appended to the local stdout file and resumed from the local size after
any disconnect.  Cancel and release propagate; a release that cannot reach the remote node
is recorded and completed when the node comes back.

This module submits, cancels, releases and resumes remote units; the control sessions live
in :mod:`mesh.work.remote_sessions`, the follow loops in :mod:`mesh.work.remote_follow`.
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
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import structlog

from mesh.go_json import MessageError
from mesh.go_time import GO_ZERO_TIME, go_datetime, parse_go_time
from mesh.work.remote_follow import RemoteFollower
from mesh.work.remote_sessions import (
    CHUNK,
    REPLY_TIMEOUT,
    STREAM_ERRORS,
    RemoteConn,
    RemoteRefused,
    RemoteUnavailable,
    Retry,
    SessionPool,
    tls_client,
)
from mesh.work.states import FINAL, UnitState
from mesh.work.unitstore import UnitStatus, UnitStoreError
from mesh.work.worktype import WorkError

if TYPE_CHECKING:  # pragma: no cover
    from mesh.work.remote_host import WorkManager

log = structlog.get_logger(__name__)

REMOTE_ID = re.compile(r"with ID ([a-zA-Z0-9]+)\.")


class RemoteWork:
    """Drives every ``remote`` unit of one node."""

    def __init__(self, manager: WorkManager) -> None:
        self.manager = manager
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.sessions = SessionPool(manager)
        self.follower = RemoteFollower(self)

    def close(self) -> None:
        """Drop pooled control sessions (at node shutdown)."""
        self.sessions.close()

    # -- helpers -----------------------------------------------------------------------

    def extra(self, unit_id: str) -> dict[str, Any]:
        """The unit's ExtraData ({} if it is no dict); raises UnitStoreError."""
        extra = self.manager.store.read(unit_id).extra_data
        return extra if isinstance(extra, dict) else {}

    def _peer(self, unit_id: str) -> str | None:
        """The unit's remote node, for the ``peer`` of log events (None if unreadable)."""
        try:
            return self.extra(unit_id).get("RemoteNode")
        except UnitStoreError:
            return None

    def _set_extra(self, unit_id: str, **changes: Any) -> None:
        def change(status: UnitStatus) -> None:
            extra = dict(status.extra_data) if isinstance(status.extra_data, dict) else {}
            extra.update(changes)
            status.extra_data = extra

        self.manager.store.update(unit_id, change, check=False)

    def update(self, unit_id: str, **fields: Any) -> None:
        """Set status fields of the unit and wake its followers (a gone unit is skipped)."""

        def change(status: UnitStatus) -> None:
            for name, value in fields.items():
                setattr(status, name, value)

        try:
            self.manager.store.update(unit_id, change, check=False)
        except UnitStoreError:
            return
        self.manager.notify(unit_id)

    def retry(self, unit_id: str) -> Retry:
        """Backoff for one unit's attempts: while its remote node has no route, a pause ends
        as soon as a route appears (a restarted controller or relay is back in the mesh
        within tens of milliseconds; the first retry would otherwise wait 0.5 s)."""
        async def pause(seconds: float) -> None:
            node = self._peer(unit_id)
            if node is None or self.manager.node.routed(node):
                await asyncio.sleep(seconds)
            else:
                await self.manager.node.route_to(node, seconds)

        return Retry(pause)

    def _spawn(self, unit_id: str, coro: Any, what: str) -> None:
        _import_streams_soon()  # a no-op unless a restarted node resumes its first unit
        old = self.tasks.get(unit_id)
        if old is not None and not old.done():
            old.cancel()
        self.tasks[unit_id] = self.manager.spawn(coro, f"remote-{what}-{unit_id}",
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
        expiration = GO_ZERO_TIME
        if ttl:
            expiration = datetime.fromtimestamp(time.time() + ttl, timezone.utc).isoformat()
        extra = {"RemoteNode": node, "RemoteWorkType": work_type, "RemoteParams": params,
                 "RemoteUnitID": "", "RemoteStarted": False, "LocalCancelled": False,
                 "LocalReleased": False, "SignWork": signwork, "TLSClient": tlsclient,
                 "Expiration": expiration}
        unit_id = self.manager.store.create("remote", extra, detail="Waiting for Input Data")
        self.manager.track(unit_id, UnitState.PENDING, "Waiting for Input Data")
        return unit_id

    def signature(self, extra: dict[str, Any]) -> dict[str, str]:
        """``{"signature": token}`` for a unit submitted with signwork (Receptor signs
        submit, results, cancel and release, not status)."""
        signer = self.manager.node.signer
        if not extra.get("SignWork") or signer is None:
            return {}
        return {"signature": signer.sign(extra["RemoteNode"])}

    async def submit(self, unit_id: str) -> str:
        """First start attempt, during the client's submit: ``Job Started`` or ``Job Submitted``."""
        extra = self.extra(unit_id)
        try:
            await self._start_remote(unit_id, extra)
        except RemoteUnavailable as exc:
            self.update(unit_id, detail=f"Waiting to submit: {exc}")
            self._spawn(unit_id, self._start_loop(unit_id), "start")
            return "Job Submitted"
        except RemoteRefused as exc:
            self.update(unit_id, state=UnitState.FAILED, detail=f"Error from remote: {exc}")
            raise WorkError(f"error from remote: {exc}") from None
        self._spawn(unit_id, self.follower.monitor(unit_id, just_started=True), "monitor")
        return "Job Started"

    async def _start_remote(self, unit_id: str, extra: dict[str, Any]) -> None:
        node = extra["RemoteNode"]
        conn = await self.sessions.take(node, tls_client(extra))
        try:
            params = extra.get("RemoteParams")
            request = dict(params) if isinstance(params, dict) else {}
            request.update(command="work", subcommand="submit", node=node,
                           worktype=extra["RemoteWorkType"], tlsclient=tls_client(extra),
                           **self.signature(extra))
            stdin = self.manager.store.path(unit_id) / "stdin"
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

            self.manager.store.update(unit_id, started, check=False)
            self.manager.notify(unit_id)
            log.info("remote_work_started", node_id=self.manager.node.node_id, unit_id=unit_id,
                     peer=node, remote_unit_id=remote_id)
        finally:
            # the remote has ended the session; don't hold the client's reply for the close
            self.manager.spawn(conn.close(), f"close-submit-session-{unit_id}", unit_id=unit_id)

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
        retry = self.retry(unit_id)
        while True:
            await retry.wait()
            try:
                extra = self.extra(unit_id)
            except UnitStoreError:
                return
            if extra.get("LocalCancelled"):
                return
            if _expired(extra):
                self.update(unit_id, state=UnitState.FAILED,
                            detail=f"Work unit expired on {_go_stamp(extra['Expiration'])}")
                return
            try:
                await self._start_remote(unit_id, extra)
            except RemoteUnavailable as exc:
                self.update(unit_id, detail=f"Waiting to submit: {exc}")
                continue
            except RemoteRefused as exc:
                self.update(unit_id, state=UnitState.FAILED, detail=f"Error from remote: {exc}")
                return
            break
        await self.follower.monitor(unit_id, just_started=True)

    # -- cancel and release ------------------------------------------------------------

    async def _remote_command(self, unit_id: str, subcommand: str) -> None:
        extra = self.extra(unit_id)
        for key in ("RemoteNode", "RemoteUnitID"):
            if not isinstance(extra.get(key), str) or not extra[key]:
                raise WorkError(f"unit {unit_id}: its status lacks {key} (ExtraData is "
                                f"damaged); force-release removes it")
        await self.sessions.command(
            extra["RemoteNode"], json.dumps({"command": "work", "subcommand": subcommand,
                                             "unitid": extra["RemoteUnitID"],
                                             **self.signature(extra)}),
            REPLY_TIMEOUT, tls_client(extra))

    async def cancel(self, unit_id: str) -> dict[str, str]:
        self._set_extra(unit_id, LocalCancelled=True)
        extra = self.extra(unit_id)
        if not extra.get("RemoteStarted") and not extra.get("RemoteUnitID"):
            self._stop(unit_id)
            self.update(unit_id, state=UnitState.FAILED, detail="Locally Cancelled")
            return {"cancelled": unit_id}
        try:
            await self._remote_command(unit_id, "cancel")
        except RemoteUnavailable:
            self._spawn(unit_id, self._retry_then_monitor(unit_id, "cancel"), "cancel")
            return {"cancel pending": unit_id}
        except RemoteRefused as exc:
            raise WorkError(f"error from remote: {exc}") from None
        if unit_id not in self.tasks or self.tasks[unit_id].done():
            self._spawn(unit_id, self.follower.monitor(unit_id), "monitor")
        return {"cancelled": unit_id}

    async def release(self, unit_id: str, *, force: bool = False) -> dict[str, str]:
        self._set_extra(unit_id, LocalCancelled=True, LocalReleased=True)
        extra = self.extra(unit_id)
        if not extra.get("RemoteUnitID"):
            self._stop(unit_id)
            self.manager.delete(unit_id)
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
                self.update(unit_id, detail=f"Release pending: {exc}")
                self._spawn(unit_id, self._retry_then_delete(unit_id), "release")
                return {"release pending": unit_id}
            log.warning("force_release_remote_unreachable", node_id=self.manager.node.node_id,
                        unit_id=unit_id, peer=extra.get("RemoteNode"), error=str(exc))
        self._stop(unit_id)
        self.manager.delete(unit_id)
        return {"released": unit_id}

    async def _retry_command(self, unit_id: str, subcommand: str) -> None:
        retry = self.retry(unit_id)
        while True:
            try:
                await self._remote_command(unit_id, subcommand)
                return
            except RemoteRefused as exc:
                if "unknown work unit" in str(exc):
                    return
                log.warning("remote_command_refused", node_id=self.manager.node.node_id,
                            unit_id=unit_id, peer=self._peer(unit_id), subcommand=subcommand,
                            error=str(exc))
                return
            except RemoteUnavailable:
                await retry.wait()

    async def _retry_then_monitor(self, unit_id: str, subcommand: str) -> None:
        await self._retry_command(unit_id, subcommand)
        await self.follower.monitor(unit_id)

    async def _retry_then_delete(self, unit_id: str) -> None:
        await self._retry_command(unit_id, "release")
        log.info("remote_release_completed", node_id=self.manager.node.node_id, unit_id=unit_id,
                 peer=self._peer(unit_id))
        self.manager.delete(unit_id)

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
                self.manager.store.stdout_size(unit_id) < status.stdout_size:
            self._spawn(unit_id, self.follower.monitor(unit_id), "monitor")


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
    expiration = extra.get("Expiration") or GO_ZERO_TIME
    if expiration == GO_ZERO_TIME:
        return False
    try:
        return parse_go_time(expiration) < time.time_ns()
    except MessageError:
        return False


def _go_stamp(expiration: str) -> str:
    try:
        return f"{go_datetime(expiration):%a %b %-d %H:%M:%S}"
    except MessageError:
        return expiration
