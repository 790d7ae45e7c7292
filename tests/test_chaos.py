"""Chaos without loss: many large remote units while relays die and come back.

On Demo 04's topology, west-controller01 runs 30 units of 1–20 MB of random bytes on
east-executor01 while the test kills (SIGKILL) and restarts one random relay at a time, so
there is always a path.  Every unit must end Succeeded with stdout byte-identical (sha256)
to the executor's stdout file.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from demo_topologies import build_demo04
from mesh.testing import Mesh, wait_until

RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")
RANDBYTES = {"work-command": {"worktype": "randbytes", "command": "head", "params": "-c",
                              "allowruntimeparams": True}}
UNITS = 30
CHAOS_SECONDS = 45
#: Relays on the paths between west-controller01 and east-executor01 (killing any one
#: of them at a time leaves another path).
PATH_RELAYS = ("west-relayer01", "west-relayer02", "east-relayer01", "east-relayer02")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_units_survive_relay_chaos_byte_exact() -> None:
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-chaos-")))
    stop = threading.Event()
    try:
        build_demo04(mesh, [RANDBYTES])
        for node in mesh.nodes.values():
            node.log_level = "info"
        mesh.start()
        mesh.wait_converged(timeout=90)
        mesh.wait_until_work_types("west-controller01", "east-executor01", ["randbytes"])
        controller = mesh.nodes["west-controller01"]
        rng = random.Random(1234)
        sizes = [rng.randint(1, 20) * 1_000_000 for _ in range(UNITS)]
        kills: list[str] = []

        def chaos() -> None:
            deadline = time.monotonic() + CHAOS_SECONDS
            while not stop.is_set() and time.monotonic() < deadline:
                relay = mesh.nodes[rng.choice(PATH_RELAYS)]
                relay.kill()
                kills.append(relay.name)
                stop.wait(rng.uniform(0.3, 2.0))
                relay.start()
                stop.wait(rng.uniform(0.3, 1.5))

        chaos_thread = threading.Thread(target=chaos, daemon=True)
        chaos_thread.start()
        units = []
        for size in sizes:  # submitted while relays die, one a second
            out = subprocess.run(
                [RECEPTORCTL, "--socket", str(controller.socket), "work", "submit", "--node",
                 "east-executor01", "--no-payload", "-a", f"params={size} /dev/urandom",
                 "randbytes"], capture_output=True, text=True, timeout=120, check=True).stdout
            units.append(out.split("Unit ID: ")[1].split()[0])
            stop.wait(1.0)

        def finished() -> bool:
            listing = controller.control("work list")
            return all(listing[u]["State"] in (2, 3, 4) and
                       (controller.datadir / "west-controller01" / u / "stdout").exists() and
                       (controller.datadir / "west-controller01" / u / "stdout").stat().st_size
                       >= listing[u]["StdoutSize"] for u in units)

        wait_until(finished, timeout=CHAOS_SECONDS + 600, interval=1.0,
                   what="all chaos units finished")
        stop.set()
        chaos_thread.join(timeout=60)
        executor = mesh.nodes["east-executor01"]
        listing = controller.control("work list")
        for unit_id, size in zip(units, sizes):
            status = listing[unit_id]
            assert status["State"] == 2, (unit_id, status)
            remote_id = status["ExtraData"]["RemoteUnitID"]
            local = controller.datadir / "west-controller01" / unit_id / "stdout"
            remote = executor.datadir / "east-executor01" / remote_id / "stdout"
            assert local.stat().st_size == size
            assert sha256(local) == sha256(remote), unit_id
        print(f"\n{UNITS} units, {sum(sizes) / 1e6:.0f} MB, relay kills: {len(kills)} "
              f"({json.dumps(sorted(set(kills)))})")
    finally:
        stop.set()
        mesh.cleanup()
