"""docs/security.md's walkthrough works as written.

The ``sh`` blocks of its "Walkthrough" section run in order in a scratch directory, with the
virtualenv's ``mesh`` and ``receptorctl`` first on PATH.  The ports the page uses (27011, 27012)
are replaced by free ones.  Blocks that query a node are retried while the nodes start.  The
nodes the page starts in the background are in the process group of the shells this test starts,
and are stopped through those groups.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
SECURITY_MD = ROOT / "docs" / "security.md"
PORTS = ("27011", "27012")
BIN = str(Path(sys.executable).parent)


def walkthrough_blocks() -> list[str]:
    text = SECURITY_MD.read_text(encoding="utf-8")
    match = re.search(r"^## Walkthrough\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, "docs/security.md has no '## Walkthrough' section"
    return re.findall(r"^```sh\n(.*?)^```", match.group(1), re.S | re.M)


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups of the shells we start (their background nodes live there too)."""
    started: list[int] = []
    yield started
    for pgid in started:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for pgid in started:
        try:
            wait_until(lambda: not group_alive(pgid), timeout=15, interval=0.1,
                       what=f"process group {pgid} to exit")
        except TimeoutError:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def group_alive(pgid: int) -> bool:
    """Process group ``pgid`` still has a member."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_walkthrough_blocks_run(tmp_path: Path, groups: list[int]) -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) >= 6
    ports = {p: str(free_port()) for p in PORTS}
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
           "MESH_LOG_FORMAT": "json"}

    def run(script: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        groups.append(proc.pid)
        out, err = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    for block in blocks:
        for page_port, port in ports.items():
            block = block.replace(page_port, port)
        if "receptorctl" in block:
            done = wait_until(lambda: (r := run(block)).returncode == 0 and r, timeout=60,
                              what=f"walkthrough block to succeed:\n{block}")
        else:
            done = run(block)
            assert done.returncode == 0, f"{block}\nstdout: {done.stdout}\nstderr: {done.stderr}"

    # The files the page promises.
    for name in ("ca.crt", "ca.key", "alpha.crt", "beta.crt", "operator.crt"):
        assert (tmp_path / name).exists(), name

    # The mesh works: alpha (over TLS) sees beta, and beta reaches alpha over the TLS link.
    status_cmd = (f"receptorctl --socket tls://localhost:{ports['27012']} --rootcas ca.crt "
                  f"--cert operator.crt --key operator.key status --json")

    def beta_connected() -> bool:
        done = run(status_cmd)
        if done.returncode != 0:
            return False
        status = json.loads(done.stdout)
        return status["NodeID"] == "alpha" and \
            "beta" in {c["NodeID"] for c in status["Connections"]}

    wait_until(beta_connected, timeout=60, what="alpha's status over TLS showing beta")
    ping = run("receptorctl --socket beta.sock ping alpha --count 1")
    assert ping.returncode == 0 and "Reply from alpha" in ping.stdout, ping.stderr
    assert "tls_node_id_mismatch" not in (tmp_path / "alpha.log").read_text()
