"""Work-unit latency and throughput on the line controller01 - relayer01 - executor01.

Starts three real ``mesh node`` processes on loopback and drives controller01's control
socket from outside, by default with receptorctl's Python library called the way AWX calls
it (``--client raw``: a plain control-socket client in this process instead; neither pays
a CLI's start-up).  Beside the mesh it runs the raw-TCP reference of ``raw_chain.py``: an
endpoint process on the executor's side and two asyncio relay processes, so bytes cross two
relay processes between the executor side and the client in both.

Every round measures each figure once, the reference right before the mesh; the table shows
the median of the rounds, min-max, the target (issue 14) and met/missed:

* a small job done like ``receptorctl work submit --rm --follow`` (submit, stream the
  results to EOF, status, release) through one relay: p50 and p95 of ``--jobs`` sequential
  jobs, the median of each step, the CPU each node spends per job;
* ``--concurrent`` such jobs at once (one thread each): wall time until all are back;
* result stream: a unit on executor01 writes N MB to stdout; time from submit to the last
  byte of its results at the client, against ``get N`` through the raw chain (a local unit
  on executor01 is shown as baseline); the ratio mesh MB/s / raw MB/s;
* payload: N MB of stdin to a remote ``wc -c``; time from the first payload byte to the
  ``Job Started`` reply (the controller stores the payload, then forwards it to executor01,
  which stores it and answers), against ``put`` through the raw chain in the other
  direction (first byte to the endpoint's count); the ratio.

Usage::

    .venv/bin/python bench/work_bench.py [--rounds 3] [--client receptorctl|raw]
        [--result-mb 100] [--payload-mb 50] [--jobs 50] [--concurrent 50]
        [--log-level info] [--profile controller01|relayer01|executor01]

``--profile NODE`` runs that node under cProfile and prints its top functions at the end.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from control_clients import CLIENTS, JobClient, small_job
from figures import Figure, Target, render
from raw_chain import BLOCK, PayloadClock, RawChain, fetch, push

from mesh.testing import MESH_BIN, Mesh, NodeProcess

BIGOUT = ("import sys; n = int(sys.argv[1]); b = bytes(range(256)) * 4096; "
          "w = sys.stdout.buffer.write\n"
          "while n > 0:\n"
          "    w(b[:n]); n -= len(b)\n")
WORK_TYPES = [
    {"work-command": {"worktype": "bigout", "command": sys.executable,
                      "params": f"-c '{BIGOUT}'", "allowruntimeparams": True}},
    {"work-command": {"worktype": "sink", "command": "wc", "params": "-c"}},
    {"work-command": {"worktype": "gather-hostname", "command": "hostname"}},
]
NODES = ("controller01", "relayer01", "executor01")
MB = 1000 * 1000
#: receptorctl sets no timeouts: a node that stops answering fails the bench, not hangs it.
CLIENT_TIMEOUT = 120.0


# -- nodes -----------------------------------------------------------------------------------


class ProfiledNode(NodeProcess):
    """A node run under cProfile (profile.out in its workdir)."""

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "cProfile", "-o", str(self.workdir / "profile.out"),
                *MESH_BIN[1:], *self.mesh_args()]


def start_line(workdir: Path, log_level: str, profile: str | None) -> Mesh:
    cluster = Mesh(workdir)
    for name in NODES:
        cluster.add(name, sections=WORK_TYPES if name == "executor01" else (),
                    node_class=ProfiledNode if name == profile else NodeProcess)
    cluster.link("relayer01", "controller01")
    cluster.link("executor01", "relayer01")
    for node in cluster.nodes.values():
        node.log_level = log_level
    try:
        cluster.start()
        cluster.wait_converged()
        cluster.wait_until_work_types("controller01", "executor01", ["bigout", "sink"])
    except BaseException:
        cluster.cleanup()
        raise
    return cluster


# -- figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """Every row of the table, in the order printed."""

    args: argparse.Namespace
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        a = self.args
        self.first = Figure("first small job after start (warm-up, once)", "ms",
                            note="each end node imports the QUIC stack on its first stream")
        self.p50 = Figure(f"small --rm --follow job through one relay, p50 of {a.jobs}", "ms",
                          Target("<=", 30))
        self.p95 = Figure("  p95", "ms")
        self.steps = [Figure(f"  {step} step, median", "ms")
                      for step in ("submit", "results", "status + release")]
        self.cpu = [Figure(f"  CPU per job, {name}", "ms",
                           note="with its command runners" if name == "executor01" else "")
                    for name in NODES]
        self.concurrent = Figure(f"{a.concurrent} concurrent small jobs, all results back",
                                 "s", Target("<=", 0.5))
        self.result = Figure(f"result {a.result_mb} MB through one relay", "MB/s",
                             note="executor01 -> relayer01 -> controller01 -> client; "
                                  "submit to last byte")
        self.result_raw = Figure("  raw chain", "MB/s",
                                 note="endpoint -> relay -> relay -> client; connect to "
                                      "last byte")
        self.result_ratio = Figure("  ratio mesh / raw", "x", Target(">=", 0.7))
        self.local = Figure(f"  local unit on executor01 ({a.result_mb} MB, baseline)", "MB/s")
        self.payload = Figure(f"payload {a.payload_mb} MB in", "MB/s",
                              note="client -> controller01 -> relayer01 -> executor01; first "
                                   "byte to Job Started")
        self.payload_raw = Figure("  raw chain", "MB/s",
                                  note="client -> relay -> relay -> endpoint; first byte to "
                                       "its count")
        self.payload_ratio = Figure("  ratio mesh / raw", "x", Target(">=", 0.7))

    def rows(self) -> list[Figure]:
        return [self.first, self.p50, self.p95, *self.steps, *self.cpu, self.concurrent,
                self.result, self.result_raw, self.result_ratio, self.local,
                self.payload, self.payload_raw, self.payload_ratio]


# -- measurements ----------------------------------------------------------------------------


def result_seconds(client: JobClient, node: str, size: int) -> float:
    """Submit ``bigout size`` to ``node``; seconds from submit to the last result byte."""
    start = time.perf_counter()
    unit_id = client.submit(node, "bigout", params={"params": str(size)})
    got = client.results(unit_id)
    elapsed = time.perf_counter() - start
    client.status_and_release(unit_id)
    if got != size:
        raise RuntimeError(f"result stream from {node}: got {got} of {size} bytes")
    return elapsed


def payload_seconds(client: JobClient, payload: Path) -> float:
    """Send ``payload`` to ``wc -c`` on executor01; seconds from its first byte to
    ``Job Started``."""
    with PayloadClock(payload) as clock:
        unit_id = client.submit("executor01", "sink", clock)
        elapsed = time.perf_counter() - (clock.first or 0.0)
    counted = client.results(unit_id)
    status = client.status_and_release(unit_id)
    if counted == 0 or status["State"] != 2:
        raise RuntimeError(f"payload unit {unit_id}: {counted} bytes of output, {status}")
    return elapsed


def throughput_round(figs: Figures, client: JobClient, local: JobClient, chain: RawChain,
                     payload: Path) -> None:
    size = figs.args.result_mb * MB
    raw = size / fetch(chain.port, size) / MB
    mesh = size / result_seconds(client, "executor01", size) / MB
    figs.result_raw.add(raw)
    figs.result.add(mesh)
    figs.result_ratio.add(mesh / raw)
    figs.local.add(size / result_seconds(local, "localhost", size) / MB)

    size = payload.stat().st_size
    raw = size / push(chain.port, payload) / MB
    mesh = size / payload_seconds(client, payload) / MB
    figs.payload_raw.add(raw)
    figs.payload.add(mesh)
    figs.payload_ratio.add(mesh / raw)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (the command runners)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def jobs_round(figs: Figures, client: JobClient, pids: dict[str, int]) -> None:
    """``--jobs`` sequential small jobs, then ``--concurrent`` at once."""
    jobs = figs.args.jobs
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    steps = []
    for _ in range(jobs):
        try:
            steps.append(small_job(client, "executor01", "gather-hostname"))
        except (RuntimeError, OSError) as exc:
            figs.p50.failures += 1
            figs.errors.append(exc)
    for figure, name in zip(figs.cpu, NODES):
        figure.add((cpu_seconds(pids[name]) - cpu_before[name]) / jobs * 1000)
    if steps:
        totals = [sum(s) for s in steps]
        figs.p50.add(statistics.median(totals) * 1000)
        figs.p95.add(percentile(totals, 95) * 1000)
        for i, figure in enumerate(figs.steps):
            figure.add(statistics.median(s[i] for s in steps) * 1000)

    errors: list[BaseException] = []

    def one() -> None:
        try:
            small_job(client, "executor01", "gather-hostname")
        except (RuntimeError, OSError) as exc:  # counted below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(figs.args.concurrent)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figs.concurrent.add(time.perf_counter() - start)
    figs.concurrent.failures += len(errors)
    figs.errors += errors


def write_payload(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            handle.write(BLOCK[:left])
            left -= len(BLOCK)


def run(args: argparse.Namespace, workdir: Path, figs: Figures) -> None:
    payload = workdir / "payload.bin"
    write_payload(payload, args.payload_mb * MB)
    cluster = start_line(workdir / "mesh", args.log_level, args.profile)
    try:
        with RawChain() as chain:
            client: JobClient = CLIENTS[args.client](cluster.nodes["controller01"].socket)
            local: JobClient = CLIENTS[args.client](cluster.nodes["executor01"].socket)
            start = time.perf_counter()
            small_job(client, "executor01", "gather-hostname")
            figs.first.add((time.perf_counter() - start) * 1000)
            pids = {name: node.proc.pid for name, node in cluster.nodes.items() if node.proc}
            for _ in range(args.rounds):
                throughput_round(figs, client, local, chain, payload)
                jobs_round(figs, client, pids)
    finally:
        cluster.stop()
        if args.profile:
            profile_out = cluster.nodes[args.profile].workdir / "profile.out"
            if profile_out.exists():
                shutil.copy(profile_out, workdir.parent / f"work_bench_{args.profile}.prof")
        cluster.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each row is their median")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="receptorctl")
    parser.add_argument("--result-mb", type=int, default=100)
    parser.add_argument("--payload-mb", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=50, help="sequential small jobs per round")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--log-level", default="info", choices=["error", "warning", "info",
                                                                 "debug"])
    parser.add_argument("--profile", choices=list(NODES))
    args = parser.parse_args()
    socket.setdefaulttimeout(CLIENT_TIMEOUT)

    workdir = Path(tempfile.mkdtemp(prefix="mesh-wbench-"))
    figs = Figures(args)
    try:
        run(args, workdir, figs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    client = ("receptorctl's library (ReceptorControl): submit, results, status + release "
              "on three connections like `receptorctl work submit --rm --follow`"
              if args.client == "receptorctl" else "raw control-socket sessions in this process")
    print(f"client: {client}; nodes log at {args.log_level}; {os.cpu_count()} CPUs; "
          f"{args.rounds} rounds, median and min-max over rounds; raw reference: "
          "asyncio TCP through two relay processes, same rounds")
    print(render(figs.rows()))
    for exc in figs.errors[:5]:
        print(f"error: {exc!r}")
    if args.profile:
        saved = workdir.parent / f"work_bench_{args.profile}.prof"
        if saved.exists():
            print(f"\ncProfile of {args.profile} (saved to {saved}), top 25 by cumulative time:")
            pstats.Stats(str(saved)).sort_stats("cumulative").print_stats(25)
            pstats.Stats(str(saved)).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
