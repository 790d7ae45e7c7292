"""The builtin ``container`` work type: podman with runc, real containers, no registry.

Pure tests (config, the argv builder) always run.  The others need podman and runc (they skip with
the reason otherwise) and build their images locally (see ``container_image.py``): each test drives
the WorkType API directly, like test_command_worktype.py, and the last group goes end to end through
a real node process and its control socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from receptorctl.socket_interface import ReceptorControl

from container_image import (
    BUSYBOX_IMAGE,
    HOST_PYTHON_IMAGE,
    ImageUnavailable,
    Scratch,
    build_busybox_image,
    build_host_python_image,
    podman_missing,
)
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.plugins import make_plugin_manager
from mesh.testing import Mesh, NodeProcess, WatchedUnit, make_unit, wait_until, wait_until_async
from mesh.work.states import UnitState
from mesh.work.stdout_digest import Digest
from mesh.work.unitstore import UnitStatus, UnitStore
from mesh.work.worktype import UnitHandle, WorkError
from mesh_builtin import container as container_plugin
from mesh_builtin.container import (
    ContainerWorkType,
    WorkContainerConfig,
    container_name,
    podman_argv,
)
from test_command_worktype import alive, settle

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- config, names and the argv builder (no podman needed) ---------------------------------


def config(**kwargs: Any) -> WorkContainerConfig:
    values = {"worktype": "test", "image": BUSYBOX_IMAGE, **kwargs}
    return SectionSpec("work-container", WorkContainerConfig).build(values)  # type: ignore


def test_config_section_defaults_and_coercion() -> None:
    cfg = config(command="sh -c 'exit 3'", env={"A": "1"}, mounts="/src:/dst",
                 cpus="0.5", pids="64", allowruntimeparams="yes")
    assert cfg.command_args() == ["sh", "-c", "exit 3"]
    assert cfg.mounts == ["/src:/dst"] and cfg.env == {"A": "1"}
    assert (cfg.cpus, cfg.pids, cfg.allowruntimeparams) == (0.5, 64, True)
    assert (cfg.network, cfg.pull, cfg.runtime, cfg.podman) == ("none", "never", "runc", "podman")
    assert cfg.ulimits == ["nofile=20000:20000", "nproc=32768:32768"]
    assert config(command=["sh", "-c", "exit 3"]).command_args() == ["sh", "-c", "exit 3"]
    assert config().command_args() == []


@pytest.mark.parametrize(("values", "key", "message"), [
    ({"image": ""}, "image", "must not be empty"),
    ({"image": "--privileged"}, "image", "must not start with '-'"),
    ({"pull": "sometimes"}, "pull", "must be one of never, missing, always, newer"),
    ({"memory": "lots"}, "memory", "expected a size such as 256m"),
    ({"cpus": 0}, "cpus", "must be greater than 0"),
    ({"pids": 0}, "pids", "or -1 for no limit"),
    ({"mounts": ["relative:/dst"]}, "mounts", "must be absolute paths"),
    ({"mounts": ["/a:/b:rx"]}, "mounts", "mode must be 'ro' or 'rw'"),
    ({"mounts": ["/a"]}, "mounts", "is not SRC:DST"),
    ({"ulimits": ["nofile"]}, "ulimits", "expected name=soft[:hard]"),
    ({"params": "'open"}, "params", "No closing quotation"),
    ({"command": "sh -c 'open"}, "command", "No closing quotation"),
    ({"env": {"A=B": "x"}}, "env", "without '='"),
])
def test_config_errors_name_the_key(values: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(SectionValueError) as info:
        config(**values)
    assert info.value.key == key and message in str(info.value), str(info.value)


def test_argv_for_a_sample_config() -> None:
    cfg = config(command=["sh", "-c"], params="'echo $A'", env={"A": "1", "B": "two words"},
                 mounts=["/srv/in:/in", "/srv/out:/out:rw"], memory="256m", cpus=1.5, pids=100,
                 runtimeoptions=["--root", "/s/root", "--runroot", "/s/run"],
                 runoptions=["--user", "1000"], allowruntimeparams=True)
    # a unit's args: the configured params plus the submitter's, split like a shell
    args = shlex.split(ContainerWorkType(cfg).full_params({"params": "'extra arg'"}))
    argv = podman_argv(cfg, name="mesh-node1-abc", args=args,
                       labels={"mesh.unit": "abc", "mesh.node": "node1"})
    assert argv == [
        "podman", "--root", "/s/root", "--runroot", "/s/run", "run", "--interactive",
        "--name", "mesh-node1-abc", "--pull=never", "--network=none", "--log-driver=passthrough",
        "--detach-keys=", "--runtime", "runc",
        "--label", "mesh.node=node1", "--label", "mesh.unit=abc",
        "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
        "--env", "A=1", "--env", "B=two words",
        "--volume", "/srv/in:/in:ro", "--volume", "/srv/out:/out:rw",
        "--memory", "256m", "--cpus", "1.5", "--pids-limit", "100",
        "--user", "1000",
        BUSYBOX_IMAGE, "sh", "-c", "echo $A", "extra arg"]
    assert "--rm" not in argv


def test_container_names() -> None:
    assert container_name("node1", "AbC123xy") == "mesh-node1-AbC123xy"
    odd = container_name("host:one/two", "u1")
    assert odd.startswith("mesh-host_one_two-") and odd.endswith("-u1")
    assert odd != container_name("host_one_two", "u1")


def test_runtime_params_refused_unless_allowed() -> None:
    wt = ContainerWorkType(config(params="base"))
    assert wt.check_params({}) == {"Pid": 0, "Params": "base"}
    with pytest.raises(WorkError) as info:
        wt.check_params({"params": "more"})
    assert str(info.value) == "extra params provided but not allowed"
    allowed = ContainerWorkType(config(params="base", allowruntimeparams=True))
    assert allowed.check_params({"params": "'two words'"}) == {"Pid": 0,
                                                               "Params": "base 'two words'"}


def test_plugin_registers_work_container() -> None:
    host = make_plugin_manager(entry_points=False, extra=[("container", container_plugin)])
    registered = host.work_types["work-container"]
    assert registered.spec.schema is WorkContainerConfig and registered.spec.doc
    assert all(key.doc for key in registered.spec.keys)
    wt = registered.factory(config(verifysignature=True), None)
    assert isinstance(wt, ContainerWorkType) and (wt.name, wt.verify_signature) == ("test", True)
    assert 'container = "mesh_builtin.container"' in (ROOT / "pyproject.toml").read_text()


# -- podman ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman() -> Iterator[Scratch]:
    """A scratch podman with localhost/busybox:test; CONTAINERS_CONF is set for runners."""
    reason = podman_missing()
    if reason:
        pytest.skip(reason)
    scratch = Scratch.create()
    saved = os.environ.get("CONTAINERS_CONF")
    os.environ["CONTAINERS_CONF"] = str(scratch.conf)
    try:
        try:
            build_busybox_image(scratch)
        except ImageUnavailable as exc:
            pytest.skip(f"cannot build {BUSYBOX_IMAGE}: {exc}")
        yield scratch
    finally:
        if saved is None:
            os.environ.pop("CONTAINERS_CONF", None)
        else:
            os.environ["CONTAINERS_CONF"] = saved
        scratch.destroy()


@pytest.fixture
def store(tmp_path: Path) -> UnitStore:
    return UnitStore(tmp_path / "data", "node1")


@pytest.fixture
def leftovers(podman: Scratch, tmp_path: Path) -> Iterator[list[int]]:
    """After each test: kill listed pids and runners under tmp_path, remove node1's containers."""
    pids: list[int] = []
    yield pids
    marker = os.fsencode(str(tmp_path))
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"command_runner" in cmdline and marker in cmdline:
                pids.append(int(name))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    names = [name for name in podman.containers() if name.startswith("mesh-node1-")]
    if names:
        podman.podman("rm", "--force", "--time", "0", *names, check=False)


def busybox(podman: Scratch, **kwargs: Any) -> ContainerWorkType:
    return ContainerWorkType(config(runtimeoptions=podman.global_args, **kwargs))


def name_of(unit: UnitHandle) -> str:
    return container_name(unit.store.root.name, unit.unit_id)


async def run_unit(wt: ContainerWorkType, store: UnitStore, stdin: bytes = b"",
                   params: dict[str, str] | None = None) -> tuple[UnitHandle, UnitStatus]:
    unit = make_unit(store, wt, stdin=stdin, params=params)
    await wt.start(unit)
    final = await unit.final(timeout=WAIT)
    await settle(wt, unit)
    return unit, final


def gone(podman: Scratch, name: str) -> bool:
    return name not in podman.containers()


def test_cat_echoes_5mb_binary_payload_byte_exact(podman: Scratch, store: UnitStore,
                                                  leftovers: list[int]) -> None:
    payload = bytes(range(256)) * 64 + os.urandom(5 * 1024 * 1024) + b"\x10\x11"  # ^P^Q too
    wt = busybox(podman, command="cat")
    unit, status = run(run_unit(wt, store, payload))
    assert status == UnitStatus(UnitState.SUCCEEDED, "exit status 0", len(payload), "test", None,
                                Digest(len(payload), hashlib.sha256(payload).hexdigest()))
    assert unit.stdout_path.read_bytes() == payload
    wait_until(lambda: gone(podman, name_of(unit)), what="the finished container to be removed",
               timeout=WAIT)


def test_exit_code_becomes_the_detail(podman: Scratch, store: UnitStore,
                                      leftovers: list[int]) -> None:
    wt = busybox(podman, command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    unit, status = run(run_unit(wt, store))
    assert (status.state, status.detail, status.extra_data) == (UnitState.FAILED,
                                                                "exit status 3", None)
    assert unit.stdout_path.read_bytes() == b"out\nerr\n"


def test_network_none_env_and_runtime_params(podman: Scratch, store: UnitStore,
                                             leftovers: list[int]) -> None:
    wt = busybox(podman, command=["sh", "-c", 'ls /sys/class/net; echo "A=$A"; echo "$@"', "sh"],
                 env={"A": "a value"}, allowruntimeparams=True)
    unit, status = run(run_unit(wt, store, params={"params": "'two  words' three"}))
    assert status.detail == "exit status 0"
    assert unit.stdout_path.read_bytes() == b"lo\nA=a value\ntwo  words three\n"


def test_mounts_are_read_only_unless_rw(podman: Scratch, store: UnitStore, tmp_path: Path,
                                        leftovers: list[int]) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "in").write_text("from the host\n")
    script = "cat /ro/in; echo x > /rw/out && echo rw-ok; echo x > /ro/out && echo ro-ok; exit 0"
    wt = busybox(podman, command=["sh", "-c", script], mounts=[f"{ro}:/ro", f"{rw}:/rw:rw"])
    unit, status = run(run_unit(wt, store))
    out = unit.stdout_path.read_text()
    assert status.detail == "exit status 0"
    assert out.startswith("from the host\nrw-ok\n") and "Read-only file system" in out, out
    assert "ro-ok" not in out
    assert (rw / "out").read_text() == "x\n" and not (ro / "out").exists()


def test_memory_and_pids_limits_apply(podman: Scratch, store: UnitStore,
                                      leftovers: list[int]) -> None:
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
              "cat /sys/fs/cgroup/memory.max; "
              "i=0; while [ $i -lt 20 ]; do sleep 5 & i=$((i+1)); done; echo forked-all")
    wt = busybox(podman, command=["sh", "-c", script], memory="64m", pids=8)
    unit, status = run(run_unit(wt, store))
    out = unit.stdout_path.read_text()
    assert out.startswith(f"{64 * 1024 * 1024}\n"), out
    assert "can't fork" in out and "forked-all" not in out, out
    assert status.state == UnitState.FAILED


def test_missing_image_fails_at_once(podman: Scratch, store: UnitStore,
                                     leftovers: list[int]) -> None:
    wt = busybox(podman, command="true", image="localhost/no-such-image:1")

    async def main() -> tuple[UnitStatus, float]:
        unit = make_unit(store, wt)
        started = time.monotonic()
        await wt.start(unit)
        return unit.status(), time.monotonic() - started

    status, took = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail == ("Error: image localhost/no-such-image:1 is not in podman's local "
                             "storage and pull is 'never': build, load or pull it on this node "
                             "first")
    assert took < 5 and podman.containers() == {}


def test_other_podman_errors_end_as_exit_status_125(podman: Scratch, store: UnitStore,
                                                    leftovers: list[int]) -> None:
    wt = busybox(podman, command="true", network="no-such-network")
    unit, status = run(run_unit(wt, store))
    assert (status.state, status.detail) == (UnitState.FAILED, "exit status 125")
    assert "Error: unable to find network" in unit.stdout_path.read_text()
    wait_until(lambda: gone(podman, name_of(unit)), what="the failed container to be removed",
               timeout=WAIT)


def test_missing_mount_source_fails_at_start(podman: Scratch, store: UnitStore,
                                             tmp_path: Path, leftovers: list[int]) -> None:
    wt = busybox(podman, command="true", mounts=[f"{tmp_path}/absent:/x"])

    async def main() -> UnitStatus:
        unit = make_unit(store, wt)
        await wt.start(unit)
        return unit.status()

    status = run(main())
    assert (status.state, status.detail) == (
        UnitState.FAILED, f"Error: mount source {tmp_path}/absent does not exist on this node "
                          f"(mounts: '{tmp_path}/absent:/x')")


def test_cancel_removes_the_container(podman: Scratch, store: UnitStore,
                                      leftovers: list[int]) -> None:
    wt = busybox(podman, command="sleep 1000")

    async def main() -> tuple[UnitHandle, UnitStatus, float]:
        unit = make_unit(store, wt)
        await wt.start(unit)
        running = unit.status()
        assert running.state == UnitState.RUNNING, running
        argv = shlex.split(running.extra_data["Params"])
        assert argv[argv.index("--name") + 1] == name_of(unit)
        await wait_until_async(
            lambda: podman.containers().get(name_of(unit), "").startswith("Up"),
            what="the container to run", timeout=WAIT)
        started = time.monotonic()
        await wt.cancel(unit)
        took = time.monotonic() - started
        assert unit.status() == running  # the runner wrote nothing: the kernel records Canceled
        unit.update(lambda s: setattr(s, "state", UnitState.CANCELED))
        await wt.cancel(unit)  # again: nothing left, must not hang
        return unit, running, took

    unit, running, took = run(main())
    assert gone(podman, name_of(unit))
    assert not alive(running.extra_data["Pid"])
    assert took < 5, f"cancel took {took:.1f}s"


# -- the node goes away ------------------------------------------------------------------

NODE = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from mesh.config.schema import SectionSpec
    from mesh.work.unitstore import UnitStore
    from mesh.work.worktype import UnitHandle
    from mesh_builtin.container import ContainerWorkType, WorkContainerConfig

    async def main():
        store = UnitStore(Path(sys.argv[1]), "node1")
        cfg = SectionSpec("work-container", WorkContainerConfig).build(json.loads(sys.argv[2]))
        wt = ContainerWorkType(cfg)
        unit_id = store.create("test", wt.check_params({}))
        (store.path(unit_id) / "stdin").write_bytes(b"")
        await wt.start(UnitHandle(unit_id, store, {}))
        print("UNIT", unit_id, store.read(unit_id).extra_data["Pid"], flush=True)
        await asyncio.Event().wait()  # a node that runs until it is killed

    asyncio.run(main())
""")


def gated(podman: Scratch, gate_dir: Path, then: str) -> dict[str, Any]:
    os.mkfifo(gate_dir / "gate")
    return {"worktype": "test", "image": BUSYBOX_IMAGE, "runtimeoptions": podman.global_args,
            "mounts": [f"{gate_dir}:/gate"], "command": ["sh", "-c", f"cat /gate/gate; {then}"]}


def start_node_then_kill_it(store: UnitStore, values: dict[str, Any],
                            leftovers: list[int]) -> tuple[str, int]:
    node = subprocess.Popen([sys.executable, "-c", NODE, str(store.root.parent),
                             json.dumps(values)], stdout=subprocess.PIPE, text=True)
    leftovers.append(node.pid)
    assert node.stdout is not None
    for line in node.stdout:
        if line.startswith("UNIT "):
            break
    else:
        raise AssertionError(f"node process failed (exit {node.wait(WAIT)})")
    _, unit_id, runner = line.split()
    node.kill()
    node.wait(WAIT)
    return unit_id, int(runner)


def test_restart_reattaches_and_the_unit_succeeds(podman: Scratch, store: UnitStore,
                                                  tmp_path: Path, leftovers: list[int]) -> None:
    values = gated(podman, tmp_path, "echo done")
    unit_id, runner = start_node_then_kill_it(store, values, leftovers)
    assert alive(runner) and store.read(unit_id).state == UnitState.RUNNING

    async def main() -> UnitStatus:
        wt = busybox(podman)  # the restarted node's work type
        unit = WatchedUnit(unit_id, store)
        await wt.restart(unit)
        assert wt.runner.is_watched(unit_id), "restart did not re-attach"
        with open(tmp_path / "gate", "wb") as gate:
            gate.write(b"go\n")
        final = await unit.final(timeout=WAIT)
        await settle(wt, unit)
        return final

    status = run(main())
    assert (status.state, status.detail) == (UnitState.SUCCEEDED, "exit status 0")
    assert (store.path(unit_id) / "stdout").read_bytes() == b"go\ndone\n"
    wait_until(lambda: gone(podman, container_name("node1", unit_id)),
               what="the container to be removed", timeout=WAIT)


def test_unit_finished_while_node_down_is_released(podman: Scratch, store: UnitStore,
                                                   tmp_path: Path,
                                                   leftovers: list[int]) -> None:
    values = gated(podman, tmp_path, "echo done")
    unit_id, runner = start_node_then_kill_it(store, values, leftovers)
    with open(tmp_path / "gate", "wb") as gate:
        gate.write(b"go\n")
    wait_until(lambda: store.read(unit_id).state == UnitState.SUCCEEDED,
               what="the orphaned unit", timeout=WAIT)
    name = container_name("node1", unit_id)
    assert podman.containers()[name].startswith("Exited (0)")  # nobody removed it yet

    run(busybox(podman).release(UnitHandle(unit_id, store, {})))
    assert gone(podman, name)


def test_restart_fails_the_unit_when_the_runner_is_gone(podman: Scratch, store: UnitStore,
                                                        tmp_path: Path,
                                                        leftovers: list[int]) -> None:
    values = gated(podman, tmp_path, "echo done")
    unit_id, runner = start_node_then_kill_it(store, values, leftovers)
    name = container_name("node1", unit_id)
    wait_until(lambda: podman.containers().get(name, "").startswith("Up"),
               what="the container", timeout=WAIT)
    os.kill(runner, signal.SIGKILL)  # dies "while the node is down"; the container runs on
    wait_until(lambda: not alive(runner), what="the runner to die", timeout=WAIT)

    async def main() -> UnitStatus:
        unit = WatchedUnit(unit_id, store)
        await busybox(podman).restart(unit)
        assert unit.seen, "restart did not notify"
        return store.read(unit_id)

    status = run(main())
    assert status.state == UnitState.FAILED
    assert status.detail == (f"Failed to restart: runner process {runner} is gone "
                             "(node restarted while the unit ran)")
    assert gone(podman, name)


# -- end to end through a node process ---------------------------------------------------


@pytest.fixture(scope="module")
def node(podman: Scratch) -> Iterator[NodeProcess]:
    venv, base = sys.prefix, sys.base_prefix
    python_mounts: list[str] = []  # the host's /usr and Python installation, read-only
    for path in ("/usr", base, venv):
        if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in python_mounts):
            python_mounts.append(path)
    common = {"runtimeoptions": podman.global_args}
    sections = [
        {"work-container": {"worktype": "bb-cat", "image": BUSYBOX_IMAGE, "command": "cat",
                            **common}},
        {"work-container": {"worktype": "bb-sh", "image": BUSYBOX_IMAGE,
                            "command": ["sh", "-c"], "allowruntimeparams": True, **common}},
        {"work-container": {"worktype": "bb-missing", "image": "localhost/no-such-image:1",
                            **common}},
        {"work-container": {
            "worktype": "ansible-worker", "image": HOST_PYTHON_IMAGE,
            "command": [f"{venv}/bin/ansible-runner", "worker"],
            "mounts": [f"{path}:{path}" for path in python_mounts],
            "env": {"PATH": f"{venv}/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
                    "ANSIBLE_HOME": "/tmp/ansible", "LANG": "C.UTF-8"}, **common}},
    ]
    build_host_python_image(podman)
    mesh = Mesh(Path(tempfile.mkdtemp(prefix="mesh-ct-")))
    node = mesh.add("ctnode", listen=False, sections=sections, env=podman.env)
    node.log_level = "info"
    try:
        mesh.start()
        yield node
    finally:
        mesh.cleanup()


def submit(node: NodeProcess, worktype: str, payload: bytes = b"",
           params: dict[str, str] | None = None) -> str:
    reply = ReceptorControl(str(node.socket)).submit_work(worktype, payload, params=params)
    assert reply["result"] == "Job Started", reply
    return reply["unitid"]


def results(node: NodeProcess, unit_id: str) -> bytes:
    sockfile = ReceptorControl(str(node.socket)).get_work_results(unit_id)
    try:
        return sockfile.read()
    finally:
        sockfile.close()


def status(node: NodeProcess, unit_id: str) -> dict[str, Any]:
    return node.control(f"work status {unit_id}")


def test_node_advertises_the_container_work_types(node: NodeProcess) -> None:
    def commands() -> set[str]:
        for ad in node.status()["Advertisements"]:
            if ad["NodeID"] == node.name:
                return {c["WorkType"] for c in ad.get("WorkCommands") or []}
        return set()

    wait_until(lambda: {"bb-cat", "bb-sh", "bb-missing", "ansible-worker"} <= commands(),
               timeout=WAIT, what="the advertised work types")


def test_node_runs_cat_byte_exact_then_releases(node: NodeProcess, podman: Scratch) -> None:
    payload = os.urandom(5 * 1024 * 1024)
    unit_id = submit(node, "bb-cat", payload)
    assert results(node, unit_id) == payload
    final = status(node, unit_id)
    assert (final["StateName"], final["Detail"], final["StdoutSize"]) == (
        "Succeeded", "exit status 0", len(payload))
    assert node.control(f"work release {unit_id}") == {"released": unit_id}
    wait_until(lambda: gone(podman, container_name(node.name, unit_id)), what="removal",
               timeout=WAIT)


def test_node_reports_exit_status_and_refuses_bad_submits(node: NodeProcess) -> None:
    unit_id = submit(node, "bb-sh", params={"params": "'echo failing; exit 3'"})
    assert results(node, unit_id) == b"failing\n"
    final = status(node, unit_id)
    assert (final["StateName"], final["Detail"]) == ("Failed", "exit status 3")
    with pytest.raises(RuntimeError, match="extra params provided but not allowed"):
        submit(node, "bb-cat", params={"params": "x"})
    missing = submit(node, "bb-missing")
    detail = status(node, missing)["Detail"]
    assert detail.startswith("Error: image localhost/no-such-image:1 is not in podman's local"), \
        detail
    for uid in (unit_id, missing):
        node.control(f"work release {uid}")


def test_node_cancel_removes_the_container(node: NodeProcess, podman: Scratch) -> None:
    unit_id = submit(node, "bb-sh", params={"params": "'sleep 1000'"})
    name = container_name(node.name, unit_id)
    wait_until(lambda: podman.containers().get(name, "").startswith("Up"),
               what="the container", timeout=WAIT)
    assert node.control(f"work cancel {unit_id}") == {"cancelled": unit_id}
    assert status(node, unit_id)["StateName"] == "Canceled"
    assert gone(podman, name)
    node.control(f"work release {unit_id}")


def test_start_latency(node: NodeProcess, podman: Scratch, capsys: Any) -> None:
    """Through the control socket: submit (returns once Running), then until Succeeded, for
    `true`; figures are printed."""
    started_ms, done_ms, release_ms = [], [], []
    for _ in range(5):
        t0 = time.monotonic()
        unit_id = submit(node, "bb-sh", params={"params": "true"})
        t1 = time.monotonic()
        wait_until(lambda: status(node, unit_id)["State"] == UnitState.SUCCEEDED,
                   timeout=WAIT, interval=0.005, what="the unit to succeed")
        t2 = time.monotonic()
        node.control(f"work release {unit_id}")
        t3 = time.monotonic()
        started_ms.append((t1 - t0) * 1000)
        done_ms.append((t2 - t0) * 1000)
        release_ms.append((t3 - t2) * 1000)
    with capsys.disabled():
        print(f"\ncontainer unit (`true`, ms, min/median/max of 5): "
              f"submit->Job Started {fmt(started_ms)}; submit->Succeeded {fmt(done_ms)}; "
              f"release {fmt(release_ms)}")
    assert min(done_ms) < 5000


def fmt(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{ordered[0]:.0f}/{ordered[len(ordered) // 2]:.0f}/{ordered[-1]:.0f}"


def test_awx_ansible_runner_worker_in_a_container(node: NodeProcess, podman: Scratch,
                                                  tmp_path: Path) -> None:
    """AWX's flow: ansible-runner transmit | container unit (ansible-runner worker) | process."""
    runner = Path(sys.prefix) / "bin" / "ansible-runner"
    if not runner.exists() or not (Path(sys.prefix) / "bin" / "ansible-playbook").exists():
        pytest.skip("ansible-runner and ansible-core are not installed in the test virtualenv "
                    "(pip install ansible-runner ansible-core)")
    project = tmp_path / "job" / "project"
    project.mkdir(parents=True)
    (project / "play.yml").write_text(textwrap.dedent("""
        - hosts: localhost
          connection: local
          gather_facts: false
          tasks:
            - debug: msg="hello from a container work unit"
    """))
    env = {**os.environ, "ANSIBLE_HOME": str(tmp_path / "ansible"), "TMPDIR": str(tmp_path)}
    transmit = subprocess.run([str(runner), "transmit", str(tmp_path / "job"), "-p", "play.yml"],
                              capture_output=True, env=env, timeout=120, check=True).stdout
    unit_id = submit(node, "ansible-worker", transmit)
    stream = results(node, unit_id)
    final = status(node, unit_id)
    assert (final["StateName"], final["Detail"]) == ("Succeeded", "exit status 0"), \
        stream[-2000:]
    assert stream.rstrip().endswith(b'{"eof": true}')
    processed = subprocess.run([str(runner), "process", str(tmp_path / "out")], input=stream,
                               capture_output=True, env=env, timeout=120)
    assert processed.returncode == 0, processed.stderr
    assert b"hello from a container work unit" in processed.stdout
    node.control(f"work release {unit_id}")
