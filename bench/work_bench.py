"""Work-unit throughput and latency on the line controller01 - relayer01 - executor01.

Starts three real ``mesh node`` processes on loopback and drives controller01's control
socket with a raw in-process client (the same protocol receptorctl and ``mesh work`` speak),
so Python CLI start-up (~0.4 s for ``mesh``, ~0.15 s for receptorctl) is not measured.
Prints one table:

* result throughput: a remote unit writes N MB to stdout; time from submit to the last byte
  of ``work results`` on the controller (a local unit on executor01 is shown as baseline);
* payload throughput: N MB of stdin to a remote ``wc -c``; time from the first payload byte
  to the ``Job Started`` reply (the controller stores the payload, then forwards it);
* latency of sequential small jobs done like ``work submit --rm --follow``: submit, stream
  the results, read the status, release (p50/p95, with the median of each step);
* wall time of N such jobs run concurrently (one thread each).

Usage::

    .venv/bin/python bench/work_bench.py [--result-mb 200] [--payload-mb 100] [--jobs 100]
        [--concurrent 50] [--log-level info] [--profile controller01|relayer01|executor01]

``--profile NODE`` runs that node under cProfile and prints its top functions at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from mesh.testing import MESH_BIN, Mesh, NodeProcess, wait_until

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
MB = 1000 * 1000


# -- nodes -----------------------------------------------------------------------------------


def start_line(workdir: Path, log_level: str, profile: str | None) -> Mesh:
    cluster = Mesh(workdir)
    cluster.add("controller01")
    cluster.add("relayer01")
    cluster.add("executor01", sections=WORK_TYPES)
    cluster.link("relayer01", "controller01")
    cluster.link("executor01", "relayer01")
    for node in cluster.nodes.values():
        _patch(node, log_level, profile == node.name)
    cluster.start()
    cluster.wait_converged()
    wait_until(lambda: any(ad["NodeID"] == "executor01" and ad["Service"] == "control"
                           for ad in cluster.nodes["controller01"].status()["Advertisements"]),
               timeout=30, what="executor01 control advertisement")
    return cluster


def _patch(node: NodeProcess, log_level: str, profiled: bool) -> None:
    """Set the node's log level; optionally start it under cProfile."""
    write_config = node.write_config

    def write() -> None:
        write_config()
        text = node.config_path.read_text().replace("log-level: debug",
                                                    f"log-level: {log_level}")
        node.config_path.write_text(text)

    node.write_config = write  # type: ignore[method-assign]
    if not profiled:
        return

    def start(*, wait: bool = True) -> NodeProcess:
        node.workdir.mkdir(parents=True, exist_ok=True)
        node.write_config()
        log = open(node.log_path, "ab")
        env = {**os.environ, "MESH_LOG_FORMAT": "json", **node.env}
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", str(node.workdir / "profile.out"),
             *MESH_BIN[1:], "node", "-c", str(node.config_path)],
            stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        if wait:
            node.wait_ready()
        return node

    node.start = start  # type: ignore[method-assign]


# -- a raw control client --------------------------------------------------------------------


class Session:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")
        greeting = self.reader.readline()
        assert greeting.startswith(b"Receptor Control, node "), greeting

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def line(self) -> bytes:
        return self.reader.readline()

    def command(self, line: str) -> Any:
        self.send(line)
        reply = self.line()
        if reply.startswith(b"ERROR"):
            raise RuntimeError(reply.decode().strip())
        return json.loads(reply)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def submit(path: Path, node: str, worktype: str, payload: Any = b"",
           **params: str) -> tuple[str, float, float]:
    """Submit; returns (unit ID, seconds until the payload was handed over, seconds until the
    ``Job Started`` reply).  ``payload`` is bytes or a file object."""
    session = Session(path)
    try:
        session.send(json.dumps({"command": "work", "subcommand": "submit", "node": node,
                                 "worktype": worktype, **params}))
        created = session.line()
        assert created.startswith(b"Work unit created"), created
        start = time.perf_counter()
        if isinstance(payload, bytes):
            session.sock.sendall(payload)
        else:
            session.sock.sendfile(payload)
        sent = time.perf_counter() - start
        session.sock.shutdown(socket.SHUT_WR)
        reply = session.line()
        started = time.perf_counter() - start
        result = json.loads(reply)
        assert result["result"] == "Job Started", reply
        return result["unitid"], sent, started
    finally:
        session.close()


def results(path: Path, unit_id: str) -> int:
    """Stream a unit's results to nowhere; returns the byte count."""
    session = Session(path)
    try:
        session.send(f"work results {unit_id} 0")
        banner = session.line()
        assert banner == f"Streaming results for work unit {unit_id}\n".encode(), banner
        session.sock.shutdown(socket.SHUT_WR)
        total = 0
        while chunk := session.reader.read1(1 << 20):
            total += len(chunk)
        return total
    finally:
        session.close()


def status_and_release(path: Path, unit_id: str) -> dict[str, Any]:
    session = Session(path)
    try:
        status = session.command(f"work status {unit_id}")
        session.command(f"work release {unit_id}")
        return status
    finally:
        session.close()


def small_job(path: Path) -> tuple[float, float, float]:
    """One ``--rm --follow`` job: (submit, results, status+release) seconds."""
    t0 = time.perf_counter()
    unit_id, _, _ = submit(path, "executor01", "gather-hostname")
    t1 = time.perf_counter()
    size = results(path, unit_id)
    t2 = time.perf_counter()
    status = status_and_release(path, unit_id)
    t3 = time.perf_counter()
    assert size > 0 and status["State"] == 2, status
    return t1 - t0, t2 - t1, t3 - t2


# -- measurements ----------------------------------------------------------------------------


def result_throughput(path: Path, node: str, size: int) -> tuple[float, int]:
    start = time.perf_counter()
    unit_id, _, _ = submit(path, node, "bigout", params=str(size))
    got = results(path, unit_id)
    elapsed = time.perf_counter() - start
    status_and_release(path, unit_id)
    assert got == size, (got, size)
    return elapsed, got


def payload_throughput(path: Path, scratch: Path, size: int) -> tuple[float, float, int]:
    payload = scratch / "payload.bin"
    with open(payload, "wb") as handle:
        block = bytes(range(256)) * 4096
        left = size
        while left > 0:
            handle.write(block[:left])
            left -= len(block)
    with open(payload, "rb") as handle:
        unit_id, sent, started = submit(path, "executor01", "sink", handle)
    counted = results(path, unit_id)
    status_and_release(path, unit_id)
    payload.unlink()
    assert counted > 0
    return sent, started, size


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (the command runners)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--result-mb", type=int, default=200)
    parser.add_argument("--payload-mb", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--log-level", default="info", choices=["error", "warning", "info",
                                                                 "debug"])
    parser.add_argument("--profile", choices=["controller01", "relayer01", "executor01"])
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="mesh-wbench-"))
    cluster = start_line(workdir, args.log_level, args.profile)
    ctl = cluster.nodes["controller01"].socket
    exe = cluster.nodes["executor01"].socket
    rows: list[tuple[str, str, str]] = []
    try:
        first = time.perf_counter()
        small_job(ctl)  # warm-up: first connections, QUIC stack imported, page cache
        rows.append(("first small job after start (untimed warm-up)",
                     f"{(time.perf_counter() - first) * 1000:.0f} ms",
                     "includes each end node importing the QUIC stack on its first stream"))

        size = args.result_mb * MB
        base, _ = result_throughput(exe, "localhost", size)
        rows.append((f"result stream {args.result_mb} MB, local unit on executor01",
                     f"{size / base / MB:.0f} MB/s", f"{base:.2f} s"))
        elapsed, _ = result_throughput(ctl, "executor01", size)
        rows.append((f"result stream {args.result_mb} MB, executor01 -> controller01",
                     f"{size / elapsed / MB:.0f} MB/s", f"{elapsed:.2f} s (target >= 100 MB/s)"))

        sent, started, psize = payload_throughput(ctl, workdir, args.payload_mb * MB)
        rows.append((f"payload {args.payload_mb} MB, controller01 -> executor01",
                     f"{psize / started / MB:.0f} MB/s",
                     f"{started:.2f} s to Job Started (socket write {sent:.2f} s; "
                     "target >= 100 MB/s)"))

        pids = {name: node.proc.pid for name, node in cluster.nodes.items() if node.proc}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        steps = [small_job(ctl) for _ in range(args.jobs)]
        cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / args.jobs * 1000
               for name, pid in pids.items()}
        totals = [sum(s) for s in steps]
        rows.append((f"{args.jobs} sequential small jobs (--rm --follow), p50",
                     f"{statistics.median(totals) * 1000:.1f} ms", "target < 50 ms"))
        rows.append((f"{args.jobs} sequential small jobs (--rm --follow), p95",
                     f"{percentile(totals, 95) * 1000:.1f} ms", ""))
        rows.append(("  median submit / results / status+release",
                     " / ".join(f"{statistics.median(s[i] for s in steps) * 1000:.1f}"
                                for i in range(3)) + " ms", ""))
        rows.append(("  CPU per job: controller01 / relayer01 / executor01",
                     " / ".join(f"{cpu[n]:.1f}" for n in ("controller01", "relayer01",
                                                         "executor01")) + " ms",
                     "executor01 includes its command runners"))

        errors: list[BaseException] = []

        def one() -> None:
            try:
                small_job(ctl)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(args.concurrent)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        rows.append((f"{args.concurrent} concurrent small jobs, wall time", f"{wall:.2f} s",
                     f"{len(errors)} failed" if errors else "all succeeded"))
    finally:
        cluster.stop()
        profile_out = (cluster.nodes[args.profile].workdir / "profile.out"
                       if args.profile else None)
        if profile_out is not None and profile_out.exists():
            shutil.copy(profile_out, workdir.parent / f"work_bench_{args.profile}.prof")
        cluster.cleanup()

    print("client: raw control-socket sessions in this process (no CLI start-up); "
          f"nodes log at {args.log_level}; {os.cpu_count()} CPUs")
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>{vwidth}}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>{vwidth}}  {note}")
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
