"""Bulk release by policy: ``mesh work release --failed/--succeeded/--canceled/--older-than
[--dry-run]`` and the control service's ``work release-matching``, on controller01 -
executor01 (executor01 runs the work; its units are local there, remote on controller01)."""

from __future__ import annotations

import json
import os
import time
from typing import Iterator

import pytest

from mesh.control.client import ControlClient, ControlClientError
from mesh.testing import Mesh, NodeProcess, wait_until
from work_helpers import (mesh_cli, receptorctl, remote_id, running_line, status, submitted_unit,
                          unit_dir, wait_state, work_types)

SUCCEEDED, FAILED, CANCELED, RUNNING = 2, 3, 4, 1
#: How far into the past an "old" unit's status file is moved.
HOURS_AGO = 2 * 3600


@pytest.fixture(scope="module")
def line() -> Iterator[Mesh]:
    sections = [*work_types(),
                {"work-command": {"worktype": "succeed", "command": "true"}},
                {"work-command": {"worktype": "fail", "command": "false"}},
                {"work-command": {"worktype": "sleep", "command": "sleep", "params": "600"}}]
    with running_line("mesh-relpol-", ("controller01", "executor01"),
                      executor_sections=sections) as cluster:
        yield cluster


@pytest.fixture
def ctl(line: Mesh) -> NodeProcess:
    return line.nodes["controller01"]


@pytest.fixture
def exe(line: Mesh) -> Iterator[NodeProcess]:
    """executor01, with no unit on either node before and after the test."""
    _release_everything(line)
    yield line.nodes["executor01"]
    _release_everything(line)


def _release_everything(line: Mesh) -> None:
    for name in ("controller01", "executor01"):
        node = line.nodes[name]
        for unit_id in node.control("work list"):
            node.control(f"work force-release {unit_id}")
        wait_until(lambda: node.control("work list") == {}, timeout=30,
                   what=f"no units left on {name}")


def work(node: NodeProcess, *args: str, check: bool = True):
    return mesh_cli(node, "work", *args, check=check)


def submit(node: NodeProcess, work_type: str, *, on: str = "localhost") -> str:
    return submitted_unit(work(node, "submit", work_type, "--node", on, "--no-payload"))


def units(node: NodeProcess) -> set[str]:
    return set(node.control("work list"))


def lines(*pairs: tuple[str, str]) -> str:
    """The CLI's output for these (unit ID, verb) pairs, in the order the node sorts them."""
    return "".join(f"({unit_id}, {verb})\n" for unit_id, verb in sorted(pairs))


def make_old(node: NodeProcess, unit_id: str) -> None:
    """Make the unit's status file look last changed two hours ago (the age the policy
    reads, as unit-lifecycle retention does)."""
    path = unit_dir(node, unit_id) / "status"
    then = time.time() - HOURS_AGO
    os.utime(path, (then, then))


def running_sleep(node: NodeProcess) -> str:
    unit_id = submit(node, "sleep")
    wait_until(lambda: status(node, unit_id)["Detail"].startswith("Running: PID "),
               timeout=30, what="sleep running")
    return unit_id


def test_release_by_state(exe: NodeProcess) -> None:
    ok, bad = submit(exe, "succeed"), submit(exe, "fail")
    canceled = running_sleep(exe)
    work(exe, "cancel", canceled)
    running = running_sleep(exe)
    wait_state(exe, ok, {SUCCEEDED})
    wait_state(exe, bad, {FAILED})
    wait_state(exe, canceled, {CANCELED})

    out = work(exe, "release", "--failed")
    assert out.stdout.decode() == lines((bad, "released")), out
    assert units(exe) == {ok, canceled, running}
    assert not unit_dir(exe, bad).exists()

    # a dry run names what would go and leaves everything as it is
    out = work(exe, "release", "--succeeded", "--canceled", "--dry-run")
    assert out.stdout.decode() == lines((ok, "would release"), (canceled, "would release"))
    assert units(exe) == {ok, canceled, running}
    out = work(exe, "release", "--all", "--dry-run")  # --all: every state, Running too
    assert out.stdout.decode() == lines(*((u, "would release") for u in (ok, canceled, running)))

    out = work(exe, "release", "--canceled")
    assert out.stdout.decode() == lines((canceled, "released"))
    out = work(exe, "release", "--succeeded")
    assert out.stdout.decode() == lines((ok, "released"))
    assert units(exe) == {running}
    assert status(exe, running)["State"] == RUNNING
    # nothing matches: no output, success
    out = work(exe, "release", "--failed", "--succeeded", "--canceled")
    assert out.stdout == b"" and out.stderr == b""
    # receptorctl 1.6.9's release still works beside it
    out = receptorctl(exe, "work", "release", running)
    assert f"({running}, released)" in out.stdout.decode()
    assert units(exe) == set()


def test_release_older_than(exe: NodeProcess) -> None:
    old_ok, new_ok = submit(exe, "succeed"), submit(exe, "succeed")
    old_bad, new_bad = submit(exe, "fail"), submit(exe, "fail")
    old_running = running_sleep(exe)
    for unit_id, state in ((old_ok, SUCCEEDED), (new_ok, SUCCEEDED), (old_bad, FAILED),
                           (new_bad, FAILED)):
        wait_state(exe, unit_id, {state})
    for unit_id in (old_ok, old_bad, old_running):
        make_old(exe, unit_id)

    # states and an age: both must hold
    out = work(exe, "release", "--failed", "--older-than", "1h")
    assert out.stdout.decode() == lines((old_bad, "released"))
    # an age alone: finished units only (the old Running one stays)
    out = work(exe, "release", "--older-than", "1h", "--dry-run")
    assert out.stdout.decode() == lines((old_ok, "would release"))
    out = work(exe, "release", "--older-than", "90m")
    assert out.stdout.decode() == lines((old_ok, "released"))
    assert units(exe) == {new_ok, new_bad, old_running}
    # --all with an age: any state
    out = work(exe, "release", "--all", "--older-than", "1h")
    assert out.stdout.decode() == lines((old_running, "released"))
    assert units(exe) == {new_ok, new_bad}
    # too young for three hours
    out = work(exe, "release", "--all", "--older-than", "3h")
    assert out.stdout == b""
    assert units(exe) == {new_ok, new_bad}


def test_remote_units_are_released_on_both_nodes(ctl: NodeProcess, exe: NodeProcess) -> None:
    bad = submit(ctl, "fail", on="executor01")
    ok = submit(ctl, "succeed", on="executor01")
    wait_state(ctl, bad, {FAILED})
    wait_state(ctl, ok, {SUCCEEDED})
    bad_remote, ok_remote = remote_id(ctl, bad), remote_id(ctl, ok)
    assert units(exe) == {bad_remote, ok_remote}

    out = work(ctl, "release", "--failed")
    assert out.stdout.decode() == lines((bad, "released"))
    assert units(ctl) == {ok}
    assert not unit_dir(ctl, bad).exists()
    # Workceptor.release released it on the remote node too, the succeeded one stays
    assert units(exe) == {ok_remote}
    assert not unit_dir(exe, bad_remote).exists()

    make_old(ctl, ok)
    late = submit(ctl, "succeed", on="executor01")
    wait_state(ctl, late, {SUCCEEDED})
    out = work(ctl, "release", "--older-than", "1h")
    assert out.stdout.decode() == lines((ok, "released"))
    assert units(ctl) == {late} and units(exe) == {remote_id(ctl, late)}
    # receptorctl 1.6.9's release still works beside it
    out = receptorctl(ctl, "work", "release", "--all")
    assert f"({late}, released)" in out.stdout.decode()
    assert units(ctl) == set() and units(exe) == set()


def test_errors_are_reported_and_force_releases(exe: NodeProcess) -> None:
    damaged, ok = submit(exe, "succeed"), submit(exe, "succeed")
    wait_state(exe, damaged, {SUCCEEDED})
    wait_state(exe, ok, {SUCCEEDED})
    (unit_dir(exe, damaged) / "status").write_bytes(b"not json\n")
    # an unreadable status is listed as Failed; releasing it needs --force
    out = work(exe, "release", "--failed", check=False)
    assert out.returncode == 1
    assert out.stdout == b""
    err = out.stderr.decode()
    assert err.startswith(f"ERROR: {damaged}: unit {damaged}: status file is invalid"), err
    assert units(exe) == {damaged, ok}
    # one unit's error does not stop the others
    out = work(exe, "release", "--failed", "--succeeded", check=False)
    assert out.returncode == 1
    assert out.stdout.decode() == lines((ok, "released"))
    assert f"ERROR: {damaged}: " in out.stderr.decode()
    out = work(exe, "release", "--failed", "--force")
    assert out.stdout.decode() == lines((damaged, "released"))
    assert units(exe) == set()


def test_control_protocol_forms_and_bad_input(exe: NodeProcess) -> None:
    bad, ok = submit(exe, "fail"), submit(exe, "succeed")
    wait_state(exe, bad, {FAILED})
    wait_state(exe, ok, {SUCCEEDED})
    refused = [
        ({"states": ["failed", "broken"]}, "unknown state 'broken'; give succeeded, failed, "
                                           "canceled, all"),
        ({"states": "failed"}, "states must be a list of state names"),
        ({"states": ["failed"], "olderthan": "an hour"}, "bad older-than: invalid duration "
                                                         "'an hour'"),
        ({"states": ["failed"], "olderthan": "-1h"}, "older-than '-1h' is negative"),
        ({"states": ["failed"], "older_than": "1h"}, "unknown key 'older_than'; the keys are "
                                                     "states, olderthan"),
        ({"states": ["failed"], "dryrun": "maybe"}, "dryrun must be true or false"),
        ({}, "work release-matching needs a selection: give one or more of the states"),
    ]
    with ControlClient(str(exe.socket), timeout=60) as client:
        for fields, message in refused:
            request = {"command": "work", "subcommand": "release-matching", **fields}
            with pytest.raises(ControlClientError) as info:
                client.command(json.dumps(request))
            assert message in str(info.value), (fields, str(info.value))
        for line, message in [("work release-matching failed soon", "unknown word 'soon'"),
                              ("work release-matching older-than=5", "bad older-than"),
                              ("work release-matching", "needs a selection")]:
            with pytest.raises(ControlClientError) as info:
                client.command(line)
            assert message in str(info.value), (line, str(info.value))
        # the same session (and the node) keeps serving
        assert set(client.command("work list")) == {bad, ok}
        assert client.command("work release-matching FAILED dry-run") == \
            {"would release": [bad]}
        assert client.command(json.dumps({
            "command": "work", "subcommand": "release-matching", "states": ["Succeeded"],
            "olderthan": "0s", "dryrun": True})) == {"would release": [ok]}
        assert client.command("work release-matching failed succeeded") == \
            {"errors": {}, "released": sorted([bad, ok])}
    assert units(exe) == set()


def test_cli_usage_errors(exe: NodeProcess) -> None:
    cases = [
        (("release", "AbCd1234", "--failed"), "give unit IDs or a selection"),
        (("release", "AbCd1234", "--dry-run"), "give unit IDs or a selection"),
        (("release", "--dry-run"), "--dry-run needs --all, --failed"),
        (("release", "--older-than", "soon"), "invalid duration 'soon'"),
        (("release", "--older-than", "-1h"), "not a positive duration"),
        (("release",), "give unit IDs or --all"),
    ]
    for args, text in cases:
        out = work(exe, *args, check=False)
        assert out.returncode == 2, (args, out)
        assert text in out.stderr.decode(), (args, out.stderr)
        assert b"Traceback" not in out.stderr


def test_remote_node_down_gives_release_pending(line: Mesh, ctl: NodeProcess,
                                                exe: NodeProcess) -> None:
    unit_id = submit(ctl, "succeed", on="executor01")
    wait_state(ctl, unit_id, {SUCCEEDED})
    remote = remote_id(ctl, unit_id)
    exe.stop()
    try:
        wait_until(lambda: "executor01" not in ctl.routes(), timeout=30,
                   what="executor01 gone from controller01's routes")
        out = work(ctl, "release", "--succeeded")
        assert out.stdout.decode() == lines((unit_id, "release pending"))
        assert status(ctl, unit_id)["Detail"].startswith("Release pending: ")
        # asked again (a reaper runs every minute), it is still pending, not an error
        out = work(ctl, "release", "--succeeded")
        assert out.stdout.decode() == lines((unit_id, "release pending"))
        # --force releases it here although its node is down
        out = work(ctl, "release", "--succeeded", "--force")
        assert out.stdout.decode() == lines((unit_id, "released"))
        assert units(ctl) == set()
    finally:
        exe.start()
        line.wait_converged()
    assert remote in units(exe)  # it never heard of the release: the fixture cleans it


def test_a_refused_remote_release_is_tried_again(ctl: NodeProcess, exe: NodeProcess) -> None:
    """A release the remote node refuses is an error each time it is asked, not a release
    that waits forever ("release pending" is only for a node that cannot be reached)."""
    unit_id = submit(ctl, "succeed", on="executor01")
    wait_state(ctl, unit_id, {SUCCEEDED})
    remote = remote_id(ctl, unit_id)
    (unit_dir(exe, remote) / "status").write_bytes(b"not json\n")  # the remote refuses
    for _ in range(2):
        out = work(ctl, "release", "--succeeded", check=False)
        assert out.returncode == 1 and out.stdout == b"", out
        assert f"ERROR: {unit_id}: error from remote: " in out.stderr.decode()
    out = work(ctl, "release", "--succeeded", "--force")
    assert out.stdout.decode() == lines((unit_id, "released"))
