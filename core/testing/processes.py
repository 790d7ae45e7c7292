"""``mesh node`` child processes for tests: config, start, readiness, control, logs, stop.

Every node is a child process with its own config, control socket and log file in its own
directory, tracked by pid and stopped in teardown.  A node loads mesh's own plugins only, unless
the test names the plugins it wants (:attr:`NodeProcess.plugins`): tests never see whatever else
is installed in the environment.  A node run another way (in a network namespace, under a
profiler or a tracer) is a subclass that overrides :meth:`NodeProcess.argv` and keeps all that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from mesh.control.client import ControlClient, ControlClientError
from mesh.testing.polling import wait_until

MESH_BIN = [sys.executable, "-m", "mesh"]

#: The processes :meth:`NodeProcess.start` started, by pid (see :func:`running_node_pids`).
_started: dict[int, subprocess.Popen[bytes]] = {}


def running_node_pids() -> set[int]:
    """The pids of the nodes this process started that are still running."""
    for pid, proc in list(_started.items()):
        if proc.poll() is not None:
            del _started[pid]
    return set(_started)


def plugin_selection(plugins: Iterable[str] | None) -> dict[str, str]:
    """The environment that makes a node load mesh's own plugins and ``plugins`` (distribution
    or entry-point names, e.g. ``["mesh-plugin-echo"]``) and no other installed one
    (``MESH_LOAD_PLUGINS``); for ``None`` nothing (see :func:`plugin_environment`)."""
    return {} if plugins is None else {"MESH_LOAD_PLUGINS": ",".join(["mesh", *plugins])}


def plugin_environment(base: Mapping[str, str], plugins: Iterable[str] | None) -> dict[str, str]:
    """``base`` (e.g. ``os.environ``) with the plugin selection of ``plugins``: mesh's own and
    those named (:func:`plugin_selection`), or for ``None`` every installed plugin (no
    ``MESH_LOAD_PLUGINS``, whatever ``base`` says)."""
    env = {key: value for key, value in base.items()
           if plugins is not None or key != "MESH_LOAD_PLUGINS"}
    return {**env, **plugin_selection(plugins)}


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
    #: Extra environment variables (they win over :attr:`plugins`' selection).
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    #: Extra keys for the node section (e.g. {"streamdatagram": 1200}).
    node_extra: dict[str, Any] = field(default_factory=dict)
    #: Extra keys for the control-service section (e.g. {"tls": "srv"}).
    control_extra: dict[str, Any] = field(default_factory=dict)
    log_level: str = "debug"
    #: Installed plugins the node loads besides mesh's own (distribution or entry-point names,
    #: e.g. ``("mesh-plugin-echo",)``); ``None`` loads every installed plugin.
    plugins: tuple[str, ...] | None = ()

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

    def mesh_args(self) -> list[str]:
        """The ``mesh`` arguments that run this node: ``node -c CONFIG``."""
        return ["node", "-c", str(self.config_path)]

    def argv(self) -> list[str]:
        """The node's command line: ``python -m mesh`` with :meth:`mesh_args`.

        Override it to run the node another way (``ip netns exec NS`` before it, a profiler or
        a tracer instead of ``-m mesh``); :meth:`start` keeps the environment and the tracking.
        """
        return [*MESH_BIN, *self.mesh_args()]

    def environment(self) -> dict[str, str]:
        """The node's environment: this process's, JSON logs, the plugin selection of
        :attr:`plugins` (:func:`plugin_environment`), then :attr:`env`."""
        return {**plugin_environment(os.environ, self.plugins), "MESH_LOG_FORMAT": "json",
                **self.env}

    def start(self, *, wait: bool = True) -> "NodeProcess":
        """Write the config and start :meth:`argv` with :meth:`environment`, in a session of
        its own, logging to :attr:`log_path`; wait until it is ready unless ``wait`` is false."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                         env=self.environment(), start_new_session=True)
        _started[self.proc.pid] = self.proc
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
        only those named ``event`` whose keys equal ``fields`` (or, for a callable value,
        satisfy it: ``peer=lambda p: p.startswith("udp ")``)."""
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
                    and all(value(record.get(key)) if callable(value) else
                            record.get(key) == value for key, value in fields.items()):
                found.append(record)
        return found

    def wait_for_event(self, event: str, *, count: int = 1, timeout: float = 30.0,
                       **fields: Any) -> list[dict[str, Any]]:
        """Wait until the log holds ``count`` events named ``event`` that match ``fields`` (as
        in :meth:`log_events`); returns them all.

        :raises TimeoutError: fewer within ``timeout`` s.
        """
        def logged() -> list[dict[str, Any]]:
            found = self.log_events(event, **fields)
            return found if len(found) >= count else []

        return wait_until(logged, timeout=timeout,
                          what=f"{count}x {event} {fields} in {self.name}'s log")

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
