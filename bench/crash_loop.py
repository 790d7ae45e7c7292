"""Crash safety: SIGKILL a node at random moments while units are created, updated and
streamed, restart it, and check every unit on disk.

Each round submits a burst of units (short and long outputs, payloads sent in pieces, some
results followed) and kills the node at a random moment of the burst.  Right after the kill,
every unit's status file must be valid JSON with a known state.  After the restart every unit
must reach a final state that fits what happened to it: Succeeded with exactly the output its
command writes, or Failed by the restart (cut off mid-payload, runner never started); and the
node's ``work list`` must agree with the disk.  Exits 1 naming the unit when a check fails.

    .venv/bin/python bench/crash_loop.py [--rounds 20] [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field

from bench_main import run_bench
from mesh.testing import Mesh, NodeProcess, kill_runners, wait_until
from mesh.work.states import FINAL, UnitState, state_name
from mesh.work.unitstore import UnitStatus, UnitStore, UnitStoreError, valid_unit_id

PAYLOAD = 100_000
PAYLOAD_PIECES = 10
#: Work types, and the stdout size of a unit of each that succeeds.
WORK = [{"work-command": {"worktype": "cat", "command": "cat"}},
        {"work-command": {"worktype": "spew", "command": "head",
                          "params": "-c 3000000 /dev/urandom"}},
        {"work-command": {"worktype": "slow", "command": "sh",
                          "params": "-c 'for i in 1 2 3 4 5; do echo $i; sleep 0.1; done'"}}]
STDOUT_SIZE = {"cat": PAYLOAD, "spew": 3_000_000, "slow": len("1\n2\n3\n4\n5\n")}
STATES = frozenset(int(state) for state in UnitState)
#: The details a unit may fail with here: the restart found it cut off by the kill.
CRASH_REASONS = ("Pending at restart", "Failed to restart: ")


class CrashCheckFailed(AssertionError):
    """A unit on disk or in ``work list`` is not what a crash-safe node leaves behind."""


@dataclass
class CrashLoopResult:
    rounds: int
    seed: int
    #: Status files read (and found valid) right after a SIGKILL, over all rounds.
    status_checks: int = 0
    #: Units on disk at the end, all final and consistent.
    units: int = 0
    #: Final outcomes, e.g. {"Succeeded: exit status 0": 120, "Failed: Pending at restart": 3}.
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Unit directories without a status file (a kill between mkdir and the first write).
    bare_dirs: int = 0
    #: Status temp files left by a kill in the middle of an atomic write.
    temp_files: int = 0


@dataclass
class Submission:
    """One client of a burst: what it submits, when, and whether it follows the results."""

    work_type: str
    delay: float
    follow: bool
    pause: float  # between payload pieces


def submit(path: str, job: Submission) -> None:
    """Submit one unit; optionally follow its results.  Errors are expected (node killed)."""
    try:
        threading.Event().wait(job.delay)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            f = sock.makefile("rwb")
            f.readline()
            f.write(json.dumps({"command": "work", "subcommand": "submit",
                                "node": "localhost", "worktype": job.work_type}).encode() + b"\n")
            f.flush()
            f.readline()
            for _ in range(PAYLOAD_PIECES):
                f.write(b"x" * (PAYLOAD // PAYLOAD_PIECES))
                f.flush()
                threading.Event().wait(job.pause)
            sock.shutdown(socket.SHUT_WR)
            unit_id = json.loads(f.readline())["unitid"]
        if job.follow:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                f = sock.makefile("rwb")
                f.readline()
                f.write(f"work results {unit_id} 0\n".encode())
                f.flush()
                while f.read(65536):
                    pass
    except (OSError, ValueError, KeyError):
        pass


def read_status(store: UnitStore, unit_id: str) -> UnitStatus:
    """The unit's status; raises CrashCheckFailed if it is missing, truncated or invalid."""
    try:
        status = store.read(unit_id)
    except UnitStoreError as exc:
        raise CrashCheckFailed(str(exc)) from None
    if status.state not in STATES:
        raise CrashCheckFailed(f"unit {unit_id}: unknown state {status.state}")
    return status


def check_after_kill(store: UnitStore, result: CrashLoopResult) -> None:
    """Every unit's status file parses, even right after a SIGKILL."""
    for unit_id in store.ids():
        read_status(store, unit_id)
        result.status_checks += 1


def unfinished(store: UnitStore) -> dict[str, str]:
    """The units not final yet, with their state."""
    states = {unit_id: read_status(store, unit_id).state for unit_id in store.ids()}
    return {unit_id: state_name(state) for unit_id, state in states.items()
            if state not in FINAL}


def check_final(node: NodeProcess, store: UnitStore) -> Counter[str]:
    """Every unit is final and consistent, and ``work list`` agrees; returns the outcomes."""
    outcomes: Counter[str] = Counter()
    listing, units = node.control("work list"), store.ids()
    if set(listing) != set(units):
        raise CrashCheckFailed(f"work list {sorted(listing)} != units on disk {units}")
    for unit_id in units:
        status = read_status(store, unit_id)
        what = f"unit {unit_id} ({status.work_type}, {state_name(status.state)} " \
               f"{status.detail!r}, StdoutSize {status.stdout_size})"
        if listing[unit_id]["State"] != status.state:
            raise CrashCheckFailed(f"{what}: work list says State {listing[unit_id]['State']}")
        actual = store.stdout_size(unit_id)
        if status.stdout_size != actual:
            raise CrashCheckFailed(f"{what}: stdout file has {actual} bytes")
        if status.state == UnitState.SUCCEEDED:
            if status.detail != "exit status 0" or actual != STDOUT_SIZE[status.work_type]:
                raise CrashCheckFailed(f"{what}: a {status.work_type} unit that succeeds "
                                       f"writes {STDOUT_SIZE[status.work_type]} bytes")
        elif status.state != UnitState.FAILED or not status.detail.startswith(CRASH_REASONS):
            raise CrashCheckFailed(f"{what}: expected Succeeded, or Failed by the restart "
                                   f"with one of {CRASH_REASONS}")
        outcomes[f"{state_name(status.state)}: {status.detail.split(':')[0]}"] += 1
    return outcomes


def debris(store: UnitStore, result: CrashLoopResult) -> None:
    """Count what kills left beside the units: the restarted node must have swept it."""
    units = set(store.ids())
    dirs = [p for p in store.root.iterdir() if valid_unit_id(p.name)]
    result.bare_dirs += sum(p.name not in units for p in dirs)
    result.temp_files += sum(1 for p in dirs for _ in p.glob(".status.*.tmp"))
    if result.bare_dirs or result.temp_files:
        raise CrashCheckFailed(f"after the restart: {result.bare_dirs} unit dirs without "
                               f"status, {result.temp_files} status temp files")


def run(mesh: Mesh, rounds: int = 20, seed: int = 3) -> CrashLoopResult:
    """Kill and restart a node ``rounds`` times under load; raises CrashCheckFailed."""
    rng = random.Random(seed)
    result = CrashLoopResult(rounds, seed)
    node = mesh.add("victim", listen=False, sections=WORK)
    node.log_level = "warning"
    store = UnitStore(node.datadir, node.name)
    try:
        for round_number in range(rounds):
            node.start()
            jobs = [Submission(rng.choice(sorted(STDOUT_SIZE)), rng.uniform(0, 0.3),
                               rng.random() < 0.5, rng.uniform(0, 0.02))
                    for _ in range(rng.randint(3, 12))]
            threads = [threading.Thread(target=submit, args=(str(node.socket), job))
                       for job in jobs]
            for thread in threads:
                thread.start()
            threading.Event().wait(rng.uniform(0.01, 0.5))
            node.kill()
            for thread in threads:
                thread.join(timeout=60)
            check_after_kill(store, result)
            node.start()
            try:
                wait_until(lambda: not unfinished(store), timeout=120)
            except TimeoutError:
                raise CrashCheckFailed(f"round {round_number}: units not final 120 s after "
                                       f"the restart: {unfinished(store)}") from None
            result.outcomes = check_final(node, store)
            debris(store, result)
            node.stop()
        result.units = len(store.ids())
        return result
    finally:
        node.kill()
        kill_runners(mesh.workdir)


def report(r: CrashLoopResult) -> str:
    """The result as a table."""
    rows = [("status files checked right after a kill", r.status_checks),
            ("units, all final and consistent", r.units),
            *((f"  {outcome}", count) for outcome, count in sorted(r.outcomes.items())),
            ("unit dirs without status after a restart", r.bare_dirs),
            ("status temp files after a restart", r.temp_files)]
    return "\n".join([f"\n{r.rounds} SIGKILL rounds on one node (seed {r.seed})",
                      f"{'measure':<44} | value", f"{'-' * 44}-+-{'-' * 8}",
                      *(f"{label:<44} | {value}" for label, value in rows)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)
    run_bench("mesh-crash-", lambda mesh: run(mesh, args.rounds, args.seed), report,
              (CrashCheckFailed, TimeoutError))


if __name__ == "__main__":
    main()
