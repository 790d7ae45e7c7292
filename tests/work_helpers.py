"""Shared pieces of the work-unit tests: the seed demo's work types, the line of nodes, and
thin wrappers around the real ``receptorctl`` and ``mesh`` command lines."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from mesh.testing import Mesh, NodeProcess, kill_runners, wait_until

BIN = Path(sys.executable).parent
RECEPTORCTL = str(BIN / "receptorctl")
MESH = [sys.executable, "-m", "mesh"]

#: Bytes the ``bigout`` work type writes for ``params=N``: this block repeated, cut at N.
BIG_BLOCK = bytes(range(256)) * 4096
BIGOUT_SCRIPT = ("import sys; n = int(sys.argv[1]); b = bytes(range(256)) * 4096; "
                 "w = sys.stdout.buffer.write\n"
                 "while n > 0:\n"
                 "    w(b[:n]); n -= len(b)\n")
ECHO_SLEEP = ("for i in $(seq 1 12); do echo \"$i $(date +%s.%N)\"; sleep {interval}; done")


def work_types(interval: float = 0.2) -> list[dict[str, Any]]:
    """The seed's work types on executor01, plus a few the tests need."""
    return [
        {"work-command": {"worktype": "gather-hostname", "command": "hostname"}},
        # grep -Hn '' FILE...: every line, prefixed with "FILE:LINE:"
        {"work-command": {"worktype": "cat-files", "command": "grep", "params": "-Hn ''",
                          "allowruntimeparams": True}},
        {"work-command": {"worktype": "echo-reply", "command": "cat"}},
        {"work-command": {"worktype": "echo-sleep", "command": "sh",
                          "params": f"-c '{ECHO_SLEEP.format(interval=interval)}'"}},
        # still running when a cancel or release arrives, however busy the machine (60 s)
        {"work-command": {"worktype": "echo-slow", "command": "sh",
                          "params": f"-c '{ECHO_SLEEP.format(interval=5)}'"}},
        {"work-command": {"worktype": "bigout", "command": sys.executable,
                          "params": f"-c '{BIGOUT_SCRIPT}'", "allowruntimeparams": True}},
        {"work-command": {"worktype": "exit-three", "command": "sh",
                          "params": "-c 'echo about to fail; exit 3'"}},
        {"work-command": {"worktype": "shell", "command": "sh", "params": "-c",
                          "allowruntimeparams": True}},
    ]


def bigout_sha256(size: int) -> str:
    digest = hashlib.sha256()
    while size > 0:
        digest.update(BIG_BLOCK[:size])
        size -= len(BIG_BLOCK)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def make_line(prefix: str, names: Iterable[str] = ("controller01", "relayer01", "executor01"),
              *, executor_sections: list[dict[str, Any]] | None = None,
              executor_env: dict[str, str] | None = None) -> Mesh:
    """Start a line of nodes (each dials the one before it); the last one runs the work."""
    names = list(names)
    cluster = Mesh(Path(tempfile.mkdtemp(prefix=prefix)))
    for i, name in enumerate(names):
        last = i == len(names) - 1
        cluster.add(name, sections=(executor_sections if executor_sections is not None
                                    else work_types()) if last else (),
                    env=executor_env if last else None)
    for before, after in zip(names, names[1:]):
        cluster.link(after, before)
    try:
        cluster.start()
        cluster.wait_converged()
        # remote work dials executor01's control service: wait until it is advertised
        wait_until(lambda: any(ad["NodeID"] == names[-1] and ad["Service"] == "control"
                               for ad in cluster.nodes[names[0]].status()["Advertisements"]),
                   timeout=30, what="executor control advertisement")
    except BaseException:
        cleanup(cluster)
        raise
    return cluster


@contextmanager
def running_line(prefix: str, names: Iterable[str] = ("controller01", "relayer01", "executor01"),
                 **kwargs: Any) -> Iterator[Mesh]:
    """:func:`make_line` for a ``with`` block (a fixture's), cleaned up at its end."""
    cluster = make_line(prefix, names, **kwargs)
    try:
        yield cluster
    finally:
        cleanup(cluster)


def cleanup(cluster: Mesh) -> None:
    """Stop the nodes, kill any command runner still working in the scratch dir, remove it."""
    cluster.stop()
    kill_runners(cluster.workdir)
    cluster.cleanup()


def pid_alive(pid: int) -> bool:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return data[data.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


# -- command lines ---------------------------------------------------------------------------


def run(args: list[str], *, stdin: bytes | None = None, timeout: float = 180,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def receptorctl(node: NodeProcess, *args: str, stdin: bytes | None = None,
                check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """Run the real receptorctl against ``node``'s control socket."""
    result = run([RECEPTORCTL, "--socket", str(node.socket), *args], stdin=stdin,
                 timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"receptorctl {args} failed ({result.returncode}): "
                             f"{result.stdout[-2000:]!r}\n{result.stderr[-2000:]!r}")
    return result


def mesh_cli(node: NodeProcess, *args: str, stdin: bytes | None = None, check: bool = True,
             timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """Run our ``mesh`` CLI against ``node`` (through $MESH_SOCKET)."""
    result = run([*MESH, *args], stdin=stdin, timeout=timeout,
                 env={"MESH_SOCKET": str(node.socket)})
    if check and result.returncode != 0:
        raise AssertionError(f"mesh {args} failed ({result.returncode}): "
                             f"{result.stdout[-2000:]!r}\n{result.stderr[-2000:]!r}")
    return result


SUBMITTED = re.compile(rb"Result: (Job Started|Job Submitted)\nUnit ID: ([0-9A-Za-z]{8})\n")


def submitted_unit(result: subprocess.CompletedProcess[bytes]) -> str:
    """The unit ID from ``Result: …`` / ``Unit ID: …`` output (both CLIs print it so)."""
    match = SUBMITTED.search(result.stdout)
    assert match, f"no submit confirmation in {result.stdout!r} / {result.stderr!r}"
    assert match.group(1) == b"Job Started"
    return match.group(2).decode()


def status(node: NodeProcess, unit_id: str) -> dict[str, Any]:
    return node.control(f"work status {unit_id}")


def wait_state(node: NodeProcess, unit_id: str, states: Iterable[int],
               timeout: float = 60) -> dict[str, Any]:
    wanted = set(states)
    return wait_until(lambda: (s := status(node, unit_id))["State"] in wanted and s,
                      timeout=timeout, what=f"unit {unit_id} on {node.name} in {wanted}")


def unit_dir(node: NodeProcess, unit_id: str) -> Path:
    return node.datadir / node.name / unit_id


def remote_id(controller: NodeProcess, unit_id: str) -> str:
    return status(controller, unit_id)["ExtraData"]["RemoteUnitID"]


def json_out(result: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(result.stdout)
