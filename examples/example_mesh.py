"""What the examples' ``run.py`` scripts share: a mesh started from an example's own configs,
a shell that runs ``mesh``/``receptorctl`` against one node, and EXPECTED/OBSERVED checks.

Each example folder holds ``configs/<node>.yml``: ordinary Receptor-style configs in which two
placeholders are filled in before the nodes start,

* ``${port:NODE}``: the TCP port NODE listens on (a free port on 127.0.0.1, chosen per run);
* ``${rundir}``: the run's scratch directory (control sockets, data, logs).

The rendered configs, the node logs and the unit data live in the run directory, which is removed
at the end (pass ``--keep`` to a ``run.py`` to keep it and print where it is).
Every node is a ``mesh node -c`` child process tracked by pid and stopped in a ``finally``
block, also when the script fails or gets SIGTERM (or Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

try:
    from mesh.testing import Mesh, NodeProcess, free_port, wait_until
except ImportError:  # pragma: no cover - depends on how the script is started
    sys.exit("mesh is not installed in this Python; run `make install` and start the example "
             "with .venv/bin/python examples/<example>/run.py")

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
MESH = [sys.executable, "-m", "mesh"]
STATES = {0: "Pending", 1: "Running", 2: "Succeeded", 3: "Failed", 4: "Canceled"}


class ExampleError(Exception):
    """Something in an example's setup is wrong (a config, a placeholder)."""


def render_config(template: str, ports: dict[str, int], rundir: Path) -> str:
    """Fill in ``${port:NODE}`` and ``${rundir}``; any other ``${...}`` is an error."""

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key == "rundir":
            return str(rundir)
        kind, _, name = key.partition(":")
        if kind == "port" and name in ports:
            return str(ports[name])
        raise ExampleError(f"unknown placeholder ${{{key}}} (known: ${{rundir}}, "
                           f"${{port:NODE}} for NODE in {sorted(ports)})")

    return PLACEHOLDER.sub(substitute, template)


def listening_nodes(templates: Iterable[str]) -> set[str]:
    """The NODE names of every ``${port:NODE}`` placeholder."""
    return {key.partition(":")[2] for text in templates for key in PLACEHOLDER.findall(text)
            if key.startswith("port:")}


@dataclass
class ConfigNode(NodeProcess):
    """A node that runs an example's config file (rendered) instead of generated sections."""

    rendered: str = ""
    parsed: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parsed = yaml.safe_load(self.rendered) or []

    def section(self, name: str) -> dict[str, Any]:
        for item in self.parsed:
            if isinstance(item, dict) and name in item:
                return item[name] or {}
        return {}

    def write_config(self) -> None:
        self.config_path.write_text(self.rendered)

    @property
    def socket(self) -> Path:  # type: ignore[override]
        return Path(self.section("control-service")["filename"])

    @property
    def datadir(self) -> Path:  # type: ignore[override]
        return Path(self.section("node")["datadir"])

    def unit_dir(self, unit_id: str) -> Path:
        return self.datadir / self.name / unit_id


class ExampleMesh(Mesh):
    """The nodes of ``<example>/configs/*.yml``, one process each, in a scratch directory."""

    def __init__(self, example_dir: Path, rundir: Path) -> None:
        super().__init__(rundir)
        templates = {path.stem: path.read_text()
                     for path in sorted((example_dir / "configs").glob("*.yml"))}
        if not templates:
            raise ExampleError(f"no configs in {example_dir / 'configs'}")
        unknown = listening_nodes(templates.values()) - set(templates)
        if unknown:
            raise ExampleError(f"${{port:...}} names nodes without a config: {sorted(unknown)}")
        self.ports = {name: free_port() for name in sorted(listening_nodes(templates.values()))}
        for name, template in templates.items():
            node = ConfigNode(name, rundir / name, log_level="info",
                              rendered=render_config(template, self.ports, rundir))
            node_id = node.section("node").get("id")
            if node_id != name:
                raise ExampleError(f"configs/{name}.yml: node id is {node_id!r}; "
                                   f"name the file after the node")
            self.nodes[name] = node

    def node(self, name: str) -> ConfigNode:
        return self.nodes[name]  # type: ignore[return-value]

    def links(self) -> set[tuple[str, str]]:
        """(dialer, listener) for every ``tcp-peer`` that dials another example node."""
        by_port = {port: name for name, port in self.ports.items()}
        found = set()
        for node in self.nodes.values():
            for item in node.parsed:  # type: ignore[attr-defined]
                if isinstance(item, dict) and "tcp-peer" in item:
                    port = int(str(item["tcp-peer"]["address"]).rpartition(":")[2])
                    if port in by_port:
                        found.add((node.name, by_port[port]))
        return found


def _find_receptorctl() -> str | None:
    beside = Path(sys.executable).parent / "receptorctl"
    return str(beside) if beside.exists() else shutil.which("receptorctl")


@dataclass
class Check:
    title: str
    ok: bool


class Demo:
    """One example run: its mesh, the commands it shows and the checks it makes."""

    def __init__(self, script: str, title: str, description: str = "") -> None:
        self.dir = Path(script).resolve().parent
        self.name = self.dir.name
        self.title = title
        self.description = description
        self.parser = argparse.ArgumentParser(description=f"{title}. {description}".strip())
        self.parser.add_argument("--keep", action="store_true",
                                 help="keep the run directory (configs, logs, unit data)")
        self.args: argparse.Namespace | None = None
        self.mesh: ExampleMesh | None = None
        self.checks: list[Check] = []
        self.commands = 0
        self.started = time.monotonic()
        self.receptorctl = _find_receptorctl()

    # -- running -------------------------------------------------------------------------

    def run(self, body: Callable[["Demo"], None], argv: list[str] | None = None) -> int:
        """Parse arguments, start the mesh, run ``body``, stop everything; the exit code."""
        self.args = self.parser.parse_args(argv)
        self.started = started = time.monotonic()
        previous = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        rundir = Path(tempfile.mkdtemp(prefix=f"mesh-{self.name[:2]}-"))
        error: str | None = None
        print(f"=== {self.title} ===", flush=True)
        if self.description:
            print(textwrap.fill(self.description, 92), flush=True)
        try:
            self.mesh = ExampleMesh(self.dir, rundir)
            body(self)
        except KeyboardInterrupt:
            error = "interrupted"
        except Exception as exc:  # report, stop the nodes, exit non-zero
            error = f"{type(exc).__name__}: {exc}"
            self._print_log_tails()
        finally:
            # a second Ctrl-C or SIGTERM must not cut the cleanup short
            interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if self.mesh is not None:
                self.mesh.stop()
            if self.args.keep:
                print(f"\nrun directory kept: {rundir}")
            else:
                shutil.rmtree(rundir, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, interrupt)
        failed = [c for c in self.checks if not c.ok]
        elapsed = time.monotonic() - started
        print("\n=== Summary ===")
        nodes = len(self.mesh.nodes) if self.mesh else 0
        print(f"{self.name}: {nodes} nodes, {self.commands} commands, "
              f"{len(self.checks) - len(failed)} of {len(self.checks)} checks as expected, "
              f"{elapsed:.1f} s")
        for check in failed:
            print(f"NOT AS EXPECTED: {check.title}")
        if error:
            print(f"FAILED: {error}")
        if error or failed:
            return 1
        print("OK")
        return 0

    def _print_log_tails(self) -> None:
        if self.mesh is None:
            return
        for node in self.mesh.nodes.values():
            print(f"--- last lines of {node.name}'s log ---")
            print(node.log_tail(8))

    # -- presentation ----------------------------------------------------------------------

    def step(self, title: str) -> None:
        print(f"\n--- {title} ---  [{time.monotonic() - self.started:.1f} s]", flush=True)

    def start(self, *names: str) -> None:
        """Start the named nodes (all by default) and wait until their sockets answer."""
        assert self.mesh is not None
        chosen = [self.mesh.node(n) for n in names] if names else list(self.mesh.nodes.values())
        print(f"starting {', '.join(n.name for n in chosen)}: mesh node -c "
              f"<rundir>/<node>/<node>.yml, from configs/<node>.yml with ports filled in ...",
              flush=True)
        for node in chosen:
            node.start(wait=False)
        for node in chosen:
            node.wait_ready()

    def kill(self, name: str) -> None:
        """SIGKILL a node, as a crash would."""
        node = self.mesh.node(name)  # type: ignore[union-attr]
        print(f"*** kill -9 {name} (pid {node.proc.pid if node.proc else '?'})  "
              f"[{time.monotonic() - self.started:.1f} s]", flush=True)
        node.kill()

    def restart(self, name: str) -> None:
        print(f"*** start {name} again  [{time.monotonic() - self.started:.1f} s]", flush=True)
        self.mesh.node(name).start()  # type: ignore[union-attr]

    def sh(self, node: str, *argv: str, input: bytes | None = None, check: bool = True,
           show_output: bool = True, live: bool = False, cwd: Path | None = None,
           stdout_to: str | None = None,
           timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        """Run ``mesh ...`` or ``receptorctl ...`` against ``node``'s control socket.

        The socket is passed the way a user would: ``MESH_SOCKET`` and
        ``RECEPTORCTL_SOCKET`` are set, so the printed command is what one types.
        Commands run in ``cwd``, by default the run directory, so files the example writes
        there are named relatively. ``live`` prints stdout line by line as it arrives (no
        stdin then); ``stdout_to`` writes stdout to that file in ``cwd`` (``> FILE``).
        """
        assert self.mesh is not None
        program, *rest = argv
        if program == "mesh":
            executable = MESH
        elif program == "receptorctl" and self.receptorctl is not None:
            executable = [self.receptorctl]
        elif program == "receptorctl":
            # the examples only use options that `mesh` spells the same way
            print("(receptorctl is not installed: `pip install receptorctl`; "
                  "running the same command with mesh)")
            executable = MESH
        else:
            executable = [program]
        sock = str(self.mesh.node(node).socket)
        env = {**os.environ, "MESH_SOCKET": sock, "RECEPTORCTL_SOCKET": sock}
        cwd = cwd or self.mesh.workdir
        redirect = f" > {shlex.quote(stdout_to)}" if stdout_to else ""
        print(f"\n[{node}]$ {shlex.join(argv)}{redirect}", flush=True)
        self.commands += 1
        if live:
            result = _run_live([*executable, *rest], env=env, timeout=timeout, cwd=cwd)
        else:
            result = subprocess.run([*executable, *rest], input=input, capture_output=True,
                                    env=env, timeout=timeout, cwd=cwd)
        if stdout_to:
            (cwd / stdout_to).write_bytes(result.stdout)
        if show_output:
            printed = (result.stderr,) if live or stdout_to else (result.stdout, result.stderr)
            for stream in printed:
                text = stream.decode(errors="replace")
                if text:
                    print(text, end="" if text.endswith("\n") else "\n", flush=True)
        if check and result.returncode != 0:
            raise ExampleError(f"`{shlex.join(argv)}` exited with {result.returncode}: "
                               f"{result.stderr.decode(errors='replace').strip()}")
        return result

    def expect(self, title: str, expected: str, observed: str, ok: bool) -> bool:
        """Print EXPECTED beside OBSERVED and remember whether they agree."""
        self.checks.append(Check(title, ok))
        width = 44
        left = _wrap(expected, width)
        right = _wrap(observed, width)
        print(f"  check: {title}  [{time.monotonic() - self.started:.1f} s]")
        print(f"    {'EXPECTED':<{width}} | OBSERVED")
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            print(f"    {a:<{width}} | {b}".rstrip())
        print(f"    {'-> as expected' if ok else '-> NOT AS EXPECTED'}", flush=True)
        return ok

    # -- observations ----------------------------------------------------------------------

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
        return wait_until(condition, timeout=timeout, interval=0.05, what=what)

    def within(self, condition: Callable[[], Any], timeout: float) -> float | None:
        """Seconds until ``condition`` held, or None if it did not within ``timeout``."""
        started = time.monotonic()
        try:
            wait_until(condition, timeout=timeout, interval=0.05)
        except TimeoutError:
            return None
        return time.monotonic() - started

    @property
    def rundir(self) -> Path:
        assert self.mesh is not None
        return self.mesh.workdir

    def route(self, viewer: str, target: str) -> str | None:
        return self.mesh.node(viewer).routes().get(target)  # type: ignore[union-attr]

    def unit_status(self, node: str, unit_id: str) -> dict[str, Any]:
        return self.mesh.node(node).control(f"work status {unit_id}")  # type: ignore[union-attr]


def _run_live(argv: list[str], env: dict[str, str], timeout: float,
              cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` printing its stdout as it comes; killed at ``timeout``."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    chunks = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            chunks.append(line)
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
        stderr = proc.stderr.read()
        proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, b"".join(chunks), stderr)


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(line, width) or [""])
    return lines


def state_name(status: dict[str, Any]) -> str:
    return STATES.get(status.get("State", -1), str(status.get("State")))


def submitted_unit_id(output: bytes) -> str:
    """The unit ID from ``work submit`` output (``Unit ID: abc123``)."""
    match = re.search(rb"Unit ID: (\S+)", output)
    if match is None:
        raise ExampleError(f"no unit ID in {output!r}")
    return match.group(1).decode()
