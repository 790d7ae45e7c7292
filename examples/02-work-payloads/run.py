#!/usr/bin/env python3
"""Demo 02, work payloads: what a work unit reads on stdin, and managing units.

On controller01 - relayer01 - executor01: echo-reply with ``--payload FILE`` and with
``--payload -`` (standard input), a 3 MiB binary payload whose SHA-256 is the same when it comes
back and on the executor, then ``work list`` (JSON) and ``work release --all``.

    .venv/bin/python examples/02-work-payloads/run.py [--keep]
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from example_mesh import Demo, submitted_unit_id  # noqa: E402

GREETING = "hello from a file on controller01\nsecond line\n"
PIPED = "these lines were piped into mesh\non its standard input\n"


def body(demo: Demo) -> None:
    demo.start()
    mesh = demo.mesh
    assert mesh is not None
    mesh.wait_converged(timeout=30)
    mesh.wait_until_work_types("controller01", "executor01", ["echo-reply", "sha256"],
                               timeout=30)

    demo.step("--payload FILE: the file is the unit's stdin")
    (demo.rundir / "greeting.txt").write_text(GREETING)
    demo.sh("controller01", "cat", "greeting.txt")
    out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                  "--payload", "greeting.txt", "--rm", "--follow", "echo-reply").stdout.decode()
    demo.expect("the file comes back", GREETING, out, out == GREETING)

    demo.step("--payload -: standard input is the payload")
    print(f"(piping {len(PIPED)} bytes into the command)")
    out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                  "--payload", "-", "--rm", "--follow", "echo-reply",
                  input=PIPED.encode()).stdout.decode()
    demo.expect("stdin comes back", PIPED, out, out == PIPED)

    demo.step("a binary payload: 3 MiB of random bytes, there and back")
    blob = os.urandom(3 * 1024 * 1024)
    (demo.rundir / "blob.bin").write_bytes(blob)
    sent = hashlib.sha256(blob).hexdigest()
    print(f"sha256(blob.bin) = {sent}")
    returned = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                       "--payload", "blob.bin", "--rm", "--follow", "echo-reply",
                       show_output=False).stdout
    received = hashlib.sha256(returned).hexdigest()
    print(f"({len(returned)} bytes of results; sha256 = {received})")
    demo.expect("echo-reply returns the same bytes", f"sha256 {sent[:16]}...",
                f"sha256 {received[:16]}... ({len(returned)} bytes)", received == sent)
    out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                  "--payload", "blob.bin", "--rm", "--follow", "sha256").stdout.decode()
    remote = out.split()[0] if out.split() else ""
    demo.expect("sha256sum on executor01 sees the same bytes", f"{sent[:16]}... -",
                f"{remote[:16]}... -", remote == sent)

    demo.step("units stay until released: submit two without --rm, list them")
    ids = []
    for text in ("first unit", "second unit"):
        out = demo.sh("controller01", "mesh", "work", "submit", "--node", "executor01",
                      "--payload-literal", text, "echo-reply").stdout
        ids.append(submitted_unit_id(out))
    for unit_id in ids:
        demo.wait(lambda u=unit_id: demo.unit_status("controller01", u)["State"] == 2,
                  what=f"unit {unit_id} Succeeded")
    units = json.loads(demo.sh("controller01", "mesh", "work", "list").stdout)
    observed = ", ".join(f"{u}: {units[u]['StateName']}" for u in sorted(units))
    demo.expect("work list shows both units as Succeeded",
                ", ".join(f"{u}: Succeeded" for u in sorted(ids)), observed,
                sorted(units) == sorted(ids)
                and all(units[u]["StateName"] == "Succeeded" for u in ids))
    demo.sh("controller01", "mesh", "work", "results", ids[0])

    demo.step("work release --all: every unit goes, here and on executor01")
    executor = mesh.node("executor01")
    remote_ids = [units[u]["ExtraData"]["RemoteUnitID"] for u in ids]
    out = demo.sh("controller01", "mesh", "work", "release", "--all").stdout.decode()
    demo.expect("both released", "\n".join(f"({u}, released)" for u in ids), out.strip(),
                all(f"({u}, released)" in out for u in ids))
    left = json.loads(demo.sh("controller01", "mesh", "work", "list").stdout)
    demo.wait(lambda: not any(executor.unit_dir(r).exists() for r in remote_ids),
              what="executor01's unit directories removed", timeout=20)
    demo.expect("nothing left", "work list: {}; executor01: no unit directories",
                f"work list: {json.dumps(left)}; executor01: "
                f"{sum(executor.unit_dir(r).exists() for r in remote_ids)} unit directories",
                left == {} and not any(executor.unit_dir(r).exists() for r in remote_ids))


if __name__ == "__main__":
    sys.exit(Demo(__file__, "Demo 02: work payloads",
                  "controller01 - relayer01 - executor01 on 127.0.0.1; executor01 runs "
                  "echo-reply (cat) and sha256 (sha256sum). Commands run on controller01, in "
                  "the run directory where the payload files are written.").run(body))
