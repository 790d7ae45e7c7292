"""Helpers for tests that run real mesh node processes on loopback.

Used by the project's own tests and available to plugin authors.  Every wait polls a
condition against a deadline; every process is tracked by pid and stopped in teardown.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import yaml

from mesh.control.client import ControlClient, ControlClientError
from mesh.work.states import FINAL
from mesh.work.unitstore import UnitStatus, UnitStore, UnitStoreError
from mesh.work.worktype import UnitHandle, WorkType

T = TypeVar("T")

MESH_BIN = [sys.executable, "-m", "mesh"]


#: :func:`free_port` hands out ports from PORT_BASE up, below the kernel's ephemeral range
#: (32768-60999 by default), which a port-0 bind or an outgoing connection never gets; each
#: pytest-xdist worker has its own block of PORT_BLOCK ports, so parallel workers never pick the
#: same one between choosing it and binding it.
PORT_BASE, PORT_BLOCK, PORT_BLOCKS = 12000, 1000, 20
_port_counter = itertools.count((os.getpid() * 7919) % PORT_BLOCK)


def _port_block_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # "gw3"
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return PORT_BASE + (index % PORT_BLOCKS) * PORT_BLOCK


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(family, kind) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` a moment ago, from this test worker's
    block (see PORT_BASE)."""
    start = _port_block_start()
    for _ in range(PORT_BLOCK):
        port = start + next(_port_counter) % PORT_BLOCK
        if _bindable(host, port):
            return port
    raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1} on {host}")


def wait_until(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``condition`` until it returns a truthy value; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # conditions may fail while things start
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                               + (f" (last error: {last_error})" if last_error else ""))
        time.sleep(interval)


class ControlSession(ControlClient):
    """The CLI's control client as tests use it: a socket path, and an ``ERROR:`` reply
    raised as ``RuntimeError("ERROR: …")``."""

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        super().__init__(str(path), timeout=timeout)

    def command(self, line: str) -> Any:
        try:
            return super().command(line)
        except ControlClientError as exc:
            raise RuntimeError(f"ERROR: {exc}") from None


@dataclass
class NodeProcess:
    """A ``mesh node`` child process with its own config, socket and log file."""

    name: str
    workdir: Path
    sections: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: Extra keys for the node section (e.g. {"streamdatagram": 1200}).
    node_extra: dict[str, Any] = field(default_factory=dict)
    #: Extra keys for the control-service section (e.g. {"tls": "srv"}).
    control_extra: dict[str, Any] = field(default_factory=dict)
    log_level: str = "debug"

    @property
    def socket(self) -> Path:
        return self.workdir / f"{self.name}.sock"

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.name}.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    def write_config(self) -> None:
        base = [{"node": {"id": self.name, "datadir": str(self.datadir), **self.node_extra}},
                {"log-level": self.log_level},
                {"control-service": {"service": "control", "filename": str(self.socket),
                                     **self.control_extra}}]
        self.config_path.write_text(yaml.safe_dump(base + self.sections, sort_keys=False))

    def start(self, *, wait: bool = True) -> "NodeProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        log = open(self.log_path, "ab")
        env = {**os.environ, "MESH_LOG_FORMAT": "json", **self.env}
        self.proc = subprocess.Popen([*MESH_BIN, "node", "-c", str(self.config_path)],
                                     stdout=log, stderr=log, env=env,
                                     start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the node has started: its control socket answers a command that a
        starting node's early responder leaves for the node itself (``stats``)."""
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            with ControlSession(self.socket, timeout=timeout) as session:
                return session.greeting.endswith(self.name) and \
                    session.command("stats")["NodeID"] == self.name

        try:
            wait_until(ready, timeout=timeout, what=f"node {self.name} control socket")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log: {self.log_tail()}") from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    def log_events(self, event: str | None = None, **fields: Any) -> list[dict[str, Any]]:
        """The JSON events of this node's log so far (other lines are skipped), optionally
        only those named ``event`` whose keys equal ``fields``."""
        found = []
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (event is None or record.get("event") == event) \
                    and all(record.get(key) == value for key, value in fields.items()):
                found.append(record)
        return found

    def control(self, line: str) -> Any:
        with ControlSession(self.socket) as session:
            return session.command(line)

    def status(self) -> dict[str, Any]:
        return self.control("status")

    def routes(self) -> dict[str, str]:
        return self.status()["RoutingTable"]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_resources_back(node: NodeProcess, before: dict[str, Any], *, slack: int = 2,
                        timeout: float = 30.0) -> None:
    """Wait until ``node``'s asyncio tasks and open files (its ``stats``) are back within
    ``slack`` of ``before`` (an earlier ``stats`` reply): nothing leaked."""

    def settled() -> bool:
        after = node.control("stats")
        return after["Tasks"] <= before["Tasks"] + slack and \
            after["OpenFiles"] <= before["OpenFiles"] + slack

    wait_until(settled, timeout=timeout, what=f"{node.name}'s tasks and open files back to "
                                              f"their start values")


class Mesh:
    """A set of node processes in one scratch directory; links are declared per node."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: dict[str, NodeProcess] = {}
        self.ports: dict[str, int] = {}

    def add(self, name: str, *, listen: bool = True, sections: Iterable[dict] = (),
            env: dict[str, str] | None = None) -> NodeProcess:
        node = NodeProcess(name, self.workdir / name, list(sections), dict(env or {}))
        if listen:
            self.ports[name] = free_port()
            node.sections.insert(0, {"tcp-listener": {"port": self.ports[name],
                                                      "bindaddr": "127.0.0.1"}})
        self.nodes[name] = node
        return node

    def link(self, dialer: str, listener: str, cost: float = 1.0) -> None:
        """``dialer`` gets a tcp-peer to ``listener``'s listener with ``cost``."""
        peer: dict[str, Any] = {"address": f"127.0.0.1:{self.ports[listener]}"}
        if cost != 1.0:
            peer["cost"] = cost
            for section in self.nodes[listener].sections:
                if "tcp-listener" in section:
                    section["tcp-listener"].setdefault("nodecost", {})[dialer] = cost
        self.nodes[dialer].sections.append({"tcp-peer": peer})

    def start(self) -> "Mesh":
        for node in self.nodes.values():
            node.start(wait=False)
        for node in self.nodes.values():
            node.wait_ready()
        return self

    def wait_converged(self, timeout: float = 60.0) -> None:
        """Every node has a route to every other node."""
        names = set(self.nodes)

        def converged() -> bool:
            return all(set(n.routes()) >= names - {n.name}
                       for n in self.nodes.values() if n.alive)

        try:
            wait_until(converged, timeout=timeout, what="mesh convergence")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {self._convergence_report(names)}") from None

    def _convergence_report(self, names: set[str]) -> str:
        """Which nodes lack which routes, and their link events (for a failed wait)."""
        lines = []
        for node in self.nodes.values():
            try:
                missing = sorted(names - {node.name} - set(node.routes())) if node.alive \
                    else ["(not running)"]
            except Exception as exc:  # an unreachable control socket says something too
                missing = [f"(status failed: {exc})"]
            if missing:
                events = [f"{e.get('event')} {e.get('peer', '')} {e.get('reason', '')}".strip()
                          for e in node.log_events()
                          if e.get("event") in ("connection_established", "connection_lost",
                                                "link_rejected", "backend_dial_failed")]
                lines.append(f"{node.name} lacks {missing}; links: {events[-12:]}")
        return " | ".join(lines) or "every node has every route now"

    def wait_until_work_types(self, viewer: str, node: str, work_types: list[str],
                              timeout: float = 60.0) -> None:
        """``viewer`` sees ``node`` advertise all of ``work_types``."""

        def advertised() -> bool:
            for ad in self.nodes[viewer].status()["Advertisements"]:
                if ad["NodeID"] == node and ad.get("WorkCommands"):
                    names = {c["WorkType"] for c in ad["WorkCommands"]}
                    if set(work_types) <= names:
                        return True
            return False

        wait_until(advertised, timeout=timeout, what=f"{node}'s work types on {viewer}")

    def stop(self) -> None:
        """SIGTERM every node at once, then wait for each (one by one, every exit would be
        noticed and re-routed around by all the nodes still running)."""
        for node in self.nodes.values():
            node.signal(signal.SIGTERM)
        for node in self.nodes.values():
            node.stop()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_bench(prefix: str, run: Callable[[Mesh], Any], report: Callable[[Any], str],
              failures: tuple[type[BaseException], ...]) -> None:
    """A bench script's main: ``run`` on a scratch mesh, print ``report`` of its result, and
    exit with ``FAIL: <why>`` on one of ``failures``; the scratch mesh is always removed."""
    mesh = Mesh(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        print(report(run(mesh)))
    except failures as exc:
        sys.exit(f"FAIL: {exc}")
    finally:
        mesh.cleanup()


#: Links of the ten-node topology of the seed's Demo 04, as (dialer, listener).
#: Reconstructed: two controllers, east and west relays, three executors, and two
#: independent paths from west-controller01 to east-executor01.
DEMO04_LINKS: tuple[tuple[str, str], ...] = (
    ("east-relayer01", "controller01"),
    ("east-relayer02", "controller01"),
    ("west-relayer01", "controller01"),
    ("west-relayer01", "west-controller01"),
    ("west-relayer02", "west-controller01"),
    ("west-relayer03", "west-relayer01"),
    ("west-relayer03", "west-relayer02"),
    ("west-relayer02", "east-relayer02"),
    ("east-executor01", "east-relayer01"),
    ("east-executor01", "east-relayer02"),
    ("west-executor01", "west-relayer03"),
    ("west-executor02", "west-relayer03"),
)
DEMO04_RELAYS = ("east-relayer01", "east-relayer02", "west-relayer01", "west-relayer02",
                 "west-relayer03")


def build_diamond(mesh: Mesh, executor_sections: Iterable[dict] = ()) -> Mesh:
    """controller01 → relayer01 (cost 1) / relayer02 (cost 2) → executor01."""
    mesh.add("controller01")
    mesh.add("relayer01")
    mesh.add("relayer02")
    mesh.add("executor01", listen=False, sections=executor_sections)
    mesh.link("relayer01", "controller01", cost=1.0)
    mesh.link("relayer02", "controller01", cost=2.0)
    mesh.link("executor01", "relayer01")
    mesh.link("executor01", "relayer02")
    return mesh


def build_demo04(mesh: Mesh, executor_sections: Iterable[dict] = ()) -> Mesh:
    """The ten nodes of Demo 04; every executor gets ``executor_sections``."""
    listeners = {listener for _, listener in DEMO04_LINKS}
    names = ["controller01", "west-controller01", *DEMO04_RELAYS, "east-executor01",
             "west-executor01", "west-executor02"]
    for name in names:
        sections = list(executor_sections) if "executor" in name else []
        mesh.add(name, listen=name in listeners, sections=sections)
    for dialer, listener in DEMO04_LINKS:
        mesh.link(dialer, listener)
    return mesh


# -- clusters for plugin tests (used by the ``mesh_cluster`` fixture of mesh.pytest_plugin) ------

#: Topologies :func:`build_cluster` knows: each maps node names to (dialer, listener) links.
TOPOLOGIES: dict[str, Callable[[list[str]], list[tuple[str, str]]]] = {
    # every node dials the one before it: node1 - node2 - node3
    "line": lambda names: list(zip(names[1:], names)),
    # every node dials the first one
    "star": lambda names: [(name, names[0]) for name in names[1:]],
    # every node dials every node before it
    "full": lambda names: [(b, a) for i, a in enumerate(names) for b in names[i + 1:]],
}


def build_cluster(workdir: Path, n: int = 3, topology: str = "line", *,
                  names: Iterable[str] | None = None,
                  sections: dict[str, Iterable[dict[str, Any]]] | None = None,
                  env: dict[str, dict[str, str]] | None = None,
                  plugins: Iterable[str] | None = ()) -> Mesh:
    """A :class:`Mesh` of ``n`` nodes linked as ``topology`` (not started yet).

    :param names: node IDs (default ``node1`` ... ``nodeN``).
    :param sections: extra config sections per node ID, e.g.
        ``{"node2": [{"work-echo": {"worktype": "echo"}}]}``.
    :param env: extra environment variables per node ID.
    :param plugins: distributions or entry points the nodes load besides mesh's own
        (``MESH_LOAD_PLUGINS``), e.g. ``["mesh-plugin-echo"]``; ``None`` loads every installed
        plugin.  The default loads none: tests do not see ambient plugins.
    :raises ValueError: an unknown topology, a wrong number of names, or sections or env for a
        node that is not in the cluster.
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown topology {topology!r}; use one of {', '.join(TOPOLOGIES)}")
    node_names = list(names) if names is not None else [f"node{i}" for i in range(1, n + 1)]
    if names is not None and len(node_names) != n:
        raise ValueError(f"{len(node_names)} names given for {n} nodes")
    for what, given in (("sections", sections), ("env", env)):
        unknown = sorted(set(given or {}) - set(node_names))
        if unknown:
            raise ValueError(f"{what} for unknown nodes {unknown}; nodes are {node_names}")
    links = TOPOLOGIES[topology](node_names)
    listeners = {listener for _, listener in links}
    base_env = {} if plugins is None else {"MESH_LOAD_PLUGINS": ",".join(["mesh", *plugins])}
    cluster = Mesh(workdir)
    for name in node_names:
        cluster.add(name, listen=name in listeners, sections=(sections or {}).get(name, ()),
                    env={**base_env, **(env or {}).get(name, {})})
    for dialer, listener in links:
        cluster.link(dialer, listener)
    return cluster


def wait_services(cluster: Mesh, service: str = "control", timeout: float = 60.0) -> None:
    """Every node sees every other node advertise ``service`` (remote work needs ``control``)."""
    names = set(cluster.nodes)

    def advertised() -> bool:
        for node in cluster.nodes.values():
            seen = {ad["NodeID"] for ad in node.status()["Advertisements"]
                    if ad.get("Service") == service}
            if not seen >= names - {node.name}:
                return False
        return True

    wait_until(advertised, timeout=timeout, what=f"every node's {service!r} advertisement")


def kill_runners(under: Path) -> list[int]:
    """SIGKILL every command runner working below ``under`` and its command's session.

    Units of the ``command`` work type (and of work types built on it) outlive the node that
    started them by design; tests stop them by pid.  Candidates are the runner pid of each unit
    status file below ``under`` (``ExtraData.Pid``) and, for runners that have not recorded it
    yet, every process; a candidate is a runner if it was forked by a node's runner server (its
    command line is the server's) and holds its unit directory open (the server itself holds
    none), or was started as its own interpreter and names the directory on its command line.
    Returns the pids signalled.
    """
    roots = tuple({os.fsencode(str(under)), os.fsencode(os.path.realpath(under))})

    def below(path: bytes) -> bool:
        return any(path == root or path.startswith(root + b"/") for root in roots)

    def is_runner(pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if b"command_runner" in cmdline:
            return any(root in cmdline for root in roots)
        if b"from runner_server import main" not in cmdline:  # a runner server's
            return False
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if below(os.fsencode(os.readlink(f"/proc/{pid}/fd/{fd}"))):
                    return True
            except OSError:
                continue
        return False

    candidates: set[int] = set()
    for status in under.rglob("status") if under.is_dir() else ():
        try:
            extra = json.loads(status.read_text()).get("ExtraData")
        except (OSError, ValueError, AttributeError):
            continue
        pid = extra.get("Pid") if isinstance(extra, dict) else None
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            candidates.add(pid)
    candidates.update(int(name) for name in os.listdir("/proc") if name.isdigit())
    killed: list[int] = []
    for runner in sorted(candidates):
        if runner == os.getpid() or not is_runner(runner):
            continue
        for pid in session_members(runner):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def session_members(session: int) -> list[int]:
    """Live pids whose session ID is ``session``."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            data = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2:].split()
        if int(fields[3]) == session and fields[0] not in (b"Z", b"X"):
            out.append(int(name))
    return out


# -- single units (used by the ``unit_handle`` fixture) ---------------------------------------


@dataclass
class WatchedUnit(UnitHandle):
    """A :class:`UnitHandle` whose ``notify()`` records the status it sees and sets ``changed``.

    Drive a work type with it and wait for what it reports::

        await work_type.start(unit)
        status = await unit.final()
    """

    #: The status read at each ``notify()`` call, in order.
    seen: list[UnitStatus] = field(default_factory=list)
    #: Set by every ``notify()`` call.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.notify = self._notified

    def _notified(self) -> None:
        try:
            self.seen.append(self.status())
        except UnitStoreError:
            pass  # released
        self.changed.set()

    async def until(self, condition: Callable[[UnitStatus], bool], *, timeout: float = 15.0,
                    what: str = "condition") -> UnitStatus:
        """Wait, woken only by ``notify()``, until the status satisfies ``condition``.

        :raises TimeoutError: at the deadline (a work type that forgets to notify ends here).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.changed.clear()
            status = self.status()
            if condition(status):
                return status
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"unit {self.unit_id}: timed out after {timeout}s waiting for "
                                   f"{what} (last status {status.to_dict()}; does the work type "
                                   f"call unit.notify() after each change?)")
            try:
                async with asyncio.timeout(remaining):
                    await self.changed.wait()
            except asyncio.TimeoutError:
                pass

    async def final(self, *, timeout: float = 15.0) -> UnitStatus:
        """Wait until the unit is Succeeded, Failed or Canceled; returns that status."""
        return await self.until(lambda s: s.state in FINAL, timeout=timeout,
                                what="a final state")

    @property
    def stdout(self) -> bytes:
        """The unit's output so far."""
        try:
            return self.stdout_path.read_bytes()
        except FileNotFoundError:
            return b""


def make_unit(store: UnitStore, work_type: WorkType | str = "test", *, stdin: bytes = b"",
              params: dict[str, str] | None = None, node: Any = None) -> WatchedUnit:
    """Create a Pending unit as the kernel does before ``start``: status, ExtraData, stdin.

    :param work_type: the work type (its ``check_params(params)`` gives the ExtraData) or just
        the name to record.
    """
    params = dict(params or {})
    if isinstance(work_type, str):
        name, extra = work_type, None
    else:
        name, extra = work_type.name, work_type.check_params(params)
    unit_id = store.create(name, extra, detail="Waiting for Input Data")
    (store.path(unit_id) / "stdin").write_bytes(stdin)
    return WatchedUnit(unit_id, store, params, node=node)
