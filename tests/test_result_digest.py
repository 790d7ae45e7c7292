"""Results that cannot be silently truncated: every final status records StdoutFinalSize and
StdoutSHA256, a controller checks its mirror of a remote unit against the remote's record,
and ``mesh work results`` checks what it received (issue 15, point 2)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from mesh.testing import Mesh, NodeProcess, wait_until
from work_helpers import (bigout_sha256, mesh_cli, receptorctl, remote_id, running_line, status,
                          submitted_unit, unit_dir, wait_state)

#: Output of the ``gated`` unit: a first line, then (once the test creates GATE) a second.
GATED = ("echo first; i=0; while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; "
         "i=$((i+1)); done; echo second")


@pytest.fixture(scope="module")
def pair() -> Iterator[Mesh]:
    """controller01 - executor01, with the seed's work types on the executor."""
    with running_line("mesh-digest-", ("controller01", "executor01")) as cluster:
        yield cluster


def recorded(unit: dict) -> tuple[int, str]:
    return unit["StdoutFinalSize"], unit["StdoutSHA256"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def submit(node, worktype: str, *args: str, remote: str = "localhost") -> str:
    return submitted_unit(receptorctl(node, "work", "submit", "--node", remote, *args, worktype))


# -- what is recorded ------------------------------------------------------------------------


def test_command_unit_records_size_and_sha256(pair: Mesh) -> None:
    exe = pair.nodes["executor01"]
    unit_id = submit(exe, "echo-reply", "--payload-literal", "hello digest")
    done = wait_state(exe, unit_id, {2})
    stdout = (unit_dir(exe, unit_id) / "stdout").read_bytes()
    assert stdout == b"hello digest\n"
    assert recorded(done) == (len(stdout), sha(stdout))
    on_disk = json.loads((unit_dir(exe, unit_id) / "status").read_text())
    assert recorded(on_disk) == recorded(done)


def test_large_output_is_hashed_while_it_is_written(pair: Mesh) -> None:
    exe = pair.nodes["executor01"]
    size = 24 * 1024 * 1024 + 7
    unit_id = submit(exe, "bigout", "-a", f"params={size}", "--no-payload")
    done = wait_state(exe, unit_id, {2}, timeout=120)
    assert recorded(done) == (size, bigout_sha256(size))


def test_a_canceled_unit_records_what_it_wrote(pair: Mesh) -> None:
    """The kernel records the digest (the runner was killed): inline for a small stdout, from
    a thread for one over INLINE_MAX."""
    exe = pair.nodes["executor01"]
    big = 9 * 1024 * 1024
    small_id = submit(exe, "echo-slow", "--no-payload")
    big_id = submit(exe, "shell", "-a", f"params='head -c {big} /dev/zero; exec sleep 60'",
                    "--no-payload")
    wait_until(lambda: (unit_dir(exe, small_id) / "stdout").exists()
               and (unit_dir(exe, small_id) / "stdout").stat().st_size > 0
               and (unit_dir(exe, big_id) / "stdout").exists()
               and (unit_dir(exe, big_id) / "stdout").stat().st_size == big,
               timeout=60, what="both units to write their output")
    for unit_id in (small_id, big_id):
        receptorctl(exe, "work", "cancel", unit_id)
    for unit_id in (small_id, big_id):
        stdout = (unit_dir(exe, unit_id) / "stdout").read_bytes()
        done = wait_until(lambda: (s := status(exe, unit_id)).get("StdoutSHA256") and s,
                          timeout=60, what=f"the digest of {unit_id}")
        assert done["State"] == 4
        assert recorded(done) == (len(stdout), sha(stdout))


# -- the controller's mirror -----------------------------------------------------------------


def test_mirror_carries_the_remote_record(pair: Mesh) -> None:
    ctl, exe = pair.nodes["controller01"], pair.nodes["executor01"]
    size = 3 * 1024 * 1024 + 11
    unit_id = submit(ctl, "bigout", "-a", f"params={size}", "--no-payload", remote="executor01")
    done = wait_state(ctl, unit_id, {2}, timeout=120)
    assert recorded(done) == (size, bigout_sha256(size))
    assert recorded(status(exe, remote_id(ctl, unit_id))) == recorded(done)


def gated_remote_unit(ctl: NodeProcess, gate: Path, damage: Callable[[Path], None],
                      ) -> tuple[str, dict]:
    """Run the ``gated`` unit on executor01 from ``ctl``; once its first line is mirrored,
    ``damage`` the mirror, then let the unit finish.  Returns its ID and final status."""
    unit_id = submit(ctl, "shell", "-a", f"params='{GATED.format(gate=gate)}'", "--no-payload",
                     remote="executor01")
    mirror = unit_dir(ctl, unit_id) / "stdout"
    wait_until(lambda: mirror.exists() and mirror.read_bytes() == b"first\n", timeout=60,
               what="the first line in the mirror")
    damage(mirror)
    gate.touch()
    return unit_id, wait_state(ctl, unit_id, {2, 3}, timeout=60)


def test_a_corrupted_mirror_fails_loudly(pair: Mesh, tmp_path: Path) -> None:
    """A byte of the controller's mirror changes while the unit runs: when the remote unit
    ends, the mirror's digest differs from the remote's and the local unit is Failed."""
    ctl, exe = pair.nodes["controller01"], pair.nodes["executor01"]

    def corrupt(mirror: Path) -> None:
        with open(mirror, "r+b") as handle:
            handle.write(b"F")

    unit_id, done = gated_remote_unit(ctl, tmp_path / "gate", corrupt)
    assert done["State"] == 3, done
    assert done["Detail"].startswith("Results corrupted: the mirrored stdout does not match")
    assert "remote state: exit status 0" in done["Detail"]
    remote = status(exe, remote_id(ctl, unit_id))
    assert remote["State"] == 2
    assert recorded(done) == recorded(remote) == (len(b"first\nsecond\n"),
                                                  sha(b"first\nsecond\n"))
    assert ctl.log_events("remote_results_mismatch", unit_id=unit_id)


def test_a_mirror_truncated_while_running_fails_loudly(pair: Mesh, tmp_path: Path) -> None:
    """The mirror loses its end while the results stream: what follows is appended after the
    cut, and the final check says the mirror does not match the remote's record."""
    _, done = gated_remote_unit(pair.nodes["controller01"], tmp_path / "gate",
                                lambda mirror: os.truncate(mirror, 2))
    assert done["State"] == 3, done
    assert done["Detail"].startswith("Results corrupted: the mirrored stdout does not match")


# -- mesh work results -----------------------------------------------------------------------


def finished_remote_unit(pair: Mesh, size: int) -> tuple[str, Path]:
    ctl = pair.nodes["controller01"]
    unit_id = submit(ctl, "bigout", "-a", f"params={size}", "--no-payload", remote="executor01")
    wait_state(ctl, unit_id, {2}, timeout=120)
    return unit_id, unit_dir(ctl, unit_id) / "stdout"


def test_results_checks_what_it_received(pair: Mesh) -> None:
    ctl = pair.nodes["controller01"]
    unit_id, mirror = finished_remote_unit(pair, 100_000)
    out = mesh_cli(ctl, "work", "results", unit_id)
    assert len(out.stdout) == 100_000 and sha(out.stdout) == bigout_sha256(100_000)
    verified = mesh_cli(ctl, "work", "results", "--verify", unit_id)
    assert f"{unit_id}: verified 100000 bytes, SHA-256 {bigout_sha256(100_000)}" \
        in verified.stdout.decode()

    os.truncate(mirror, 60_000)  # the mirrored stdout loses its end on disk
    out = mesh_cli(ctl, "work", "results", unit_id, check=False)
    assert out.returncode == 1
    assert len(out.stdout) == 60_000
    assert f"the stdout received for unit {unit_id} is truncated: 60000 of 100000 bytes".encode() \
        in out.stderr
    out = mesh_cli(ctl, "work", "results", "--verify", unit_id, check=False)
    assert out.returncode == 1
    assert f"unit {unit_id}: the stored stdout is truncated: 60000 of 100000 bytes".encode() \
        in out.stderr


def test_results_detects_a_corrupted_copy(pair: Mesh) -> None:
    ctl = pair.nodes["controller01"]
    unit_id, mirror = finished_remote_unit(pair, 50_000)
    with open(mirror, "r+b") as handle:
        handle.seek(1234)
        handle.write(b"\xff\xfe")
    out = mesh_cli(ctl, "work", "results", unit_id, check=False)
    assert out.returncode == 1 and len(out.stdout) == 50_000
    assert b"does not match the recorded result" in out.stderr
    out = mesh_cli(ctl, "work", "results", "--verify", unit_id, check=False)
    assert out.returncode == 1
    assert b"the stored stdout does not match the recorded result" in out.stderr
    # receptorctl ignores the extra fields and streams what is there, as Receptor would
    assert len(receptorctl(ctl, "work", "results", unit_id).stdout) == 50_000


def test_verify_a_saved_copy(pair: Mesh, tmp_path: Path) -> None:
    ctl = pair.nodes["controller01"]
    unit_id, _ = finished_remote_unit(pair, 70_000)
    saved = tmp_path / "saved"
    saved.write_bytes(mesh_cli(ctl, "work", "results", unit_id).stdout)
    out = mesh_cli(ctl, "work", "results", "--verify-file", str(saved), unit_id)
    assert b"verified 70000 bytes" in out.stdout
    saved.write_bytes(saved.read_bytes()[:-1])
    out = mesh_cli(ctl, "work", "results", "--verify-file", str(saved), unit_id, check=False)
    assert out.returncode == 1
    assert f"{saved} is truncated: 69999 of 70000 bytes".encode() in out.stderr


def test_units_without_a_record_are_not_checked(pair: Mesh) -> None:
    """A unit written by Receptor (no digest fields) streams as before; --verify says there is
    nothing to check against."""
    exe = pair.nodes["executor01"]
    unit_id = submit(exe, "echo-reply", "--payload-literal", "old")
    wait_state(exe, unit_id, {2})
    path = unit_dir(exe, unit_id) / "status"
    old = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("StdoutFinalSize", "StdoutSHA256")}
    path.write_text(json.dumps(old))
    assert mesh_cli(exe, "work", "results", unit_id).stdout == b"old\n"
    out = mesh_cli(exe, "work", "results", "--verify", unit_id, check=False)
    assert out.returncode == 1
    assert b"has no recorded size and SHA-256" in out.stderr



#: A unit that ends at once, leaving a process that writes once the test creates the gate.
LATE = ("echo main; (i=0; while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; "
        "i=$((i+1)); done; echo late) &")


def test_output_written_after_the_end_is_no_part_of_the_results(pair: Mesh,
                                                                 tmp_path: Path) -> None:
    """A process the unit left behind appends to stdout after the unit ended: the results
    stream ends at the recorded size, and --verify checks what was recorded."""
    exe = pair.nodes["executor01"]
    gate = tmp_path / "gate"
    unit_id = submit(exe, "shell", "-a", f"params='{LATE.format(gate=gate)}'", "--no-payload")
    done = wait_state(exe, unit_id, {2})
    assert recorded(done) == (5, sha(b"main\n"))
    gate.touch()
    stdout = unit_dir(exe, unit_id) / "stdout"
    wait_until(lambda: stdout.read_bytes() == b"main\nlate\n", timeout=60,
               what="the late line in the file")
    assert mesh_cli(exe, "work", "results", unit_id).stdout == b"main\n"
    assert b"verified 5 bytes" in mesh_cli(exe, "work", "results", "--verify", unit_id).stdout


def test_a_remote_stdout_shorter_than_its_size_fails_the_unit(pair: Mesh,
                                                              tmp_path: Path) -> None:
    """The remote node's copy lost its end while the controller was down: the controller
    does not spin on streams that end short, it fails the unit and says why."""
    ctl, exe = pair.nodes["controller01"], pair.nodes["executor01"]
    gate = tmp_path / "gate"
    unit_id = submit(ctl, "shell", "-a", f"params='{GATED.format(gate=gate)}'", "--no-payload",
                     remote="executor01")
    mirror = unit_dir(ctl, unit_id) / "stdout"
    wait_until(lambda: mirror.exists() and mirror.read_bytes() == b"first\n", timeout=60,
               what="the first line in the mirror")
    remote = remote_id(ctl, unit_id)
    ctl.stop()
    try:
        gate.touch()
        wait_state(exe, remote, {2})
        os.truncate(unit_dir(exe, remote) / "stdout", 8)  # of 13 bytes
    finally:
        ctl.start()
    pair.wait_converged()
    done = wait_state(ctl, unit_id, {2, 3}, timeout=60)
    assert (done["State"], done["Detail"]) == (
        3, "Results incomplete: the remote node's stdout ends at 8 of 13 bytes"), done
    assert mirror.read_bytes() == b"first\nse"
