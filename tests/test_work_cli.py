"""Our ``mesh work`` command line on the line controller01 - relayer01 - executor01."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh, wait_until
from work_helpers import (MESH, json_out, mesh_cli, pid_alive, receptorctl, remote_id, run,
                          running_line, status, submitted_unit, unit_dir, wait_state, work_types)

HOSTNAME = socket.gethostname()


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    with running_line("mesh-wcli-", executor_sections=work_types(interval=0.5)) as cluster:
        yield cluster


@pytest.fixture
def ctl(line: Mesh):
    return line.nodes["controller01"]


def work(node, *args: str, stdin: bytes | None = None, check: bool = True):
    return mesh_cli(node, "work", *args, stdin=stdin, check=check)


def test_submit_prints_result_and_unit_id(ctl, tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"file payload\n")
    forms = [(("--payload", str(payload)), None, b"file payload\n"),
             (("--payload", "-"), b"stdin payload", b"stdin payload"),
             (("--payload-literal", "literal payload"), None, b"literal payload\n"),
             (("--no-payload",), None, b"")]
    for args, stdin, expected in forms:
        out = work(ctl, "submit", "echo-reply", "--node", "executor01", *args, stdin=stdin)
        text = out.stdout.decode()
        assert re.fullmatch(r"Result: Job Started\nUnit ID: [0-9A-Za-z]{8}\n", text), text
        unit_id = submitted_unit(out)
        assert work(ctl, "results", unit_id).stdout == expected, args
        assert (unit_dir(ctl, unit_id) / "stdin").read_bytes() == expected


def test_follow_and_rm(line: Mesh, ctl) -> None:
    exe = line.nodes["executor01"]
    before = set(json_out(work(ctl, "list")))
    out = work(ctl, "submit", "gather-hostname", "--node", "executor01", "--no-payload",
               "--rm", "--follow")
    assert out.stdout == f"{HOSTNAME}\n".encode()
    match = re.fullmatch(rb"\(([0-9A-Za-z]{8}), released\)\n", out.stderr)
    assert match, out.stderr
    assert set(json_out(work(ctl, "list"))) == before
    assert not unit_dir(ctl, match.group(1).decode()).exists()
    # the executor's unit went too
    wait_until(lambda: not any(u["WorkType"] == "gather-hostname"
                               for u in exe.control("work list").values()),
               timeout=30, what="executor unit released")


def test_params_and_param_files(ctl, tmp_path: Path) -> None:
    out = work(ctl, "submit", "cat-files", "--node", "executor01", "--no-payload",
               "--param", "params=/etc/hostname", "--follow")
    assert out.stdout == f"/etc/hostname:1:{HOSTNAME}\n".encode()
    # -a is the receptorctl spelling; @file reads the value from a file
    (tmp_path / "params").write_text("/etc/hostname")
    out = work(ctl, "submit", "cat-files", "--node", "executor01", "--no-payload",
               "-a", f"params=@{tmp_path / 'params'}", "--follow")
    assert out.stdout == f"/etc/hostname:1:{HOSTNAME}\n".encode()


def test_usage_errors(ctl) -> None:
    cases = [
        (("submit", "echo-reply", "--node", "executor01"), 2, "give exactly one of --payload"),
        (("submit", "echo-reply", "--node", "executor01", "--no-payload",
          "--payload-literal", "x"), 2, "give exactly one of --payload"),
        (("submit", "echo-reply", "--node", "executor01", "--no-payload", "--rm"), 2,
         "--rm needs --follow"),
        (("submit", "echo-reply", "--node", "executor01", "--no-payload", "--timeout", "1m"),
         2, "--timeout needs --follow"),
        (("submit", "echo-reply", "--node", "executor01", "--no-payload", "--follow",
          "--timeout", "5"), 2, "missing unit"),
        (("results", "NoSuch12", "--timeout", "0s"), 2, "not a positive duration"),
        (("submit", "echo-reply", "--node", "executor01", "--no-payload", "--param", "novalue"),
         1, "must be key=value"),
        (("submit", "echo-reply", "--node", "executor01", "--no-payload", "--param",
          "node=x"), 1, "reserved name"),
        (("submit", "gather-hostname", "--node", "executor01", "--no-payload", "--param",
          "params=x"), 101, "extra params provided but not allowed"),
        (("submit", "nosuch", "--node", "executor01", "--no-payload"), 101,
         "unknown work type nosuch"),
        (("submit", "echo-reply", "--no-payload", "--ttl", "1m"), 101,
         "ttl option is intended for remote work only"),
        (("results", "NoSuch12"), 1, "unknown work unit NoSuch12"),
        (("list", "--unit-id", "NoSuch12"), 1, "unknown work unit NoSuch12"),
        (("cancel", "NoSuch12"), 1, "unknown work unit NoSuch12"),
        (("release",), 2, "give unit IDs or --all"),
    ]
    for args, code, text in cases:
        out = work(ctl, *args, check=False)
        assert out.returncode == code, (args, out)
        assert text in out.stderr.decode(), (args, out.stderr)
        assert b"Traceback" not in out.stderr


def test_missing_socket_is_a_clean_error(tmp_path: Path) -> None:
    out = run([*MESH, "work", "list"], env={"MESH_SOCKET": str(tmp_path / "none.sock")})
    assert out.returncode == 1
    assert b"does not exist" in out.stderr and b"Traceback" not in out.stderr


def test_failed_unit_with_follow(ctl) -> None:
    out = work(ctl, "submit", "exit-three", "--node", "executor01", "--no-payload", "--follow",
               check=False)
    assert out.returncode == 1
    assert out.stdout == b"about to fail\n"
    assert b"Remote unit failed: exit status 3" in out.stderr


NO_ROUTE = "Waiting to submit: cannot reach nosuchnode: no route to node"
FOLLOW_AGAIN = re.compile(r"follow it again with `([^`]+)`")


def test_follow_shows_why_the_unit_waits_and_gives_up_at_the_timeout(ctl) -> None:
    out = work(ctl, "submit", "echo-reply", "--node", "nosuchnode", "--no-payload",
               "--follow", "--timeout", "3s", check=False)
    err = out.stderr.decode()
    assert out.returncode == 124, (out.returncode, err)
    assert out.stdout == b""
    match = re.search(rf"^mesh: ([0-9A-Za-z]{{8}}): {NO_ROUTE}$", err, re.M)
    assert match, err
    unit_id = match.group(1)
    assert f"stopped following unit {unit_id} after 3s (--timeout); it is Pending" in err
    assert FOLLOW_AGAIN.search(err).group(1) == f"mesh work results {unit_id}", err
    assert "Traceback" not in err
    # the unit is left as it was
    assert status(ctl, unit_id)["State"] == 0
    assert status(ctl, unit_id)["Detail"] == NO_ROUTE
    # following it again says the same, and gives up the same way; a --socket given on the
    # command line is part of the command that follows it again
    sock = str(ctl.socket)
    out = work(ctl, "results", "--socket", sock, unit_id, "--timeout", "1s", check=False)
    err = out.stderr.decode()
    assert out.returncode == 124
    assert f"mesh: {unit_id}: {NO_ROUTE}\n" in err
    assert FOLLOW_AGAIN.search(err).group(1) == shlex.join(
        ["mesh", "work", "results", "--socket", sock, unit_id]), err
    assert status(ctl, unit_id)["State"] == 0
    work(ctl, "release", unit_id)


def test_ctrl_c_stops_following_without_a_timeout(ctl, tmp_path: Path) -> None:
    out = work(ctl, "submit", "echo-reply", "--node", "nosuchnode", "--no-payload")
    unit_id = re.fullmatch(r"Result: Job Submitted\nUnit ID: (\w{8})\n", out.stdout.decode())[1]
    errfile = tmp_path / "stderr"
    with open(errfile, "wb") as err:
        proc = subprocess.Popen([*MESH, "work", "results", unit_id], stderr=err,
                                stdout=subprocess.DEVNULL,
                                env={**os.environ, "MESH_SOCKET": str(ctl.socket)})
    try:
        # without --timeout the Detail is shown all the same
        wait_until(lambda: f"mesh: {unit_id}: {NO_ROUTE}\n" in errfile.read_text(),
                   timeout=30, what="the Detail on stderr")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
        proc.wait()
    err = errfile.read_text()
    assert f"stopped following unit {unit_id} on Ctrl-C; it is Pending ({NO_ROUTE})" in err
    assert FOLLOW_AGAIN.search(err).group(1) == f"mesh work results {unit_id}", err
    assert "Traceback" not in err
    assert status(ctl, unit_id)["State"] == 0
    work(ctl, "release", unit_id)


def test_follow_again_after_the_timeout(ctl) -> None:
    out = work(ctl, "submit", "echo-sleep", "--node", "executor01", "--no-payload",
               "--follow", "--timeout", "1s", "--rm", check=False)
    err = out.stderr.decode()
    assert out.returncode == 124, (out.returncode, err)
    assert "not released (--rm)" in err and "released)" not in err, err
    again = shlex.split(FOLLOW_AGAIN.search(err).group(1))
    assert again[:3] == ["mesh", "work", "results"], again
    unit_id = again[-1]
    # the command the message gives picks the unit up and follows it to its end
    out = run([*MESH, *again[1:]], env={"MESH_SOCKET": str(ctl.socket)})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert [line.split()[0] for line in lines] == [str(i) for i in range(1, 13)]
    assert status(ctl, unit_id)["State"] == 2
    work(ctl, "release", unit_id)


def test_submit_of_a_work_type_only_another_node_has(ctl) -> None:
    hint = ("unknown work type gather-hostname on controller01; node executor01 advertises "
            "it: submit with --node executor01")
    out = work(ctl, "submit", "gather-hostname", "--no-payload", check=False)
    assert out.returncode == 101
    assert f"mesh: failed to start work unit: {hint}\n" == out.stderr.decode()
    # the hint is in the control reply, so receptorctl shows it too
    out = receptorctl(ctl, "work", "submit", "gather-hostname", "--no-payload", check=False)
    assert out.returncode == 101
    assert hint in out.stderr.decode()
    # a work type no node has keeps Receptor's text
    out = work(ctl, "submit", "nosuch", "--no-payload", check=False)
    assert out.stderr == b"mesh: failed to start work unit: unknown work type nosuch\n"


def test_local_node_is_the_default(line: Mesh) -> None:
    exe = line.nodes["executor01"]
    out = work(exe, "submit", "gather-hostname", "--no-payload", "--follow", "--rm")
    assert out.stdout == f"{HOSTNAME}\n".encode()
    unit_id = submitted_unit(work(exe, "submit", "gather-hostname", "--no-payload"))
    assert wait_state(exe, unit_id, {2})["WorkType"] == "gather-hostname"
    work(exe, "release", unit_id)


def test_list_and_unit_id(ctl) -> None:
    a = submitted_unit(work(ctl, "submit", "echo-reply", "--node", "executor01",
                            "--payload-literal", "a"))
    b = submitted_unit(work(ctl, "submit", "echo-reply", "--node", "executor01",
                            "--payload-literal", "b"))
    wait_state(ctl, a, {2})
    wait_state(ctl, b, {2})
    out = work(ctl, "list")
    units = json.loads(out.stdout)
    assert {a, b} <= set(units)
    assert out.stdout.decode() == json.dumps(units, indent=4, sort_keys=True) + "\n"
    one = json_out(work(ctl, "list", "--unit-id", a))
    assert one == {a: units[a]}
    assert one[a]["ExtraData"]["RemoteWorkType"] == "echo-reply"
    quiet = work(ctl, "list", "-q").stdout.decode().split()
    assert {a, b} <= set(quiet)


def test_cancel_several_units(line: Mesh, ctl) -> None:
    exe = line.nodes["executor01"]
    ids = [submitted_unit(work(ctl, "submit", "echo-slow", "--node", "executor01",
                               "--no-payload")) for _ in range(2)]
    for unit_id in ids:
        wait_state(ctl, unit_id, {1})
    remotes = [remote_id(ctl, u) for u in ids]
    out = work(ctl, "cancel", *ids)
    assert out.stdout.decode() == "".join(f"({u}, cancelled)\n" for u in ids)
    for unit_id, remote in zip(ids, remotes):
        assert wait_state(ctl, unit_id, {4})["Detail"] == "Canceled"
        assert wait_state(exe, remote, {4})["Detail"] == "Canceled"
    # the result streams of canceled units end
    for unit_id in ids:
        work(ctl, "results", unit_id)
    out = work(ctl, "release", *ids)
    assert out.stdout.decode() == "".join(f"({u}, released)\n" for u in ids)
    for unit_id, remote in zip(ids, remotes):
        assert not unit_dir(ctl, unit_id).exists()
        wait_until(lambda: not unit_dir(exe, remote).exists(), timeout=30,
                   what="executor unit dir removed")


def test_release_force_and_all(line: Mesh, ctl) -> None:
    exe = line.nodes["executor01"]
    running = submitted_unit(work(ctl, "submit", "echo-slow", "--node", "executor01",
                                  "--no-payload"))
    running_remote = remote_id(ctl, running)
    shell_pid = wait_until(lambda: (d := status(exe, running_remote)["Detail"]).startswith(
        "Running: PID ") and int(d.rsplit(" ", 1)[1]), timeout=30, what="remote shell")
    out = work(ctl, "release", "--force", running)
    assert out.stdout.decode() == f"({running}, released)\n"
    assert not unit_dir(ctl, running).exists()
    wait_until(lambda: not pid_alive(shell_pid), timeout=15, what="remote shell killed")

    more = [submitted_unit(work(ctl, "submit", "echo-reply", "--node", "executor01",
                                "--payload-literal", str(i))) for i in range(3)]
    for unit_id in more:
        wait_state(ctl, unit_id, {2})
    remotes = [remote_id(ctl, u) for u in more]
    listed = list(json_out(work(ctl, "list")))
    out = work(ctl, "release", "--all")
    assert out.stdout.decode() == "".join(f"({u}, released)\n" for u in listed)
    assert json_out(work(ctl, "list")) == {}
    for remote in remotes:
        wait_until(lambda: not unit_dir(exe, remote).exists(), timeout=30,
                   what="executor unit dir removed")
