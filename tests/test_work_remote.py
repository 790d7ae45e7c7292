"""Remote work on the seed's line controller01 - relayer01 - executor01 (Demo 01/02).

Every unit is submitted on controller01 for executor01, with the real receptorctl and with
our ``mesh work`` CLI; the results travel back through relayer01.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import ControlSession, Mesh, wait_until
from work_helpers import (MESH, RECEPTORCTL, bigout_sha256, file_sha256, json_out, mesh_cli,
                          pid_alive, receptorctl, remote_id, running_line, status, submitted_unit,
                          unit_dir, wait_state, work_types)

HOSTNAME = socket.gethostname()
UNIT_ID = re.compile(r"[0-9A-Za-z]{8}")
CLIS = ["receptorctl", "mesh"]


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    # echo-sleep at 0.5 s a line: cancels land mid-job even on a busy machine
    with running_line("mesh-wremote-", executor_sections=work_types(interval=0.5)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def long_line() -> Iterator[Mesh]:
    """controller01 - relayer01 - relayer02 - executor01: two relays between the ends."""
    with running_line("mesh-wremote4-",
                      ("controller01", "relayer01", "relayer02", "executor01")) as cluster:
        yield cluster


def submit(cli: str, node, worktype: str, *args: str, stdin: bytes | None = None,
           check: bool = True, remote: str = "executor01"):
    """``work submit --node executor01`` with either CLI; args use the receptorctl spelling
    (``-a k=v``), which our CLI accepts too."""
    run = receptorctl if cli == "receptorctl" else mesh_cli
    return run(node, "work", "submit", "--node", remote, *args, worktype, stdin=stdin,
               check=check)


def results(cli: str, node, unit_id: str, check: bool = True):
    run = receptorctl if cli == "receptorctl" else mesh_cli
    return run(node, "work", "results", unit_id, check=check)


def release(cli: str, node, *args: str, check: bool = True):
    run = receptorctl if cli == "receptorctl" else mesh_cli
    return run(node, "work", "release", *args, check=check)


def both_dirs_gone(line: Mesh, unit_id: str, remote_unit: str) -> bool:
    return (not unit_dir(line.nodes["controller01"], unit_id).exists()
            and not unit_dir(line.nodes["executor01"], remote_unit).exists())


# -- Demo 01: gather-hostname ------------------------------------------------------------------


@pytest.mark.parametrize("cli", CLIS)
def test_gather_hostname_submit_then_results(line: Mesh, cli: str) -> None:
    ctl, exe = line.nodes["controller01"], line.nodes["executor01"]
    unit_id = submitted_unit(submit(cli, ctl, "gather-hostname", "--no-payload"))
    assert UNIT_ID.fullmatch(unit_id)
    done = wait_state(ctl, unit_id, {2, 3})
    assert (done["State"], done["StateName"], done["Detail"]) == (2, "Succeeded", "exit status 0")

    out = results(cli, ctl, unit_id)
    assert out.stdout == f"{HOSTNAME}\n".encode()

    listed = json_out(receptorctl(ctl, "work", "list"))[unit_id]
    assert set(listed) == {"State", "StateName", "Detail", "StdoutSize", "WorkType",
                           "ExtraData", "StdoutFinalSize", "StdoutSHA256"}
    assert listed["WorkType"] == "remote"
    assert listed["StdoutSize"] == len(HOSTNAME) + 1
    extra = listed["ExtraData"]
    assert {"RemoteNode", "RemoteWorkType", "RemoteParams", "RemoteUnitID", "RemoteStarted",
            "LocalCancelled", "LocalReleased"} <= set(extra)
    assert extra["RemoteNode"] == "executor01"
    assert extra["RemoteWorkType"] == "gather-hostname"
    assert extra["RemoteParams"] == {}
    assert UNIT_ID.fullmatch(extra["RemoteUnitID"])
    assert (extra["RemoteStarted"], extra["LocalCancelled"], extra["LocalReleased"]) == \
        (True, False, False)
    # the executor's own unit ran the command and kept the same output
    remote = status(exe, extra["RemoteUnitID"])
    assert (remote["WorkType"], remote["State"], remote["Detail"]) == \
        ("gather-hostname", 2, "exit status 0")
    assert (unit_dir(exe, extra["RemoteUnitID"]) / "stdout").read_bytes() == out.stdout
    assert (unit_dir(ctl, unit_id) / "stdout").read_bytes() == out.stdout
    # mesh work list --unit-id shows the same one-entry object
    one = json_out(mesh_cli(ctl, "work", "list", "--unit-id", unit_id))
    assert list(one) == [unit_id] and one[unit_id]["ExtraData"] == extra


@pytest.mark.parametrize("cli", CLIS)
def test_gather_hostname_rm_follow(line: Mesh, cli: str) -> None:
    ctl = line.nodes["controller01"]
    before = set(json_out(receptorctl(ctl, "work", "list")))
    out = submit(cli, ctl, "gather-hostname", "--no-payload", "--rm", "--follow")
    if cli == "receptorctl":
        # receptorctl prints the release confirmation after the results, on stdout
        match = re.fullmatch(rf"{re.escape(HOSTNAME)}\n\(([0-9A-Za-z]{{8}}), released\)\n",
                             out.stdout.decode())
    else:
        # ours keeps stdout byte-exact (it is often piped) and confirms on stderr
        assert out.stdout == f"{HOSTNAME}\n".encode()
        match = re.search(r"\(([0-9A-Za-z]{8}), released\)", out.stderr.decode())
    assert match, (out.stdout, out.stderr)
    unit_id = match.group(1)
    assert unit_id not in json_out(receptorctl(ctl, "work", "list"))
    assert set(json_out(receptorctl(ctl, "work", "list"))) == before
    assert not unit_dir(ctl, unit_id).exists()


# -- Demo 02: cat-files with runtime params -----------------------------------------------------


def expected_cat_files(*paths: str) -> bytes:
    out = b""
    for path in paths:
        for i, text in enumerate(Path(path).read_bytes().splitlines(keepends=True), 1):
            out += f"{path}:{i}:".encode() + text
    return out


@pytest.mark.parametrize("cli", CLIS)
def test_cat_files_with_params(line: Mesh, cli: str) -> None:
    ctl = line.nodes["controller01"]
    flag = "-a" if cli == "receptorctl" else "--param"
    out = submit(cli, ctl, "cat-files", "--no-payload", flag,
                 "params=/etc/hostname /etc/os-release", "--follow")
    assert out.stdout == expected_cat_files("/etc/hostname", "/etc/os-release")
    assert out.stdout.startswith(f"/etc/hostname:1:{HOSTNAME}\n".encode())
    units = json_out(receptorctl(ctl, "work", "list"))
    mine = [u for u in units.values() if u["ExtraData"]["RemoteWorkType"] == "cat-files"
            and u["State"] == 2]
    assert any(u["ExtraData"]["RemoteParams"] == {"params": "/etc/hostname /etc/os-release"}
               for u in mine)


@pytest.mark.parametrize("cli", CLIS)
def test_runtime_params_refused_without_allowruntimeparams(line: Mesh, cli: str) -> None:
    ctl = line.nodes["controller01"]
    flag = "-a" if cli == "receptorctl" else "--param"
    before = json_out(receptorctl(ctl, "work", "list"))
    out = submit(cli, ctl, "gather-hostname", "--no-payload", flag, "params=/etc/hostname",
                 check=False)
    assert out.returncode == 101
    assert b"extra params provided but not allowed" in out.stderr
    assert b"Traceback" not in out.stderr
    after = json_out(receptorctl(ctl, "work", "list"))
    new = {k: v for k, v in after.items() if k not in before}
    # the controller's unit records the refusal as a failure
    assert all(v["State"] == 3 and "extra params provided but not allowed" in v["Detail"]
               for v in new.values())


def test_unknown_remote_work_type(line: Mesh) -> None:
    ctl = line.nodes["controller01"]
    out = submit("receptorctl", ctl, "no-such-type", "--no-payload", check=False)
    assert out.returncode == 101
    assert b"unknown work type no-such-type" in out.stderr


# -- echo-reply: payloads --------------------------------------------------------------------


@pytest.mark.parametrize("cli", CLIS)
def test_echo_reply_payload_forms(line: Mesh, cli: str, tmp_path: Path) -> None:
    ctl = line.nodes["controller01"]
    payload = tmp_path / "payload.txt"
    payload.write_bytes(b"from a file\nsecond line, no newline at the end")
    out = submit(cli, ctl, "echo-reply", "--payload", str(payload), "--follow", "--rm")
    assert out.stdout.startswith(payload.read_bytes())

    out = submit(cli, ctl, "echo-reply", "--payload-literal", "hello mesh", "--follow", "--rm")
    assert out.stdout.startswith(b"hello mesh\n")

    data = b"from stdin \x00\xff binary\n"
    out = submit(cli, ctl, "echo-reply", "--payload", "-", "--follow", "--rm", stdin=data)
    assert out.stdout.startswith(data)
    if cli == "mesh":  # ours leaves stdout byte-exact
        assert out.stdout == data


def test_fifty_megabytes_every_byte_value_through_two_relays(long_line: Mesh,
                                                              tmp_path: Path) -> None:
    """A 50 MB payload holding every byte value goes to remote ``cat`` and comes back."""
    ctl = long_line.nodes["controller01"]
    assert long_line.nodes["controller01"].routes()["executor01"] == "relayer01"
    payload = tmp_path / "fifty.bin"
    block = bytes(range(256)) * 4096 + bytes(reversed(range(256))) * 16
    size = 50 * 1000 * 1000
    with open(payload, "wb") as handle:
        written = 0
        while written < size:
            chunk = block[:size - written]
            handle.write(chunk)
            written += len(chunk)
    want = file_sha256(payload)
    for cli in CLIS:
        out = tmp_path / f"out-{cli}.bin"
        run = receptorctl if cli == "receptorctl" else mesh_cli
        result = run(ctl, "work", "submit", "--node", "executor01", "--payload", str(payload),
                     "--follow", "echo-reply")
        out.write_bytes(result.stdout)
        assert len(result.stdout) == size, cli
        assert file_sha256(out) == want, cli


@pytest.mark.parametrize("cli", [
    "mesh",
    # receptorctl copies results 256 bytes at a time: ~15 s for 200 MB on a busy machine
    pytest.param("receptorctl", marks=pytest.mark.slow),
])
def test_two_hundred_megabyte_result_is_byte_exact(line: Mesh, tmp_path: Path,
                                                   cli: str) -> None:
    ctl, exe = line.nodes["controller01"], line.nodes["executor01"]
    size = 200 * 1000 * 1000
    out = tmp_path / "big.out"
    if cli == "mesh":
        args = [*MESH, "work", "submit", "--param", f"params={size}"]
    else:
        args = [RECEPTORCTL, "--socket", str(ctl.socket), "work", "submit", "-a",
                f"params={size}"]
    start = time.monotonic()
    with open(out, "wb") as handle:
        proc = subprocess.run([*args, "--node", "executor01", "--no-payload", "--follow",
                               "bigout"], stdout=handle, stderr=subprocess.PIPE, timeout=300,
                              env={**os.environ, "MESH_SOCKET": str(ctl.socket)})
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size == size
    digest = file_sha256(out)
    assert digest == bigout_sha256(size)
    units = json_out(receptorctl(ctl, "work", "list"))
    unit_id = next(k for k, v in units.items()
                   if v["ExtraData"]["RemoteWorkType"] == "bigout" and v["StdoutSize"] == size)
    remote = remote_id(ctl, unit_id)
    assert file_sha256(unit_dir(exe, remote) / "stdout") == digest
    assert file_sha256(unit_dir(ctl, unit_id) / "stdout") == digest
    print(f"200 MB result in {elapsed:.1f} s ({size / elapsed / 1e6:.0f} MB/s) with {cli}")
    mesh_cli(ctl, "work", "release", unit_id)
    wait_until(lambda: both_dirs_gone(line, unit_id, remote), timeout=30,
               what="200 MB unit dirs removed")


# -- cancel, release, force-release ----------------------------------------------------------


def echo_sleep_command_pids(exe, remote: str) -> list[int]:
    """PIDs of the remote echo-sleep's shell, from its ``Running: PID <n>`` detail."""
    detail = status(exe, remote)["Detail"]
    return [int(detail.rsplit(" ", 1)[1])] if detail.startswith("Running: PID ") else []


@pytest.mark.parametrize("cli", CLIS)
def test_cancel_propagates_to_the_executor(line: Mesh, cli: str) -> None:
    ctl, exe = line.nodes["controller01"], line.nodes["executor01"]
    unit_id = submitted_unit(submit(cli, ctl, "echo-slow", "--no-payload"))
    local_stdout = unit_dir(ctl, unit_id) / "stdout"
    wait_until(lambda: local_stdout.exists() and local_stdout.stat().st_size > 0, timeout=30,
               what="first echo-slow line on the controller")
    remote = remote_id(ctl, unit_id)
    shell = wait_until(lambda: echo_sleep_command_pids(exe, remote), timeout=30,
                       what="remote shell pid")[0]
    run = receptorctl if cli == "receptorctl" else mesh_cli
    out = run(ctl, "work", "cancel", unit_id)
    assert f"({unit_id}, cancelled)" in out.stdout.decode()

    remote_status = wait_state(exe, remote, {4}, timeout=30)
    assert remote_status["StateName"] == "Canceled"
    local = wait_state(ctl, unit_id, {4}, timeout=30)
    assert local["StateName"] == "Canceled"
    assert local["ExtraData"]["LocalCancelled"] is True
    wait_until(lambda: not pid_alive(shell), timeout=15, what="remote shell killed")

    # the results stream of a canceled unit ends (it would hang forever in Receptor)
    start = time.monotonic()
    res = results(cli, ctl, unit_id)
    assert time.monotonic() - start < 30
    lines = res.stdout.decode().splitlines()
    assert 1 <= len(lines) < 12
    # StdoutSize of a canceled unit is what results send, on both nodes
    assert (unit_dir(exe, remote) / "stdout").read_bytes() == res.stdout
    assert status(exe, remote)["StdoutSize"] == len(res.stdout)
    wait_until(lambda: status(ctl, unit_id)["StdoutSize"] == len(res.stdout), timeout=30,
               what="controller StdoutSize of the canceled unit")
    assert [int(x.split()[0]) for x in lines] == list(range(1, len(lines) + 1))
    # nothing more arrives afterwards
    size = (unit_dir(ctl, unit_id) / "stdout").stat().st_size
    time.sleep(0.5)  # a quiet period to show no output is still coming (not a wait)
    assert (unit_dir(ctl, unit_id) / "stdout").stat().st_size == size
    release(cli, ctl, unit_id)
    wait_until(lambda: both_dirs_gone(line, unit_id, remote), timeout=30,
               what="canceled unit released on both nodes")


@pytest.mark.parametrize("cli", CLIS)
def test_release_removes_both_unit_dirs(line: Mesh, cli: str) -> None:
    ctl, exe = line.nodes["controller01"], line.nodes["executor01"]
    unit_id = submitted_unit(submit(cli, ctl, "echo-reply", "--payload-literal", "x"))
    wait_state(ctl, unit_id, {2})
    remote = remote_id(ctl, unit_id)
    assert unit_dir(ctl, unit_id).is_dir() and unit_dir(exe, remote).is_dir()
    assert {"status", "stdin", "stdout"} <= {p.name for p in unit_dir(exe, remote).iterdir()}
    out = release(cli, ctl, unit_id)
    assert f"({unit_id}, released)" in out.stdout.decode()
    assert not unit_dir(ctl, unit_id).exists()
    wait_until(lambda: not unit_dir(exe, remote).exists(), timeout=30,
               what="executor unit dir removed")
    assert remote not in exe.control("work list")


@pytest.mark.parametrize("cli", CLIS)
def test_release_of_unknown_unit_exits_cleanly(line: Mesh, cli: str) -> None:
    ctl = line.nodes["controller01"]
    for args in (("NoSuch12",), ("--force", "NoSuch12")):
        out = release(cli, ctl, *args, check=False)
        assert out.returncode == 0, out
        assert "(NoSuch12, already released)" in out.stdout.decode()
        assert b"Traceback" not in out.stderr


@pytest.mark.parametrize("cli", CLIS)
def test_force_release_of_a_running_unit(line: Mesh, cli: str) -> None:
    ctl, exe = line.nodes["controller01"], line.nodes["executor01"]
    unit_id = submitted_unit(submit(cli, ctl, "echo-slow", "--no-payload"))
    wait_state(ctl, unit_id, {1})
    remote = remote_id(ctl, unit_id)
    shell = wait_until(lambda: echo_sleep_command_pids(exe, remote), timeout=30,
                       what="remote shell pid")[0]
    out = release(cli, ctl, "--force", unit_id)
    assert f"({unit_id}, released)" in out.stdout.decode()
    assert not unit_dir(ctl, unit_id).exists()
    # force-release still asks the executor to release (Receptor sends `release` there)
    wait_until(lambda: not unit_dir(exe, remote).exists(), timeout=30,
               what="executor unit dir removed")
    wait_until(lambda: not pid_alive(shell), timeout=15, what="remote shell killed")


def test_results_of_a_failed_remote_unit_exit_1(line: Mesh) -> None:
    ctl = line.nodes["controller01"]
    unit_id = submitted_unit(submit("receptorctl", ctl, "exit-three", "--no-payload"))
    done = wait_state(ctl, unit_id, {2, 3})
    assert (done["State"], done["Detail"]) == (3, "exit status 3")
    for cli in CLIS:
        out = results(cli, ctl, unit_id, check=False)
        assert out.returncode == 1
        assert out.stdout == b"about to fail\n"
        assert b"Remote unit failed: exit status 3" in out.stderr


def test_remote_status_json_over_the_control_socket(line: Mesh) -> None:
    """The status object of a remote unit hides secret_ params but keeps the others."""
    ctl = line.nodes["controller01"]
    with ControlSession(ctl.socket) as session:
        session.file.write(json.dumps({
            "command": "work", "subcommand": "submit", "node": "executor01",
            "worktype": "cat-files", "params": "/etc/hostname"}).encode() + b"\n")
        session.file.flush()
        line_ = session.file.readline().decode()
        match = re.fullmatch(r"Work unit created with ID ([0-9A-Za-z]{8})\. "
                             r"Send stdin data and EOF\.\n", line_)
        assert match, line_
        session.sock.shutdown(socket.SHUT_WR)
        reply = json.loads(session.file.readline())
        assert reply == {"result": "Job Started", "unitid": match.group(1)}
    done = wait_state(ctl, match.group(1), {2})
    assert done["ExtraData"]["RemoteParams"] == {"params": "/etc/hostname"}
    assert receptorctl(ctl, "work", "results", match.group(1)).stdout == \
        f"/etc/hostname:1:{HOSTNAME}\n".encode()
