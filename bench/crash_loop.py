"""Crash safety: SIGKILL a node at random moments while units are created, updated and
streamed, restart it, and check every unit on disk.

Each round submits a burst of units (short and long outputs, a few concurrent result
followers), kills the node after a random delay, restarts it and then requires that every
unit directory has a readable, valid status file, and that every unit reaches a final state
(a runner still alive finishes; a unit cut off mid-creation is failed with a reason).

    .venv/bin/python bench/crash_loop.py [--rounds 20] [--seed 3]
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import tempfile
import threading
from pathlib import Path

from mesh.testing import Mesh, kill_runners, wait_until
from mesh.work.states import FINAL
from mesh.work.unitstore import UnitStore

WORK = [{"work-command": {"worktype": "cat", "command": "cat"}},
        {"work-command": {"worktype": "spew", "command": "head",
                          "params": "-c 3000000 /dev/urandom"}},
        {"work-command": {"worktype": "slow", "command": "sh",
                          "params": "-c 'for i in 1 2 3 4 5; do echo $i; sleep 0.1; done'"}}]


def submit(path: str, work_type: str, follow: bool) -> None:
    """Submit one unit; optionally follow its results.  Errors are expected (node killed)."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            f = sock.makefile("rwb")
            f.readline()
            f.write(json.dumps({"command": "work", "subcommand": "submit",
                                "node": "localhost", "worktype": work_type}).encode() + b"\n")
            f.flush()
            f.readline()
            f.write(b"x" * 100000)
            f.flush()
            sock.shutdown(socket.SHUT_WR)
            unit_id = json.loads(f.readline())["unitid"]
        if follow:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                f = sock.makefile("rwb")
                f.readline()
                f.write(f"work results {unit_id} 0\n".encode())
                f.flush()
                while f.read(65536):
                    pass
    except (OSError, ValueError, IndexError):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-crash-")))
    checked = 0
    try:
        node = mesh.add("victim", listen=False, sections=WORK)
        node.log_level = "warning"
        store = UnitStore(node.datadir, "victim")
        for round_number in range(args.rounds):
            node.start()
            threads = [threading.Thread(target=submit, args=(
                str(node.socket), rng.choice(["cat", "spew", "slow"]), rng.random() < 0.5))
                for _ in range(rng.randint(3, 12))]
            for thread in threads:
                thread.start()
            threading.Event().wait(rng.uniform(0.01, 0.6))
            node.kill()
            for thread in threads:
                thread.join(timeout=30)
            for unit_id in store.ids():  # every status file must parse, even right after -9
                store.read(unit_id)
                checked += 1
            node.start()
            wait_until(lambda: all(store.read(u).state in FINAL for u in store.ids()),
                       timeout=120, what=f"round {round_number}: all units final")
            node.stop()
        units = store.ids()
        details = sorted({store.read(u).detail.split(":")[0] for u in units})
        print(json.dumps({"rounds": args.rounds, "status_files_checked": checked,
                          "units": len(units), "final_details": details}, indent=2))
        return 0
    finally:
        mesh.cleanup()
        kill_runners(mesh.workdir)


if __name__ == "__main__":
    raise SystemExit(main())
