"""Load on one executor: many short local units, 20 at a time, then `work list` speed.

Runs N units of `true` on one node (20 concurrent clients over the control socket); each
client submits, follows the results to the end, checks the unit Succeeded and releases it.
Then no unit may be left (in `work list` or on disk) and the node's memory (RSS) must be back
near where it started.  Then N more units are run and kept, `work list` must show all of them
Succeeded, and it is timed.  Exits 1 saying why when a check fails.

    .venv/bin/python bench/load_bench.py [--units 1000] [--parallel 20] [--max-rss-growth 32]
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench_main import run_bench
from mesh.testing import ControlSession, Mesh, NodeProcess
from mesh.work.states import UnitState
from mesh.work.unitstore import UnitStore

#: RSS the node may keep after all units are released, over what it had at the start.
MAX_RSS_GROWTH_MIB = 32.0


class LoadCheckFailed(AssertionError):
    """A unit did not succeed or was not released, or the node kept the memory."""


@dataclass
class LoadResult:
    units: int
    parallel: int
    #: Submit, follow and release of every unit, in seconds.
    wall_s: float
    rss_start_mib: float
    rss_peak_mib: float
    #: After every unit was released.
    rss_end_mib: float
    #: Units released (each Succeeded first).
    released: int
    #: Units in `work list` in the second pass (each Succeeded).
    listed: int
    #: One `work list` with ``listed`` units on disk, in milliseconds.
    list_ms: float


def rss_mib(node: NodeProcess) -> float:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_unit(path: str, release: bool) -> str:
    """Submit a unit of `true`, follow its results to the end; with ``release``, check it
    Succeeded and release it.  Returns the unit ID."""
    with ControlSession(path, timeout=120) as submit:
        submit.file.write(b'{"command":"work","subcommand":"submit","node":"localhost",'
                          b'"worktype":"true"}\n')
        submit.file.flush()
        submit.file.readline()
        submit.sock.shutdown(socket.SHUT_WR)
        reply = submit.file.readline()
    try:
        unit_id = json.loads(reply)["unitid"]
    except (ValueError, KeyError):
        raise LoadCheckFailed(f"submit replied {reply!r}") from None
    with ControlSession(path, timeout=120) as results:
        results.file.write(f"work results {unit_id} 0\n".encode())
        results.file.flush()
        while results.file.read(65536):
            pass
    if release:
        with ControlSession(path, timeout=120) as control:
            status = control.command(f"work status {unit_id}")
            if status["State"] != UnitState.SUCCEEDED:
                raise LoadCheckFailed(f"unit {unit_id} ended {status}")
            if control.command(f"work release {unit_id}") != {"released": unit_id}:
                raise LoadCheckFailed(f"work release {unit_id} did not release it")
    return unit_id


def run_many(path: str, units: int, parallel: int, release: bool) -> list[str]:
    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(lambda _: run_unit(path, release), range(units)))


def run(mesh: Mesh, units: int = 1000, parallel: int = 20,
        max_rss_growth: float = MAX_RSS_GROWTH_MIB) -> LoadResult:
    """Run the load on a new node of ``mesh``; raises LoadCheckFailed."""
    node = mesh.add("executor01", listen=False, sections=[
        {"work-command": {"worktype": "true", "command": "true"}}])
    node.log_level = "warning"
    node.start()
    path = str(node.socket)
    store = UnitStore(node.datadir, node.name)
    start_rss = rss_mib(node)
    peaks = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peaks.append(rss_mib(node))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        released = run_many(path, units, parallel, release=True)
    finally:
        done.set()
        sampler.join()
    elapsed = time.perf_counter() - start
    if node.control("work list") != {} or store.ids():
        raise LoadCheckFailed(f"units left after all were released: {store.ids()[:10]}")
    end_rss = rss_mib(node)
    if end_rss > start_rss + max_rss_growth:
        raise LoadCheckFailed(f"node RSS {end_rss:.0f} MiB after {units} units were released, "
                              f"{start_rss:.0f} MiB at the start (allowed growth "
                              f"{max_rss_growth:.0f} MiB)")
    kept = set(run_many(path, units, parallel, release=False))
    listing = node.control("work list")  # each unit's results ended: it is final
    if set(listing) != kept:
        raise LoadCheckFailed(f"work list has {len(listing)} units, {len(kept)} were run")
    failed = {u: s for u, s in listing.items() if s["State"] != UnitState.SUCCEEDED}
    if failed:
        raise LoadCheckFailed(f"{len(failed)} units did not succeed, e.g. {failed.popitem()}")
    t = time.perf_counter()
    for _ in range(5):
        node.control("work list")
    list_ms = (time.perf_counter() - t) / 5 * 1000
    return LoadResult(units, parallel, elapsed, start_rss, max(peaks), end_rss, len(released),
                      len(listing), list_ms)


def report(r: LoadResult) -> str:
    """The result as a table."""
    rows = [("wall time (submit+follow+release)", f"{r.wall_s:.1f} s"),
            ("units per second", f"{r.units / r.wall_s:.1f}"),
            ("node RSS at start / peak / after",
             f"{r.rss_start_mib:.0f} / {r.rss_peak_mib:.0f} / {r.rss_end_mib:.0f} MiB"),
            (f"work list with {r.listed} units on disk", f"{r.list_ms:.0f} ms")]
    return "\n".join([f"\n{r.units} units of `true`, {r.parallel} at a time, on one node",
                      f"{'measure':<38} | value", f"{'-' * 38}-+-{'-' * 12}",
                      *(f"{label:<38} | {value}" for label, value in rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=20)
    parser.add_argument("--max-rss-growth", type=float, default=MAX_RSS_GROWTH_MIB,
                        help="MiB the node may keep after all units are released")
    args = parser.parse_args(argv)
    run_bench("mesh-load-", lambda mesh: run(mesh, args.units, args.parallel, args.max_rss_growth), report,
              (LoadCheckFailed, RuntimeError, TimeoutError))  # RuntimeError: an ERROR reply


if __name__ == "__main__":
    main()
