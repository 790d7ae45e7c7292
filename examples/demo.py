"""`make demo`: a three-node mesh on loopback (controller01 - relayer01 - executor01).

Starts the nodes as real processes with free ports, waits until routes converge, prints
the controller's status as `mesh status` shows it, pings the executor across the relay,
runs real work units on executor01 from controller01 (through relayer01) and prints their
results, then stops every node again.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from mesh.testing import Mesh


def run(*args: str) -> None:
    print(f"$ {' '.join(args)}", flush=True)
    subprocess.run(args, check=True)


def main() -> int:
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-demo-")))
    try:
        mesh.add("controller01")
        mesh.add("relayer01")
        mesh.add("executor01", sections=[
            {"work-command": {"worktype": "gather-hostname", "command": "hostname"}},
            {"work-command": {"worktype": "echo-reply", "command": "sed",
                              "params": "'s/^/executor01 got: /'"}},
        ])
        mesh.link("relayer01", "controller01")
        mesh.link("executor01", "relayer01")
        print("starting controller01 - relayer01 - executor01 on loopback ...", flush=True)
        mesh.start()
        mesh.wait_converged()
        mesh.wait_until_work_types("controller01", "executor01", ["echo-reply",
                                                                 "gather-hostname"])
        sock = str(mesh.nodes["controller01"].socket)
        mesh_cmd = [sys.executable, "-m", "mesh"]
        run(*mesh_cmd, "status", "--socket", sock)
        run(*mesh_cmd, "ping", "--socket", sock, "executor01", "--count", "2", "--delay", "0.2")
        run(*mesh_cmd, "traceroute", "--socket", sock, "executor01")
        run(*mesh_cmd, "work", "submit", "--socket", sock, "--node", "executor01",
            "--no-payload", "--follow", "--rm", "gather-hostname")
        run(*mesh_cmd, "work", "submit", "--socket", sock, "--node", "executor01",
            "--payload-literal", "hello from controller01", "--follow", "--rm", "echo-reply")
    finally:
        mesh.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
