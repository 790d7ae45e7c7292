"""The weight of a mesh node: start-up time, CLI latency, idle memory and idle CPU.

Prints one table.  Every figure is the median of ``--runs`` runs (default 7) with the min and
max beside it, and the target it is held to, marked ``met`` or ``MISSED``.  The rows, by the
``--only`` key that selects them:

``exec``
    exec -> control socket answers ``status``: from just before ``Popen([mesh, "node", "-c",
    cfg])`` (the console script) to the complete JSON reply of ``status`` on the node's Unix
    control socket, polled every 2 ms by a raw socket client in this process.  The node has a
    tcp-listener, a control-service and one work-command, and logs at info.  Beside it, exec ->
    node fully started: until the node's JSON log holds its ``node_started`` event
    (informational).  One untimed warm-up start comes first (page cache, ``.pyc`` files).
``cli``
    ``mesh --version`` and ``mesh --help``: wall time of the process (after one warm-up).
``client``
    ``mesh status`` and ``mesh work list`` against one running node (``--socket PATH``), and
    ``receptorctl --socket PATH status`` as a reference.
``rss``
    VmRSS of node a of a fresh pair a <- b, 5 s after each has a route to the other; one fresh
    pair per run.
``idle``
    CPU time (utime + stime) of all ten nodes of the Demo 04 mesh over ``--idle-window``
    seconds (default 30), 5 s after convergence; one window per run, all on the same mesh.
``runner``
    The per-unit command runner of the ``command`` work type (``python -I -S``, stdlib only):
    wall and CPU time of one runner running ``true`` for a fresh unit until it exits with the
    final status written, against ``true`` alone.
``mesh``
    For each of ``--mesh-sizes`` (default ``100,300``): the mesh of ``bench/mesh100_bench.py``
    from spawning the processes to all control sockets answering, from there to every node
    listing all nodes, their sum, and the RSS per node (median, min and max over the nodes).
    One run per size; the 300-node mesh needs about 15 GB and takes minutes.

The nodes of the rss, idle and mesh rows are started as ``python -m mesh`` by
``mesh.testing`` (rss and idle log at info, mesh at warning).

Usage::

    .venv/bin/python bench/startup_bench.py [--runs 7] [--idle-window 30]
        [--mesh-sizes 100,300] [--mesh-timeout 600]
        [--only exec,cli,client,rss,idle,runner,mesh]

Run it with any checkout's venv python: ``mesh`` and ``receptorctl`` are the console scripts
beside ``sys.executable`` and ``mesh.testing`` comes from the installed package.  Progress goes
to stderr, the table to stdout.  Exits 1 when some figure could not be measured (its row says
why), 130 when interrupted (Ctrl-C or SIGTERM: the nodes are stopped and the rows measured
so far printed), else 0, whether or not the targets are met.  Each big mesh is given up
after twice ``--mesh-timeout`` plus a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import yaml

import mesh
from mesh.testing import Mesh, NodeProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from demo_topologies import build_demo04  # noqa: E402  (the demos' topologies)
import mesh100_bench  # noqa: E402  (a sibling script, not a package)

T = TypeVar("T")

BIN = Path(sys.executable).parent
MESH = BIN / "mesh"
RECEPTORCTL = BIN / "receptorctl"
#: Unix socket paths are limited to 108 bytes: scratch directories are short paths in /tmp.
SCRATCH = "/tmp"
NODE_ID = "bench"
GREETING = f"Receptor Control, node {NODE_ID}\n".encode()
POLL_INTERVAL = 0.002
#: Seconds one control-socket attempt may take before it is retried.
ATTEMPT_TIMEOUT = 1.0
START_TIMEOUT = 60.0
CONVERGE_TIMEOUT = 120.0
COMMAND_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
#: Seconds a mesh idles after convergence before it is measured.
SETTLE_S = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class FigureFailed(RuntimeError):
    """A figure could not be measured (a node died, a command failed, a wait timed out)."""


# -- the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure: its samples, how to print them, and the target the median is held to."""

    figure: str
    samples: list[float]
    unit: str = "s"
    digits: int = 3
    #: The median must be at most this (``None``: informational).
    target: float | None = None
    notes: str = ""

    def value(self, number: float) -> str:
        return f"{number:.{self.digits}f} {self.unit}"

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """figure, median, min, max, target and notes as printed."""
        if not self.samples:
            return self.figure, "-", "-", "-", self.verdict(), self.notes
        return (self.figure, self.value(statistics.median(self.samples)),
                self.value(min(self.samples)), self.value(max(self.samples)), self.verdict(),
                self.notes)

    def verdict(self) -> str:
        if not self.samples:
            return "FAILED"
        if self.target is None:
            return ""
        met = statistics.median(self.samples) <= self.target
        return f"<= {self.value(self.target)} {'met' if met else 'MISSED'}"


def failed_row(figure: str, exc: BaseException) -> Row:
    """The row of ``figure`` whose measurement raised ``exc``."""
    why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    progress(f"  {figure}: {why}")
    return Row(figure, [], notes=why)


def measured(figure: str, take: Callable[[], list[float]], **fields: Any) -> Row:
    """The row of ``figure`` with the samples ``take()`` returns, or a failed row saying why."""
    try:
        return Row(figure, take(), **fields)
    except Exception as exc:  # reported in the table; the other figures still run
        return failed_row(figure, exc)


def render(rows: list[Row], header: str) -> str:
    """The rows as an aligned table under ``header``."""
    titles = ("figure", "median", "min", "max", "target", "notes")
    table = [titles, *(row.cells() for row in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(titles) - 1)]
    lines = [header]
    for cells in table:
        aligned = [cells[0].ljust(widths[0]),
                   *(cell.rjust(width) for cell, width in zip(cells[1:4], widths[1:4])),
                   cells[4].ljust(widths[4]), cells[5]]
        lines.append("  ".join(aligned).rstrip())
    return "\n".join(lines)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def shown(value: object) -> str:
    """A sample for the progress lines: floats to three decimals, tuples joined."""
    if isinstance(value, tuple):
        return ", ".join(shown(item) for item in value)
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def repeat(label: str, runs: int, measure: Callable[[], T], *, warm_up: bool = False) -> list[T]:
    """``measure()`` ``runs`` times (after one untimed call with ``warm_up``), with progress."""
    if warm_up:
        measure()
    results = []
    for run in range(1, runs + 1):
        results.append(measure())
        progress(f"  {label} {run}/{runs}: {shown(results[-1])}")
    return results


# -- processes and scratch directories ---------------------------------------------------------


def scratch_dir(tag: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"msb-{tag}-", dir=SCRATCH))


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(timeout=STOP_TIMEOUT)


def cleanup_mesh(cluster: Mesh) -> None:
    """Stop every node of ``cluster`` by pid, SIGKILL any left, and remove its directory."""
    try:
        cluster.stop()
    finally:
        for node in cluster.nodes.values():
            if node.alive:
                node.kill()
        shutil.rmtree(cluster.workdir, ignore_errors=True)


def time_command(argv: list[str | Path]) -> float:
    """Wall time of running ``argv`` to completion, its stdout discarded."""
    started = time.perf_counter()
    done = subprocess.run([str(arg) for arg in argv], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=COMMAND_TIMEOUT)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise FigureFailed(f"{' '.join(map(str, argv))} exited with {done.returncode}: "
                           f"{done.stderr.decode(errors='replace').strip()[-300:]}")
    return elapsed


def command_samples(label: str, argv: list[str | Path], runs: int) -> list[float]:
    """``runs`` wall times of ``argv``, after one untimed warm-up run."""
    return repeat(label, runs, partial(time_command, argv), warm_up=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (fields 14 and 15 of /proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# -- one node on its own: the exec and client rows ---------------------------------------------


def query_status(path: Path) -> dict[str, Any]:
    """One control session: greeting, ``status``, its JSON reply; any failure raises."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(ATTEMPT_TIMEOUT)
        sock.connect(str(path))
        with sock.makefile("rb") as reader:
            greeting = reader.readline()
            if greeting != GREETING:
                raise ValueError(f"unexpected greeting {greeting!r}")
            sock.sendall(b"status\n")
            status = json.loads(reader.readline())
    if not isinstance(status, dict) or status.get("NodeID") != NODE_ID:
        raise ValueError(f"unexpected status reply {status!r:.200}")
    return status


def status_answers(path: Path) -> bool:
    try:
        query_status(path)
    except (OSError, ValueError):  # no socket yet, refused, timed out, cut short
        return False
    return True


def node_started_logged(log: Path) -> bool:
    """Whether the JSON log ``log`` holds a ``node_started`` event."""
    try:
        data = log.read_bytes()
    except OSError:
        return False
    if b'"node_started"' not in data:
        return False
    for line in data.splitlines():
        try:
            if json.loads(line).get("event") == "node_started":
                return True
        except (ValueError, AttributeError):
            continue
    return False


class StandaloneNode:
    """A ``mesh node`` started through the console script in its own scratch directory."""

    def __init__(self) -> None:
        self.workdir = scratch_dir("node")
        self.socket = self.workdir / "socket"
        self.log = self.workdir / "node.log"
        self.config = self.workdir / "node.yml"
        self.proc: subprocess.Popen[bytes] | None = None
        sections = [
            {"node": {"id": NODE_ID, "datadir": str(self.workdir / "data")}},
            {"log-level": "info"},
            {"tcp-listener": {"port": free_port(), "bindaddr": "127.0.0.1"}},
            {"control-service": {"service": "control", "filename": str(self.socket)}},
            {"work-command": {"worktype": "echo", "command": "cat"}},
        ]
        self.config.write_text(yaml.safe_dump(sections, sort_keys=False))

    def __enter__(self) -> "StandaloneNode":
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if self.proc is not None:
                stop_process(self.proc)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def spawn(self) -> None:
        env = {**os.environ, "MESH_LOG_FORMAT": "json"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(MESH), "node", "-c", str(self.config)],
                                         stdout=log, stderr=log, env=env,
                                         start_new_session=True)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise FigureFailed(f"node exited with {self.proc.returncode}: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "<no log>"

    def time_start(self) -> tuple[float, float]:
        """Spawn the node; seconds until ``status`` answers and until ``node_started`` is
        logged, each polled every 2 ms."""
        started = time.perf_counter()
        self.spawn()
        answered: float | None = None
        logged: float | None = None
        while answered is None or logged is None:
            if answered is None and status_answers(self.socket):
                answered = time.perf_counter() - started
            if logged is None and node_started_logged(self.log):
                logged = time.perf_counter() - started
            self.check_alive()
            if time.perf_counter() - started > START_TIMEOUT:
                raise FigureFailed(f"node not started after {START_TIMEOUT:g} s "
                                   f"(status answered: {answered is not None}, node_started "
                                   f"logged: {logged is not None}): {self.log_tail()}")
            time.sleep(POLL_INTERVAL)
        return answered, logged


def one_start() -> tuple[float, float]:
    """Start a fresh node and stop it: (exec -> status answered, exec -> node_started)."""
    with StandaloneNode() as node:
        return node.time_start()


def exec_rows(args: argparse.Namespace) -> list[Row]:
    times = repeat("exec", args.runs, one_start, warm_up=True)
    return [Row("exec -> control socket answers `status`", [t[0] for t in times], target=0.10,
                notes="console script, raw AF_UNIX client polling every 2 ms"),
            Row("exec -> node fully started", [t[1] for t in times],
                notes="`node_started` in the JSON log")]


def cli_rows(args: argparse.Namespace) -> list[Row]:
    return [measured(f"`mesh {flag}`", partial(command_samples, flag, [MESH, flag], args.runs),
                     target=0.08)
            for flag in ("--version", "--help")]


def client_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    with StandaloneNode() as node:
        node.time_start()
        commands: list[tuple[str, list[str | Path], float | None, str]] = [
            ("mesh status", [MESH, "status", "--socket", node.socket], 0.12, ""),
            ("mesh work list", [MESH, "work", "list", "--socket", node.socket], 0.12, ""),
            ("receptorctl status", [RECEPTORCTL, "--socket", node.socket, "status"], None,
             "reference: Receptor's own client"),
        ]
        for label, argv, target, notes in commands:
            rows.append(measured(f"`{label}` against a running node",
                                 partial(command_samples, label, argv, args.runs),
                                 target=target, notes=notes))
            node.check_alive()
    return rows


# -- meshes of mesh.testing: the rss, idle and mesh rows ---------------------------------------


@contextmanager
def scratch_mesh(tag: str) -> Iterator[Mesh]:
    """An empty :class:`Mesh` in a fresh scratch directory, cleaned up however the block ends."""
    cluster = Mesh(scratch_dir(tag))
    try:
        yield cluster
    finally:
        cleanup_mesh(cluster)


def start_at_info(cluster: Mesh) -> None:
    """Start every node of ``cluster`` logging at info, and wait until each routes to all."""
    for node in cluster.nodes.values():
        node.log_level = "info"
    cluster.start()
    cluster.wait_converged(timeout=CONVERGE_TIMEOUT)


def check_alive(nodes: list[NodeProcess]) -> None:
    dead = [node.name for node in nodes if not node.alive]
    if dead:
        raise FigureFailed(f"nodes exited: {', '.join(dead)}")


def pair_rss() -> float:
    """VmRSS in MiB of node a of a fresh pair a <- b, idle ``SETTLE_S`` after convergence."""
    with scratch_mesh("rss") as cluster:
        cluster.add("a")
        cluster.add("b")
        cluster.link("b", "a")
        start_at_info(cluster)
        time.sleep(SETTLE_S)
        check_alive(list(cluster.nodes.values()))
        pid = cluster.nodes["a"].proc.pid  # type: ignore[union-attr]  # started above
        return mesh100_bench.rss_mib(pid)


def rss_rows(args: argparse.Namespace) -> list[Row]:
    return [Row("idle RSS, one node linked to a peer", repeat("rss", args.runs, pair_rss),
                unit="MiB", digits=1, target=25 * 1000 * 1000 / 2**20,
                notes=f"VmRSS of a in a <- b, {SETTLE_S:.0f} s after both route; "
                      "a fresh pair per run (target 25 MB)")]


def cpu_window(nodes: list[NodeProcess], seconds: float) -> float:
    """CPU seconds all ``nodes`` use together over the next ``seconds``."""
    pids = [node.proc.pid for node in nodes if node.proc is not None]
    before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(seconds)
    check_alive(nodes)
    return sum(cpu_seconds(pid) for pid in pids) - before


def idle_rows(args: argparse.Namespace) -> list[Row]:
    with scratch_mesh("idle") as cluster:
        build_demo04(cluster)
        start_at_info(cluster)
        time.sleep(SETTLE_S)
        nodes = list(cluster.nodes.values())
        samples = repeat("idle window", args.runs,
                         lambda: cpu_window(nodes, args.idle_window))
    figure = f"idle CPU, Demo 04 mesh (10 nodes), per {args.idle_window:g} s"
    # The target is for a 30 s window; other windows are held to the same rate.
    return [Row(figure, samples, unit="CPU-s", target=0.30 * args.idle_window / 30,
                notes=f"utime+stime of all nodes, {args.runs} consecutive windows on one mesh")]


def runner_once(store: Any) -> tuple[float, float]:
    """Wall and CPU seconds of one command runner running ``true`` for a fresh unit, the way
    the command work type starts it (``python -I -S``, stdlib only)."""
    from mesh_builtin.detached_runner import RUNNER_BOOT

    unit_dir = store.path(store.create("bench", None))
    (unit_dir / "stdin").write_bytes(b"")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-I", "-S", "-c", RUNNER_BOOT, "--unitdir",
                           str(unit_dir), "--", "true"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=COMMAND_TIMEOUT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise FigureFailed(f"the runner exited with {done.returncode}: "
                           f"{done.stderr.decode(errors='replace')[-300:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu


def runner_rows(args: argparse.Namespace) -> list[Row]:
    from mesh.work.unitstore import UnitStore

    scratch = scratch_dir("runner")
    try:
        store = UnitStore(scratch, "bench")
        samples = repeat("runner", args.runs, partial(runner_once, store), warm_up=True)
        bare = command_samples("`true` alone", ["true"], args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    why = "python -I -S with the stdlib-only runner, command `true`, to exit with status written"
    return [Row("command runner start, per unit (wall)", [wall for wall, _ in samples],
                notes=why),
            Row("command runner start, per unit (CPU)", [cpu for _, cpu in samples],
                unit="CPU-s", notes="user + system time of the runner and `true`"),
            Row("`true` alone (wall)", bare, notes="reference: the command without a runner")]


@contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`FigureFailed` in the block after ``seconds``, whatever it is blocked in.

    ``mesh100_bench.run`` checks its deadline only between passes over every node's status,
    and on a saturated machine one pass can take an hour.
    """

    def expired(_signum: int, _frame: object) -> None:
        raise FigureFailed(f"{what}: gave up after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mesh_size_rows(nodes: int, timeout: float) -> list[Row]:
    """The rows of one run of ``bench/mesh100_bench.py``'s mesh of ``nodes`` nodes; the
    whole run may take ``timeout`` for the start, ``timeout`` for convergence and a minute."""
    progress(f"  {nodes}-node mesh: starting")
    with scratch_mesh(f"m{nodes}") as cluster, \
            watchdog(2 * timeout + 60, f"{nodes}-node mesh not converged"):
        result = mesh100_bench.run(cluster, nodes, timeout)
    progress(f"  {nodes}-node mesh: ready {result.start_s:.1f} s, "
             f"converged {result.converged_s:.1f} s later")
    one = f"1 run; {result.links} links"
    return [Row(f"{nodes}-node mesh: spawn -> all ready", [result.start_s], digits=1, notes=one),
            Row(f"{nodes}-node mesh: ready -> converged", [result.converged_s], digits=1,
                notes=one),
            Row(f"{nodes}-node mesh: spawn -> every node lists all {nodes}",
                [result.start_s + result.converged_s], digits=1,
                target=15.0 if nodes == 100 else None, notes=one),
            Row(f"{nodes}-node mesh: RSS per node", result.rss_mib, unit="MiB", digits=1,
                notes=f"1 run; median/min/max over the {len(result.rss_mib)} nodes")]


def mesh_rows(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for nodes in args.mesh_sizes:
        try:
            rows += mesh_size_rows(nodes, args.mesh_timeout)
        except Exception as exc:  # reported in the table; the other sizes still run
            rows.append(failed_row(f"{nodes}-node mesh", exc))
    return rows


# -- main --------------------------------------------------------------------------------------


SECTIONS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "exec": exec_rows,
    "cli": cli_rows,
    "client": client_rows,
    "rss": rss_rows,
    "idle": idle_rows,
    "runner": runner_rows,
    "mesh": mesh_rows,
}


def key_list(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = sorted(set(keys) - set(SECTIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; use {', '.join(SECTIONS)}")
    return keys


def size_list(text: str) -> list[int]:
    try:
        return [int(size) for size in text.split(",") if size.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of node counts: {text!r}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per figure (default 7)")
    parser.add_argument("--idle-window", type=float, default=30.0,
                        help="seconds of each idle-CPU window (default 30)")
    parser.add_argument("--mesh-sizes", type=size_list, default=[100, 300],
                        help='node counts of the big meshes, "" for none (default 100,300)')
    parser.add_argument("--mesh-timeout", type=float, default=600.0,
                        help="seconds a big mesh may take to start and to converge each "
                             "(default 600)")
    parser.add_argument("--only", type=key_list, default=list(SECTIONS),
                        help=f"comma list of rows to measure: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def measure(keys: list[str], args: argparse.Namespace) -> tuple[list[Row], bool]:
    """The rows of every section in ``keys`` (a section that fails gives a failed row), and
    whether Ctrl-C or SIGTERM cut the measuring short."""
    rows: list[Row] = []
    for key in keys:
        progress(f"{key}:")
        try:
            rows += SECTIONS[key](args)
        except KeyboardInterrupt as exc:  # its nodes are stopped: print what was measured
            rows.append(failed_row(f"[{key}] interrupted", exc))
            return rows, True
        except Exception as exc:  # reported in the table; the other sections still run
            rows.append(failed_row(f"[{key}] not measured", exc))
    return rows, False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows, interrupted = measure([key for key in SECTIONS if key in args.only], args)
    header = (f"mesh {mesh.__version__} from {Path(mesh.__file__).parent}; "
              f"{MESH}; {args.runs} runs per figure; {os.cpu_count()} CPUs")
    print(render(rows, header))
    if interrupted:
        return 130
    return 1 if any(not row.samples for row in rows) else 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: nodes stopped, directories removed


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    sys.exit(main())
