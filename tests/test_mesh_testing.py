"""mesh.testing itself: the polling helpers, plugin isolation of test nodes, leftover sessions."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest

import mesh
from mesh.testing import MESH_BIN, NodeProcess, kill_runners, wait_until, wait_until_async
from mesh.testing.processes import running_node_pids

ECHO_SECTION = {"work-echo": {"worktype": "echo"}}


# -- polling ------------------------------------------------------------------------------------


def test_wait_until_returns_the_first_truthy_value_and_names_the_last_error() -> None:
    calls: list[int] = []

    def third_time() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")
        return len(calls)

    assert wait_until(third_time, timeout=5, interval=0.001) == 3

    def never() -> bool:
        raise ValueError("not yet")

    with pytest.raises(TimeoutError, match=r"waiting for the moon \(last error: not yet\)"):
        wait_until(never, timeout=0.05, interval=0.01, what="the moon")


def test_wait_until_async_lets_the_loop_run() -> None:
    async def main() -> str:
        done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, done.set_result, "set")
        return await wait_until_async(lambda: done.done() and done.result(), timeout=5)

    assert asyncio.run(main()) == "set"
    with pytest.raises(TimeoutError, match="waiting for nothing"):
        asyncio.run(wait_until_async(lambda: False, timeout=0.05, what="nothing"))


def test_wait_for_event_counts_log_events_matching_values_or_predicates(mesh_dir: Path) -> None:
    node = NodeProcess("logger", mesh_dir)
    events = [{"event": "link_rejected", "peer": "a", "reason": "x"}, "not json",
              {"event": "link_rejected", "peer": "b"}, {"event": "other", "peer": "a"}]
    node.log_path.write_text("\n".join(e if isinstance(e, str) else json.dumps(e)
                                       for e in events) + "\n")
    assert node.log_events("link_rejected", peer="a") == [events[0]]
    assert node.log_events(peer=lambda p: p in ("a", "b")) == [events[0], events[2], events[3]]
    assert node.wait_for_event("link_rejected", count=2, timeout=5) == [events[0], events[2]]
    with pytest.raises(TimeoutError, match="3x link_rejected .* in logger's log"):
        node.wait_for_event("link_rejected", count=3, timeout=0.2)


# -- plugin isolation ---------------------------------------------------------------------------


def echo_installed() -> bool:
    try:
        importlib.metadata.distribution("mesh-plugin-echo")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_echo = pytest.mark.skipif(not echo_installed(),
                                reason="mesh-plugin-echo is not installed (make install)")


@needs_echo
def test_test_nodes_load_mesh_plugins_only(mesh_dir: Path) -> None:
    """An installed plugin stays invisible to a test node that does not ask for it."""
    node = NodeProcess("plain", mesh_dir / "plain", [ECHO_SECTION])
    try:
        node.start(wait=False)
        wait_until(lambda: not node.alive, what="plain to exit")
        assert node.proc is not None and node.proc.returncode != 0
        assert "which MESH_LOAD_PLUGINS does not list" in node.log_path.read_text()
    finally:
        node.stop()


@needs_echo
def test_a_test_node_loads_the_plugins_it_names(mesh_dir: Path) -> None:
    node = NodeProcess("echoing", mesh_dir / "echoing", [ECHO_SECTION],
                       plugins=("mesh-plugin-echo",))
    try:
        node.start()
        [ad] = [ad for ad in node.status()["Advertisements"] if ad["NodeID"] == "echoing"]
        assert {c["WorkType"] for c in ad["WorkCommands"]} == {"echo"}
    finally:
        node.stop()


class WrappedNode(NodeProcess):
    """A node run another way: through ``env``, which marks its environment and execs it."""

    def argv(self) -> list[str]:
        return ["env", "MESH_TEST_WRAPPED=1", *super().argv()]


def environ_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def test_a_node_run_another_way_keeps_the_plugin_selection_and_is_tracked(
        mesh_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_LOAD_PLUGINS", "mesh,mesh-plugin-echo")  # ambient: not for nodes
    node = WrappedNode("wrapped", mesh_dir / "wrapped")
    try:
        node.start()
        assert node.proc is not None
        env = environ_of(node.proc.pid)
        assert env["MESH_TEST_WRAPPED"] == "1", "argv() was not used"
        assert env["MESH_LOAD_PLUGINS"] == "mesh"
        assert node.proc.pid in running_node_pids()
        assert node.proc.pid not in kill_runners(mesh_dir)
        assert node.alive
    finally:
        node.stop()


def test_node_environment_selects_plugins(mesh_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_LOAD_PLUGINS", "mesh")
    def env(**kwargs: Any) -> dict[str, str]:
        return NodeProcess("n", mesh_dir, **kwargs).environment()

    assert env()["MESH_LOAD_PLUGINS"] == "mesh"
    assert env(plugins=("mesh-plugin-echo",))["MESH_LOAD_PLUGINS"] == "mesh,mesh-plugin-echo"
    assert "MESH_LOAD_PLUGINS" not in env(plugins=None), "None must load every plugin"
    assert env(plugins=None, env={"MESH_LOAD_PLUGINS": "tcp"})["MESH_LOAD_PLUGINS"] == "tcp"
    assert env(env={"MESH_LOG_FORMAT": "console"})["MESH_LOG_FORMAT"] == "console"


@needs_echo
def test_every_subprocess_of_the_session_sees_mesh_plugins_only(mesh_dir: Path) -> None:
    """tests/conftest.py selects mesh's own plugins for the session: a raw ``mesh`` command
    started with the inherited environment lists no other installed plugin."""
    result = subprocess.run([*MESH_BIN, "plugins", "--json"], capture_output=True, text=True,
                            timeout=120, cwd=mesh_dir)
    assert result.returncode == 0, result.stderr
    assert {p["distribution"] for p in json.loads(result.stdout)} == {mesh.DISTRIBUTION}


# -- leftover sessions --------------------------------------------------------------------------


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


def sleeper(started: list[subprocess.Popen[bytes]], cwd: Path) -> subprocess.Popen[bytes]:
    """A session leader with an ordinary name, working in ``cwd``."""
    proc = subprocess.Popen(["sleep", "1000"], cwd=cwd, start_new_session=True)
    started.append(proc)
    return proc


def test_kill_runners_finds_sessions_by_where_they_work(tmp_path: Path,
                                                        sleepers: list[subprocess.Popen[bytes]]
                                                        ) -> None:
    (tmp_path / "units").mkdir()
    (tmp_path / "elsewhere").mkdir()
    inside = sleeper(sleepers, tmp_path / "units")
    outside = sleeper(sleepers, tmp_path / "elsewhere")
    assert kill_runners(tmp_path / "units") == [inside.pid]
    assert inside.wait(timeout=30) == -signal.SIGKILL
    assert outside.poll() is None


def test_kill_runners_spares_the_nodes_it_started(mesh_dir: Path) -> None:
    node = NodeProcess("spared", mesh_dir / "spared")
    try:
        node.start()
        assert node.proc is not None and os.getsid(node.proc.pid) == node.proc.pid
        assert node.proc.pid not in kill_runners(mesh_dir)
        assert node.alive
    finally:
        node.stop()
