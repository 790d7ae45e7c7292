"""A running node: wires config, plugins, the mesh core, backends and control services."""

from __future__ import annotations

import asyncio
import functools
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog

from mesh.config.errors import ConfigError
from mesh.config.loader import LoadedConfig, build_config, config_digest, read_config
from mesh.control.early import EarlyControl
from mesh.control.server import ControlService
from mesh.log import loop_exception_handler
from mesh.net.backend import Backend, ListenError, os_error_reason
from mesh.net.deferred_listener import DeferredStreamListener
from mesh.net.endpoint import RouteError
from mesh.net.firewall import Firewall, parse_rule
from mesh.net.netceptor import DEFAULT_IDLE_TIMEOUT, Netceptor
from mesh.net.stream_pool import StreamPool
from mesh.node_config import SAFE_NAME_RE, NodeConfig
from mesh.plugins import PluginHost
from mesh.tasks import cancel_and_wait, stop_other_tasks
from mesh.work.unitstore import UnitStore
from mesh.work.workceptor import Workceptor
from mesh.work.worktype import WorkType

log = structlog.get_logger(__name__)

#: Streams to a node without a route for this long are aborted (their users reconnect).
UNREACHABLE_GRACE = 3.0
#: How long the node waits for a listener to report that it listens (see
#: :meth:`mesh.net.backend.Backend.wait_listening`) before it carries on without knowing.
LISTEN_TIMEOUT = 10.0


def _dump_tasks() -> None:
    """``kill -USR2`` prints every asyncio task's stack to stderr (for debugging hangs)."""
    import sys

    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


class NodeStartError(Exception):
    """The node could not start (port in use, socket locked, ...); the message says why."""


@dataclass
class _RunningBackend:
    section: str
    digest: str
    backend: Any
    task: asyncio.Task[None]


class Node:
    """One mesh node process.

    It builds the subsystems and hands each the narrow view of itself it uses: the control
    services a :class:`~mesh.control.server.ControlHost`, the work manager a
    :class:`~mesh.work.workceptor.WorkHost`, plugins a :class:`~mesh.plugin_types.PluginNode`.
    """

    #: Whether the deprecated :attr:`services` was used (it warns once per process).
    _services_warned = False

    def __init__(self, config: LoadedConfig, plugins: PluginHost,
                 early: EarlyControl | None = None) -> None:
        self.config = config
        self.plugins = plugins
        #: Control sockets bound (and answering ``status``) before the node was built.
        self.early = early
        node_cfg = config.one("node") or NodeConfig()
        assert isinstance(node_cfg, NodeConfig)
        self.node_config = node_cfg
        self.node_id: str = node_cfg.id
        self.datadir = Path(node_cfg.datadir).expanduser()
        firewall = Firewall([parse_rule(r, i) for i, r in enumerate(node_cfg.firewallrules, 1)])
        self.netceptor = Netceptor(
            self.node_id, firewall=firewall,
            idle_timeout=node_cfg.maxidleconnectiontimeout or DEFAULT_IDLE_TIMEOUT,
            max_datagram=node_cfg.streamdatagram, max_nodes=node_cfg.maxnodes,
            on_link_up=lambda peer, cost: plugins.link_up(self, peer, cost),
            on_link_down=lambda peer, reason: plugins.link_down(self, peer, reason),
            on_duplicate=lambda _id: self.stop("duplicate node ID"),
            on_routes_changed=self._routes_changed)
        self.backends: list[_RunningBackend] = []
        self.service_tasks: list[asyncio.Task[None]] = []
        #: Our outgoing stream connections by remote node, aborted when it stays unreachable.
        self._client_conns: dict[str, set[Any]] = {}
        #: Timers that abort the connections to a node that lost its route (by node).
        self._unrouted: dict[str, asyncio.TimerHandle] = {}
        #: Futures of route_to() callers, by the node they wait for.
        self._route_waiters: dict[str, list[asyncio.Future[None]]] = {}
        #: Multiplexed stream connections to nodes of this project (made at the first dial).
        self._stream_pool: StreamPool | None = None
        self.control_services: list[ControlService] = []
        self._reloading = asyncio.Lock()
        self._stopped = asyncio.Event()
        self.stop_reason = ""
        #: Objects plugins attach to the node, by name (e.g. the tls provider).
        self.plugin_state: dict[str, Any] = {}
        self.signer, self.verifier = self.plugins.work_signing(self)
        self.netceptor.route_auth = plugins.route_authenticator(self)
        self.work = Workceptor(
            self, UnitStore(self.datadir, self.node_id), self._work_types(),
            on_state_changed=lambda unit_id, state, detail: plugins.unit_state_changed(
                self, unit_id, state, detail))
        self.netceptor.work_commands = self.work.work_commands

    def _work_types(self) -> dict[str, WorkType]:
        types: dict[str, WorkType] = {}
        for entry in self.config.entries:
            registered = self.plugins.work_types.get(entry.section)
            if registered is None:
                continue
            work_type = registered.factory(entry.values, self)
            if not SAFE_NAME_RE.match(work_type.name):
                raise ConfigError(f"work type name {work_type.name!r} may only contain letters, "
                                  f"digits and _ . @ - (at most 128, starting with a letter or "
                                  f"digit)", file=str(self.config.path or "<config>"),
                                  section=entry.section, index=entry.index, key="worktype")
            if work_type.name in types or work_type.name == "remote":
                raise ConfigError(f"work type {work_type.name!r} is defined twice "
                                  f"(or uses the reserved name 'remote'); rename one",
                                  file=str(self.config.path or "<config>"),
                                  section=entry.section, index=entry.index, key="worktype")
            if work_type.verify_signature and self.verifier is None:
                raise ConfigError("verifysignature needs a work-verification section with the "
                                  "public key to verify with",
                                  file=str(self.config.path or "<config>"),
                                  section=entry.section, index=entry.index,
                                  key="verifysignature")
            types[work_type.name] = work_type
        return types

    # -- helpers for plugins ------------------------------------------------------------

    @property
    def services(self) -> dict[str, Any]:
        """Deprecated name of :attr:`plugin_state` (the same dict); warns once per process.
        ``services`` means the service plugins (``mesh_register_services``)."""
        if not Node._services_warned:
            Node._services_warned = True
            warnings.warn("Node.services is deprecated: use node.plugin_state (the same dict "
                          "of objects plugins attach to the node)", DeprecationWarning,
                          stacklevel=2)
        return self.plugin_state

    def tls_config(self, kind: str, name: str) -> Any:
        """The ``tls-server``/``tls-client`` section ``name``, resolved by a TLS plugin."""
        config = self.plugins.tls_config(self, kind, name)
        if config is None:
            raise NodeStartError(f"no tls-{kind} named {name!r} is configured (add a "
                                 f"tls-{kind} section with name: {name})")
        return config

    def listen_stream(self, service: str, *, tags: dict[str, str] | None = None,
                      tls: str | None = None, advertise: bool = True) -> Any:
        """Bind a QUIC stream listener on a mesh service.

        Advertised as ConnType 1 (Receptor's built-in self-signed TLS) or, with ``tls`` naming
        a tls-server section, ConnType 2.  The QUIC stack is imported when the first client
        arrives (:class:`~mesh.net.deferred_listener.DeferredStreamListener`).
        """
        options = self.tls_config("server", tls).quic_options() if tls else None
        endpoint = self.netceptor.listen(service, advertise=advertise,
                                         conn_type=2 if tls else 1, tags=tags)

        def build() -> Any:
            from mesh.net import streams

            return streams.listen_stream(endpoint, tls=options,
                                         max_datagram_for=self.netceptor.max_datagram_for)

        return DeferredStreamListener(endpoint, build)

    async def dial_stream(self, node: str, service: str, *, tls: str | None = None,
                          timeout: float = 15.0, pooled: bool = False) -> Any:
        """Open a QUIC stream to ``node:service`` over the mesh.

        Fails at once when there is no route, and as soon as the remote node reports the
        service unknown, instead of waiting for the QUIC handshake timeout.  ``pooled``: the
        stream may share a connection with other pooled streams to the same place (see
        mesh.net.stream_pool) - for short exchanges whose reader keeps up, such as control
        sessions, never for a byte pipe a slow consumer could stall (the streams of one
        connection share its receive window).
        """
        from mesh.net import streams

        options = self.tls_config("client", tls).quic_options() if tls else None
        if node.lower() == "localhost":
            node = self.node_id
        if not self.routed(node):
            raise RouteError("no route to node")
        endpoints: list[Any] = []

        def open_endpoint() -> Any:
            endpoint = self.netceptor.listen()
            endpoints.append(endpoint)
            return endpoint

        def on_connection(conn: Any) -> None:
            def unreachable(notice: Any, _reporter: str) -> None:
                if notice.problem in ("service unknown", "blocked by firewall") and \
                        (notice.to_node, notice.to_service) == (node, service):
                    conn.abort(notice.problem)

            for endpoint in endpoints:
                endpoint.unreachable_handler = unreachable
            self._live_conns(node).add(conn)

        if pooled and self._stream_pool is None:
            self._stream_pool = StreamPool(self.node_epoch)
        return await streams.dial_stream(
            open_endpoint, node, service, local_node=self.node_id,
            max_datagram_for=self.netceptor.max_datagram_for, timeout=timeout,
            on_connection=on_connection, tls=options,
            pool=self._stream_pool if pooled else None, pool_tls=tls or "")

    def node_epoch(self, node: str) -> Any:
        """``node``'s routing epoch (a restarted node has another); None without a route."""
        if node == self.node_id:
            return "self"
        record = self.netceptor.router.records.get(node)
        return None if record is None or node not in self.netceptor.router.table \
            else record.epoch

    def alarms(self) -> dict[str, str | None]:
        """Each alarm the node can raise (e.g. ``duplicate_node_id``): its reason while
        raised, else None.  A raised alarm degrades ``/health``; the node keeps serving."""
        return self.netceptor.alarms()

    def routed(self, node: str) -> bool:
        """True if ``node`` is this node or the routing table has a route to it."""
        return node == self.node_id or node in self.netceptor.router.table

    async def route_to(self, node: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a route to ``node``; True once there is one."""
        if self.routed(node):
            return True
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._route_waiters.setdefault(node, [])
        waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            waiters.remove(waiter)
            if not waiters:
                del self._route_waiters[node]

    def _live_conns(self, node: str) -> set[Any]:
        """Our stream connections to ``node`` that have not ended."""
        conns = self._client_conns.setdefault(node, set())
        conns.difference_update({c for c in conns if c.ended})
        return conns

    def _routes_changed(self) -> None:
        """Give the connections to a node that lost its route UNREACHABLE_GRACE seconds to
        get one back, then abort them (QUIC alone would wait for its 30 s idle timeout); a
        short grace lets a route move to another relay without disturbing the streams."""
        table = self.netceptor.router.table
        for node, waiters in self._route_waiters.items():
            if node in table:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        for node in list(self._client_conns):
            routed = node == self.node_id or node in table
            if not self._live_conns(node):
                del self._client_conns[node]
                routed = True
            timer = self._unrouted.get(node)
            if routed and timer is not None:
                timer.cancel()
                del self._unrouted[node]
            elif not routed and timer is None:
                self._unrouted[node] = asyncio.get_running_loop().call_later(
                    UNREACHABLE_GRACE, self._abort_unrouted, node)

    def _abort_unrouted(self, node: str) -> None:
        self._unrouted.pop(node, None)
        if node == self.node_id or node in self.netceptor.router.table:
            return
        conns = self._live_conns(node)
        del self._client_conns[node]
        if conns:
            log.info("streams_aborted_no_route", node_id=self.node_id, peer=node,
                     streams=len(conns))
            for conn in list(conns):
                conn.abort("no route to node")

    # -- backends ----------------------------------------------------------------------

    def _backend_entries(self, config: LoadedConfig) -> list[tuple[str, str, Any]]:
        out = []
        for entry in config.entries:
            if entry.section in self.plugins.backends:
                out.append((entry.section, config_digest(entry), entry.values))
        return out

    def _start_backend(self, section: str, digest: str, values: Any) -> _RunningBackend:
        """Make the backend of one config entry and run it; :meth:`_serving` then checks
        that it started."""
        backend = self.plugins.backends[section].factory(values, self)
        task = asyncio.create_task(backend.run(self.netceptor), name=f"backend {section}")
        running = _RunningBackend(section, digest, backend, task)
        self.backends.append(running)
        return running

    async def _serving(self, started: list[_RunningBackend]) -> list[str]:
        """Wait until every listener of ``started`` listens; stop and drop those that cannot.

        Returns one message per listener that failed (``tcp-listener 0.0.0.0:2222: cannot
        listen: address already in use``).  Any later failure of a backend is only logged.
        """
        errors = await asyncio.gather(*(self._start_error(running) for running in started))
        for running, error in zip(started, errors):
            if error is None:
                running.task.add_done_callback(
                    functools.partial(self._backend_ended, running.section))
            else:
                await self._stop_backend(running)
        return [error for error in errors if error is not None]

    async def _start_error(self, running: _RunningBackend) -> str | None:
        """None once a listener listens (or at once for a backend that does not listen);
        what went wrong if its ``run`` ended first."""
        backend, task = running.backend, running.task
        if not isinstance(backend, Backend) or not backend.listens:
            return None
        listening = asyncio.ensure_future(backend.wait_listening())
        try:
            done, _ = await asyncio.wait((listening, task), timeout=LISTEN_TIMEOUT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if listening in done:
            return None
        if task in done:
            return self._failed_listener(running.section, task)
        log.warning("backend_not_listening", node_id=self.node_id, section=running.section,
                    waited=LISTEN_TIMEOUT)
        return None

    def _failed_listener(self, section: str, task: asyncio.Task[None]) -> str:
        """The start-failure message of a listener whose ``run`` ended before it listened."""
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ListenError):
            return f"{section} {error}"
        if isinstance(error, OSError):
            return f"{section}: cannot listen: {os_error_reason(error)}"
        if error is None:
            return f"{section}: stopped before it was listening"
        self._log_failure("backend", section, error)  # a bug: keep its traceback
        return f"{section}: cannot start: {error}"

    def _backend_ended(self, section: str, task: asyncio.Task[None]) -> None:
        """Log how a backend that had started failed (it is not restarted)."""
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log_failure("backend", section, error)

    def _start_services(self) -> None:
        """One task per entry of every plugin service section (proxies, ...)."""
        for entry in self.config.entries:
            registered = self.plugins.services.get(entry.section)
            if registered is None:
                continue
            service = registered.factory(entry.values, self)
            task = asyncio.create_task(self._supervise("service", entry.section,
                                                       service.run()))
            self.service_tasks.append(task)

    async def _supervise(self, kind: str, section: str, run: Awaitable[None]) -> None:
        """Run a service's ``run()``; log (never raise) how it failed."""
        try:
            await run
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log_failure(kind, section, exc)

    def _log_failure(self, kind: str, section: str, error: BaseException) -> None:
        """``backend_failed`` for an I/O error, ``backend_crashed`` and the traceback for a
        bug (``service_...`` for a service)."""
        if isinstance(error, (OSError, ListenError)):
            log.error(f"{kind}_failed", node_id=self.node_id, section=section, error=str(error))
        else:
            log.error(f"{kind}_crashed", node_id=self.node_id, section=section,
                      exc_info=error)

    async def _stop_backend(self, running: _RunningBackend) -> None:
        await cancel_and_wait([running.task])
        self.backends.remove(running)

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; returns once every listener listens.

        :raises NodeStartError: a control socket or a listener could not be bound.
        """
        self.netceptor.start()
        await self.work.start()
        await self._start_control_services()
        async with self._reloading:  # a reload sent while the listeners bind waits for them
            errors = await self._serving([self._start_backend(*entry)
                                          for entry in self._backend_entries(self.config)])
        if errors:
            raise NodeStartError("; ".join(errors))
        self._start_services()
        log.info("node_started", node_id=self.node_id, backends=len(self.backends),
                 control_services=len(self.control_services))
        self.plugins.node_started(self)

    async def _start_control_services(self) -> None:
        """Start every control service, taking over what the early responder bound."""
        adopted, parked = self.early.handoff() if self.early is not None else ({}, [])
        try:
            for cfg in self.config.of("control-service"):
                service = ControlService(self, cfg, adopted, parked)
                try:
                    await service.start()
                except (OSError, RuntimeError, ListenError) as exc:
                    await service.stop()  # what it bound before it failed (its socket file)
                    raise NodeStartError(f"control-service {exc}" if isinstance(exc, ListenError)
                                         else f"control-service: {exc}") from None
                self.control_services.append(service)
        finally:
            for session in parked:  # no control service serves that socket any more
                session.conn.close()
            for bound in adopted.values():
                bound.close(unlink=True)

    def stop(self, reason: str = "stopped") -> None:
        if not self._stopped.is_set():
            self.stop_reason = reason
            self._stopped.set()

    async def run(self, *, on_started: Callable[[], None] | None = None,
                  on_stuck: Callable[[], None] | None = None) -> None:
        """Start, serve until a signal or :meth:`stop`, then shut down cleanly;
        ``on_started`` is called once the node has started, ``on_stuck`` after the shutdown if
        a task would not stop (a plugin's that ignores cancellation), which would keep
        ``asyncio.run`` waiting for ever."""
        loop = asyncio.get_running_loop()
        # Events of this task and of every task it starts carry node_id, and so do
        # exceptions that no task retrieved.
        structlog.contextvars.bind_contextvars(node_id=self.node_id)
        loop.set_exception_handler(loop_exception_handler(self.node_id))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig.name)
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)
        try:
            await self.start()
            if on_started is not None:
                on_started()
            await self._stopped.wait()
        except NodeStartError:
            self.stop_reason = "start failed"
            raise
        finally:
            log.info("node_stopping", node_id=self.node_id, reason=self.stop_reason)
            self.plugins.node_stopping(self)
            await self.shutdown()
            if await stop_other_tasks() and on_stuck is not None:
                on_stuck()
            # Python 3.11's loop.close() closes its self-pipe before it drops the signal
            # handlers: a second SIGTERM in between would print "Exception ignored when
            # trying to write to the signal wakeup fd".  We are stopping anyway.
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
                loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)

    async def shutdown(self) -> None:
        for service in self.control_services:
            await service.stop()
        await self.work.stop()
        await cancel_and_wait(self.service_tasks)
        for timer in self._unrouted.values():
            timer.cancel()
        if self._stream_pool is not None:
            self._stream_pool.close()
        for running in list(self.backends):
            await self._stop_backend(running)
        await self.netceptor.stop()

    # -- reload ------------------------------------------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; restart only the backends whose entries changed.

        A new listener that cannot listen does not stop the node: the reply is an error
        (``ERRORCODE 4``, as Receptor's), the rest of the reload stays applied, and the next
        ``reload`` tries that listener again.
        """
        path = self.config.path
        if path is None:
            return {"Success": False, "Error": "node was started without a config file "
                                               "ERRORCODE 4"}
        async with self._reloading:  # one reload at a time: each diffs the running backends
            return await self._reload(path)

    async def _reload(self, path: str) -> dict[str, Any]:
        try:
            raw = read_config(path)
            self.plugins.load_for_node(raw.section_names())  # a section added since start
            new = build_config(raw, self.plugins.section_specs())
        except ConfigError as exc:
            return {"Success": False, "Error": f"{exc} ERRORCODE 4"}
        old_fixed = sorted(config_digest(e) for e in self.config.entries
                           if e.section not in self.plugins.backends)
        new_fixed = sorted(config_digest(e) for e in new.entries
                           if e.section not in self.plugins.backends)
        if old_fixed != new_fixed:
            return {"Success": False, "Error": "a non-reloadable config item was modified, "
                                               "added or removed; restart the node ERRORCODE 3"}
        wanted = self._backend_entries(new)
        wanted_digests = [digest for _, digest, _ in wanted]
        for running in list(self.backends):
            if running.digest in wanted_digests:
                wanted_digests.remove(running.digest)
            else:
                await self._stop_backend(running)
        running_digests = [r.digest for r in self.backends]
        started: list[_RunningBackend] = []
        errors: list[str] = []
        for section, digest, values in wanted:
            if digest in running_digests:
                running_digests.remove(digest)
                continue
            try:
                started.append(self._start_backend(section, digest, values))
            except NodeStartError as exc:  # e.g. a tls section it names does not exist
                errors.append(f"{section}: {exc}")
        errors += await self._serving(started)
        self.config = new
        if errors:
            log.warning("reload_failed", node_id=self.node_id, error="; ".join(errors),
                        backends=len(self.backends))
            return {"Success": False, "Error": f"{'; '.join(errors)} ERRORCODE 4"}
        log.info("config_reloaded", node_id=self.node_id, backends=len(self.backends))
        return {"Success": True}
