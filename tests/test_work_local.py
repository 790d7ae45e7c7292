"""Local work units on one node, driven by the real receptorctl (and the raw control socket
for what receptorctl cannot send)."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import ControlSession, Mesh, NodeProcess, wait_until
from work_helpers import (MESH, cleanup, json_out, pid_alive, receptorctl, status,
                          submitted_unit, unit_dir, wait_state, work_types)

HOSTNAME = socket.gethostname()
UNIT_ID = re.compile(r"[0-9A-Za-z]{8}")
STATUS_KEYS = {"State", "StateName", "Detail", "StdoutSize", "WorkType", "ExtraData"}


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    cluster = Mesh(Path(tempfile.mkdtemp(prefix="mesh-wlocal-")))
    worker = cluster.add("worker01", sections=work_types())
    try:
        cluster.start()
        yield worker
    finally:
        cleanup(cluster)


def raw_submit(node: NodeProcess, request: dict, payload: bytes = b"") -> tuple[str, str]:
    """Send a JSON submit over the control socket; return (first reply line, second line)."""
    with ControlSession(node.socket) as session:
        session.file.write(json.dumps(request).encode() + b"\n")
        session.file.flush()
        first = session.file.readline().decode()
        if not first.startswith("Work unit created"):
            return first, ""
        session.file.write(payload)
        session.file.flush()
        session.sock.shutdown(socket.SHUT_WR)
        return first, session.file.readline().decode()


def test_submit_list_status_results(node: NodeProcess) -> None:
    out = receptorctl(node, "work", "submit", "gather-hostname", "--no-payload")
    unit_id = submitted_unit(out)
    assert UNIT_ID.fullmatch(unit_id)
    done = wait_state(node, unit_id, {2, 3})
    output = f"{HOSTNAME}\n".encode()
    assert done == {"State": 2, "StateName": "Succeeded", "Detail": "exit status 0",
                    "StdoutSize": len(output), "WorkType": "gather-hostname",
                    "ExtraData": None, "StdoutFinalSize": len(output),
                    "StdoutSHA256": hashlib.sha256(output).hexdigest()}
    assert receptorctl(node, "work", "results", unit_id).stdout == f"{HOSTNAME}\n".encode()
    units = json_out(receptorctl(node, "work", "list"))
    assert units[unit_id] == done
    assert json_out(receptorctl(node, "work", "list", "--unit_id", unit_id)) == \
        {unit_id: done}
    assert unit_id in receptorctl(node, "work", "list", "-q").stdout.decode().split()


def test_unit_ids_are_eight_alphanumerics(node: NodeProcess) -> None:
    ids = []
    for _ in range(5):
        first, second = raw_submit(node, {"command": "work", "subcommand": "submit",
                                          "node": "localhost", "worktype": "echo-reply"},
                                   b"x")
        match = re.fullmatch(r"Work unit created with ID ([0-9A-Za-z]{8})\. "
                             r"Send stdin data and EOF\.\n", first)
        assert match, first
        assert json.loads(second) == {"result": "Job Started", "unitid": match.group(1)}
        ids.append(match.group(1))
    assert len(set(ids)) == 5


def test_unit_dir_holds_status_stdin_stdout(node: NodeProcess, tmp_path: Path) -> None:
    payload = b"line one\nline two \x00\xff\n"
    (tmp_path / "p").write_bytes(payload)
    unit_id = submitted_unit(receptorctl(node, "work", "submit", "echo-reply", "--payload",
                                         str(tmp_path / "p")))
    wait_state(node, unit_id, {2})
    path = unit_dir(node, unit_id)
    assert path == node.datadir / "worker01" / unit_id
    assert {"status", "stdin", "stdout"} <= {p.name for p in path.iterdir()}
    assert (path / "stdin").read_bytes() == payload
    assert (path / "stdout").read_bytes() == payload
    on_disk = json.loads((path / "status").read_text())
    assert on_disk == {"State": 2, "Detail": "exit status 0", "StdoutSize": len(payload),
                       "WorkType": "echo-reply", "ExtraData": None,
                       "StdoutFinalSize": len(payload),
                       "StdoutSHA256": hashlib.sha256(payload).hexdigest()}
    assert (path.stat().st_mode & 0o777) == 0o700
    assert ((path / "stdout").stat().st_mode & 0o777) == 0o600


def test_failed_unit_results_exit_1(node: NodeProcess) -> None:
    unit_id = submitted_unit(receptorctl(node, "work", "submit", "exit-three",
                                         "--no-payload"))
    done = wait_state(node, unit_id, {2, 3})
    assert (done["State"], done["StateName"], done["Detail"]) == (3, "Failed", "exit status 3")
    out = receptorctl(node, "work", "results", unit_id, check=False)
    assert out.returncode == 1
    assert out.stdout == b"about to fail\n"
    assert b"Remote unit failed: exit status 3" in out.stderr


def test_submit_with_a_non_string_value(node: NodeProcess) -> None:
    first, _ = raw_submit(node, {"command": "work", "subcommand": "submit",
                                 "node": "localhost", "worktype": "echo-reply", "params": 5})
    assert first == "ERROR: submit parameters must all be strings and params is not\n"
    first, _ = raw_submit(node, {"command": "work", "subcommand": "submit",
                                 "node": "localhost", "worktype": "echo-reply",
                                 "ttl": None})
    assert first == "ERROR: submit parameters must all be strings and ttl is not\n"


def test_unknown_work_type(node: NodeProcess) -> None:
    out = receptorctl(node, "work", "submit", "no-such-type", "--no-payload", check=False)
    assert out.returncode == 101
    assert b"unknown work type no-such-type" in out.stderr
    first, _ = raw_submit(node, {"command": "work", "subcommand": "submit",
                                 "node": "worker01", "worktype": "no-such-type"})
    assert first == "ERROR: unknown work type no-such-type\n"


def test_ttl_is_for_remote_work_only(node: NodeProcess) -> None:
    out = receptorctl(node, "work", "submit", "echo-reply", "--no-payload", "--ttl", "1m",
                      check=False)
    assert out.returncode == 101
    assert b"ttl option is intended for remote work only" in out.stderr


def test_runtime_params_refused(node: NodeProcess) -> None:
    out = receptorctl(node, "work", "submit", "echo-reply", "--no-payload", "-a",
                      "params=--help", check=False)
    assert out.returncode == 101
    assert b"extra params provided but not allowed" in out.stderr
    # the text form: everything after the work type becomes params
    with ControlSession(node.socket) as session:
        session.file.write(b"work submit localhost echo-reply one two\n")
        session.file.flush()
        assert session.file.readline() == b"ERROR: extra params provided but not allowed\n"


def test_status_and_list_of_unknown_unit(node: NodeProcess) -> None:
    with ControlSession(node.socket) as session:
        for line in ("work status NoSuch12", "work list NoSuch12", "work cancel NoSuch12"):
            session.file.write(line.encode() + b"\n")
            session.file.flush()
            assert session.file.readline() == b"ERROR: unknown work unit NoSuch12\n"
    out = receptorctl(node, "work", "list", "--unit_id", "NoSuch12", check=False)
    assert out.returncode == 1
    assert b"unknown work unit NoSuch12" in out.stderr


def test_status_object_while_running_and_after(node: NodeProcess) -> None:
    unit_id = submitted_unit(receptorctl(node, "work", "submit", "echo-sleep",
                                         "--no-payload"))
    running = wait_state(node, unit_id, {1})
    assert set(running) == STATUS_KEYS
    assert running["StateName"] == "Running"
    assert re.fullmatch(r"Running: PID \d+", running["Detail"])
    assert running["WorkType"] == "echo-sleep"
    assert set(running["ExtraData"]) == {"Pid", "Params"}
    assert running["ExtraData"]["Params"].startswith("-c 'for i in $(seq 1 12)")
    assert pid_alive(running["ExtraData"]["Pid"])
    out = receptorctl(node, "work", "results", unit_id)  # follows until the unit finishes
    lines = out.stdout.decode().splitlines()
    assert [int(x.split()[0]) for x in lines] == list(range(1, 13))
    done = status(node, unit_id)
    assert (done["State"], done["Detail"], done["ExtraData"]) == (2, "exit status 0", None)
    assert done["StdoutSize"] == len(out.stdout)


def test_cancel_and_release_local_unit(node: NodeProcess) -> None:
    unit_id = submitted_unit(receptorctl(node, "work", "submit", "echo-slow", "--no-payload"))
    running = wait_state(node, unit_id, {1})
    shell = int(running["Detail"].rsplit(" ", 1)[1])
    out = receptorctl(node, "work", "cancel", unit_id)
    assert f"({unit_id}, cancelled)" in out.stdout.decode()
    canceled = status(node, unit_id)
    assert (canceled["State"], canceled["StateName"], canceled["Detail"]) == \
        (4, "Canceled", "Canceled")
    wait_until(lambda: not pid_alive(shell), timeout=15, what="shell killed")
    start = time.monotonic()
    receptorctl(node, "work", "results", unit_id)  # ends although Canceled
    assert time.monotonic() - start < 30
    out = receptorctl(node, "work", "release", unit_id)
    assert f"({unit_id}, released)" in out.stdout.decode()
    assert not unit_dir(node, unit_id).exists()
    assert unit_id not in json_out(receptorctl(node, "work", "list"))


def test_status_shows_work_types(node: NodeProcess) -> None:
    types = ("bigout, cat-files, echo-reply, echo-sleep, echo-slow, exit-three, gather-hostname, "
             "shell")
    out = receptorctl(node, "status").stdout.decode()
    assert f"Node         Work Types\nworker01     {types}\n" in out or \
        re.search(rf"\nworker01 +{re.escape(types)}\n", out), out
    mesh_out = subprocess.run([*MESH, "status", "--socket", str(node.socket)],
                              capture_output=True, text=True, timeout=60, check=True).stdout
    assert re.search(rf"\nworker01 +{re.escape(types)}\n", mesh_out), mesh_out
    ads = node.status()["Advertisements"]
    mine = [ad for ad in ads if ad["NodeID"] == "worker01"]
    assert mine and all(
        ad["WorkCommands"] == [{"WorkType": t, "Secure": False} for t in types.split(", ")]
        for ad in mine)
