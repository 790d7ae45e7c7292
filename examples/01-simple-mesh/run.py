#!/usr/bin/env python3
"""Demo 01, a simple mesh: controller01 - relayer01 - executor01 on loopback.

Shows the mesh (status, ping, traceroute) and runs the executor's work types from the
controller, through the relay: gather-hostname (once with results fetched separately, once with
--rm --follow), cat-files with runtime params, echo-reply with a literal payload and echo-sleep
streaming as it runs.

    .venv/bin/python examples/01-simple-mesh/run.py [--keep]
"""

from __future__ import annotations

import re
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from example_mesh import Demo, submitted_unit_id  # noqa: E402


def body(demo: Demo) -> None:
    demo.start()
    mesh = demo.mesh
    assert mesh is not None
    mesh.wait_converged(timeout=30)
    mesh.wait_until_work_types("controller01", "executor01",
                               ["gather-hostname", "cat-files", "echo-reply", "echo-sleep"],
                               timeout=30)

    demo.step("the mesh as controller01 sees it")
    demo.sh("controller01", "mesh", "status")
    demo.expect("controller01 reaches executor01 through relayer01", "executor01 via relayer01",
                f"executor01 via {demo.route('controller01', 'executor01')}",
                demo.route("controller01", "executor01") == "relayer01")
    out = demo.sh("controller01", "mesh", "ping", "executor01", "--count", "3",
                  "--delay", "0.2").stdout.decode()
    demo.expect("three pings answered", "3 x Reply from executor01",
                f"{out.count('Reply from executor01')} x Reply from executor01",
                out.count("Reply from executor01") == 3)
    out = demo.sh("controller01", "receptorctl", "traceroute", "executor01").stdout.decode()
    hops = [line.split()[1] for line in out.splitlines() if line[:1].isdigit()]
    demo.expect("traceroute hops", "controller01, relayer01, executor01", ", ".join(hops),
                hops == ["controller01", "relayer01", "executor01"])

    demo.step("gather-hostname: submit, then fetch the results and release the unit")
    out = demo.sh("controller01", "receptorctl", "work", "submit", "--node", "executor01",
                  "--no-payload", "gather-hostname").stdout
    unit_id = submitted_unit_id(out)
    hostname = demo.sh("controller01", "mesh", "work", "results", unit_id).stdout.decode()
    demo.expect("executor01's host name (same machine here)", socket.gethostname(),
                hostname.strip(), hostname.strip() == socket.gethostname())
    demo.sh("controller01", "mesh", "work", "list", "--unit-id", unit_id)
    demo.sh("controller01", "mesh", "work", "release", unit_id)

    demo.step("gather-hostname with --rm --follow: one command, results streamed, unit released")
    out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                  "--no-payload", "--rm", "--follow", "gather-hostname").stdout.decode()
    demo.expect("same host name", socket.gethostname(), out.strip(),
                out.strip() == socket.gethostname())

    demo.step("cat-files: grep -H -n '' plus the submitter's params")
    out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                  "--no-payload", "--param", "params=/etc/hostname /etc/os-release",
                  "--rm", "--follow", "cat-files").stdout.decode()
    lines = out.splitlines()
    ok = (bool(lines) and lines[0].startswith("/etc/hostname:1:")
          and any(line.startswith("/etc/os-release:1:") for line in lines))
    demo.expect("file:line: prefixed lines of both files",
                "/etc/hostname:1:...\n/etc/os-release:1:...",
                "\n".join(line[:40] for line in lines[:2]) + f"\n({len(lines)} lines)", ok)

    demo.step("echo-reply: the payload comes back")
    out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                  "--payload-literal", "hello from controller01", "--rm", "--follow",
                  "echo-reply").stdout.decode()
    demo.expect("payload echoed", "hello from controller01", out.strip(),
                out == "hello from controller01\n")

    demo.step("echo-sleep: twelve lines, streamed while the command runs")
    out = demo.sh("controller01", "receptorctl", "work", "submit", "--node", "executor01",
                  "--no-payload", "--rm", "--follow", "echo-sleep", live=True).stdout.decode()
    # receptorctl prints the release confirmation after the results; keep the numbered lines
    numbers = [line.split()[0] for line in out.splitlines()
               if re.fullmatch(r"\d+ \d\d:\d\d:\d\d\.\d+", line)]
    demo.expect("lines numbered 1 to 12", "1 .. 12",
                f"{numbers[0]} .. {numbers[-1]} ({len(numbers)} lines)" if numbers else "none",
                numbers == [str(i) for i in range(1, 13)])
    demo.sh("controller01", "mesh", "work", "list")


if __name__ == "__main__":
    sys.exit(Demo(__file__, "Demo 01: a simple mesh",
                  "controller01 - relayer01 - executor01, each a `mesh node -c configs/<node>.yml` "
                  "process on 127.0.0.1. Commands run on controller01's control socket "
                  "(MESH_SOCKET / RECEPTORCTL_SOCKET).").run(body))
