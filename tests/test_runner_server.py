"""The runner server: a node forks each ``work-command`` unit's runner from one warm process.

Real node processes (and, for the fallback, the work type driven in this process): many
concurrent units through one server, units that outlive a SIGKILL of the node's whole process
group while the server exits on its own, no zombies, no server left behind, and the fallback to a
runner started as a new interpreter when the server cannot start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
from structlog.testing import capture_logs

from mesh.testing import (ControlSession, Mesh, NodeProcess, kill_runners, make_unit,
                          session_members, wait_until)
from mesh.work.unitstore import UnitStore
from mesh_builtin.command import CommandWorkType, WorkCommandConfig
from mesh_builtin import runner_server
from mesh_builtin.runner_server import SERVER_MARKER, RunnerServer

WAIT = 30.0  # generous bound for anything that should take milliseconds


# -- processes -------------------------------------------------------------------------------


def proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, process group, session) from /proc, or None when gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3])


def alive(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is ``pid``."""
    found = []
    for name in os.listdir("/proc"):
        stat = proc_stat(int(name)) if name.isdigit() else None
        if stat is not None and stat[1] == pid:
            found.append((int(name), stat[0]))
    return found


def runner_servers(node: NodeProcess) -> list[int]:
    """Live runner servers started by ``node``'s process (its children with the server's
    command line; the runners they fork share it, but are the servers' children)."""
    assert node.proc is not None
    servers = []
    for pid, state in children(node.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if SERVER_MARKER in cmdline and state not in ("Z", "X"):
            servers.append(pid)
    return servers


# -- one node --------------------------------------------------------------------------------


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A fifo the ``gated`` work type reads before it finishes."""
    path = tmp_path / "gate"
    os.mkfifo(path)
    return path


@pytest.fixture
def node(tmp_path: Path, gate: Path) -> Iterator[NodeProcess]:
    cluster = Mesh(tmp_path / "mesh")
    worker = cluster.add("worker01", listen=False, sections=[
        {"work-command": {"worktype": "echo", "command": "sh", "params": "-c 'echo out-$0'",
                          "allowruntimeparams": True}},
        {"work-command": {"worktype": "gated", "command": "sh",
                          "params": f"-c 'echo started; cat {gate}; echo done'"}},
    ])
    try:
        cluster.start()
        yield worker
    finally:
        cluster.stop()
        kill_runners(tmp_path)
        cluster.cleanup()


def submit(node: NodeProcess, worktype: str, params: str | None = None) -> str:
    """Submit a unit without payload over the raw control socket; its unit ID."""
    request: dict[str, Any] = {"command": "work", "subcommand": "submit",
                               "node": "localhost", "worktype": worktype}
    if params is not None:
        request["params"] = params
    with ControlSession(node.socket, timeout=WAIT) as session:
        session.send_line(json.dumps(request))
        created = session.readline()
        assert created.startswith("Work unit created"), created
        session.sock.shutdown(socket.SHUT_WR)
        reply = session.reply()
    assert reply["result"] == "Job Started", reply
    return reply["unitid"]


def unit_dir(node: NodeProcess, unit_id: str) -> Path:
    return node.datadir / node.name / unit_id


def status_file(node: NodeProcess, unit_id: str) -> dict[str, Any]:
    """The unit's status as the runner writes it (read without asking the node)."""
    return json.loads((unit_dir(node, unit_id) / "status").read_text())


def wait_final(node: NodeProcess, unit_id: str) -> dict[str, Any]:
    return wait_until(lambda: (s := status_file(node, unit_id))["State"] in (2, 3, 4) and s,
                      timeout=WAIT, what=f"unit {unit_id} to finish")


# -- tests -----------------------------------------------------------------------------------


def test_concurrent_units_share_one_runner_server(node: NodeProcess) -> None:
    count = 24
    with ThreadPoolExecutor(8) as pool:
        unit_ids = list(pool.map(lambda i: submit(node, "echo", str(i)), range(count)))
    for i, unit_id in enumerate(unit_ids):
        status = wait_final(node, unit_id)
        assert (status["State"], status["Detail"]) == (2, "exit status 0"), status
        assert (unit_dir(node, unit_id) / "stdout").read_bytes() == f"out-{i}\n".encode()
    assert len(runner_servers(node)) == 1
    started = node.log_events("runner_started")
    assert len(started) == count and all(event["forked"] for event in started), started
    assert not node.log_events("runner_server_failed")


def test_unit_outlives_a_sigkill_of_the_node_process_group(node: NodeProcess,
                                                           gate: Path) -> None:
    unit_id = submit(node, "gated")
    status = wait_until(lambda: (s := status_file(node, unit_id))["State"] == 1 and s,
                        timeout=WAIT, what="the unit to run")
    runner = status["ExtraData"]["Pid"]
    [server] = runner_servers(node)
    assert node.proc is not None
    node_group = node.proc.pid
    assert proc_stat(runner)[1] == server  # type: ignore[index]  # forked by the server
    assert proc_stat(runner)[3] == runner  # type: ignore[index]  # in a session of its own

    os.killpg(node_group, signal.SIGKILL)
    node.proc.wait(WAIT)
    wait_until(lambda: not alive(server), timeout=WAIT,
               what="the runner server to exit after its node died")
    assert alive(runner) and status_file(node, unit_id)["State"] == 1

    with open(gate, "wb") as handle:
        handle.write(b"go\n")
    final = wait_final(node, unit_id)
    assert (final["State"], final["Detail"], final["ExtraData"]) == (2, "exit status 0", None)
    assert (unit_dir(node, unit_id) / "stdout").read_bytes() == b"started\ngo\ndone\n"
    wait_until(lambda: not alive(runner), timeout=WAIT, what="the runner to exit")


def test_the_server_reaps_its_runners(node: NodeProcess) -> None:
    unit_ids = [submit(node, "echo", str(i)) for i in range(3)]  # starts the server
    [server] = runner_servers(node)
    unit_ids += [submit(node, "echo", str(i)) for i in range(3, 20)]
    for unit_id in unit_ids:
        assert wait_final(node, unit_id)["State"] == 2
    wait_until(lambda: children(server) == [], timeout=WAIT,
               what=f"no children (zombies: {children(server)}) left in the runner server")
    assert runner_servers(node) == [server]


def test_no_runner_server_outlives_a_stopped_node(node: NodeProcess) -> None:
    unit_id = submit(node, "echo", "x")
    assert wait_final(node, unit_id)["State"] == 2
    [server] = runner_servers(node)
    assert node.stop() == 0
    assert not alive(server), "the runner server outlived its node"


def test_a_killed_server_is_replaced(node: NodeProcess) -> None:
    assert wait_final(node, submit(node, "echo", "a"))["State"] == 2
    [server] = runner_servers(node)
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: not alive(server), timeout=WAIT, what="the runner server to die")
    for word in ("b", "c", "d"):  # the first may start its runner the old way
        unit_id = submit(node, "echo", word)
        assert wait_final(node, unit_id)["State"] == 2
        assert (unit_dir(node, unit_id) / "stdout").read_bytes() == f"out-{word}\n".encode()
    [replacement] = runner_servers(node)
    assert replacement != server
    assert len(node.log_events("runner_server_failed")) <= 1


# -- fallback (the work type driven in this process) -----------------------------------------


@pytest.mark.parametrize("python", ["/nonexistent/python", "/bin/false"],
                         ids=["cannot-start", "exits-at-once"])
def test_units_fall_back_to_a_new_interpreter(python: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    broken = RunnerServer(python=python)
    monkeypatch.setattr(RunnerServer, "_shared", broken)
    monkeypatch.setattr(broken, "owner", os.getpid())
    store = UnitStore(tmp_path / "data", "node1")
    wt = CommandWorkType(WorkCommandConfig(worktype="t", command="sh", params="-c 'echo $$'"))

    async def main() -> list[tuple[int, bytes]]:
        done = []
        for _ in range(2):
            unit = make_unit(store, wt)
            await wt.start(unit)
            status = await unit.final(timeout=WAIT)
            done.append((status.state, unit.stdout))
        return done

    try:
        with capture_logs() as logs:
            done = asyncio.run(main())
    finally:
        broken.close()
        kill_runners(tmp_path)
    assert [state for state, _ in done] == [2, 2]
    assert all(stdout.strip().isdigit() for _, stdout in done)
    warnings = [e for e in logs if e["event"] == "runner_server_failed"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning", logs
    assert broken.failures == 2


def test_kill_runners_finds_forked_runners(tmp_path: Path) -> None:
    store = UnitStore(tmp_path / "data", "node1")
    wt = CommandWorkType(WorkCommandConfig(worktype="t", command="sleep", params="1000"))

    async def main() -> int:
        unit = make_unit(store, wt)
        await wt.start(unit)
        return unit.status().extra_data["Pid"]

    runner = asyncio.run(main())
    members = session_members(runner)
    try:
        assert SERVER_MARKER in Path(f"/proc/{runner}/cmdline").read_bytes(), "not forked"
        assert len(members) == 2  # the runner and its sleep
        assert set(kill_runners(tmp_path)) == set(members)
    finally:
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_until(lambda: not any(alive(pid) for pid in members), timeout=WAIT,
               what="the runner and its command to die")
    assert kill_runners(Path(tempfile.gettempdir()) / "no-such-dir") == []


def test_a_hung_server_is_killed_and_replaced(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    server = RunnerServer()
    monkeypatch.setattr(RunnerServer, "_shared", server)
    monkeypatch.setattr(runner_server, "REPLY_TIMEOUT", 0.5)
    store = UnitStore(tmp_path / "data", "node1")
    wt = CommandWorkType(WorkCommandConfig(worktype="t", command="sh", params="-c 'echo $$'"))
    # whether each runner was forked (the runner may be gone before /proc could tell)
    forks: list[bool] = []
    launch = wt.runner._launch

    async def recording_launch(*args: Any) -> Any:
        pid, proc, ready = await launch(*args)
        forks.append(proc is None)
        return pid, proc, ready

    monkeypatch.setattr(wt.runner, "_launch", recording_launch)

    async def one() -> tuple[int, bytes, bool]:
        unit = make_unit(store, wt)
        await wt.start(unit)
        status = await unit.final(timeout=WAIT)
        return status.state, unit.stdout, forks[-1]

    async def main() -> list[tuple[int, bytes, bool]]:
        done = [await one()]
        hung = server.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        done.append(await one())
        assert not alive(hung), "the hung server was not killed"
        done.append(await one())
        assert server.pid not in (None, hung)
        return done

    try:
        with capture_logs() as logs:
            done = asyncio.run(main())
    finally:
        server.close()
        kill_runners(tmp_path)
    assert [state for state, _, _ in done] == [2, 2, 2]
    assert [len(stdout.split()) for _, stdout, _ in done] == [1, 1, 1]  # one runner each
    assert [forked for _, _, forked in done] == [True, False, True]
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["runner_server_failed"]


def test_the_server_imports_only_what_it_needs() -> None:
    probe = ("import sys; from runner_server import _Server; "
             "print(' '.join(sorted(set(sys.modules) - set(sys.builtin_module_names))))")
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path.append({runner_server.SERVER_DIR!r}); {probe}"],
        capture_output=True, text=True, timeout=30, check=True)
    loaded = set(result.stdout.split())
    assert "runner_server" in loaded
    assert not loaded & {"asyncio", "json", "socket", "subprocess", "structlog", "mesh"}, loaded
