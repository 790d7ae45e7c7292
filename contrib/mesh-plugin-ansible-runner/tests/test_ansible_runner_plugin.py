"""The ansible-runner work type: the AWX flow end to end, with the real ansible-runner.

    ansible-runner transmit DIR -p play.yml \\
      | receptorctl work submit --node node3 --payload - --follow ansible-runner \\
      | ansible-runner process OUT
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

import mesh_plugin_ansible_runner
from mesh.plugins import PluginHost
from mesh.testing import Mesh, WatchedUnit
from mesh.work.states import UnitState
from mesh.work.worktype import WorkError
from mesh_plugin_ansible_runner import AnsibleRunnerWorkType, WorkAnsibleRunnerConfig

BIN = Path(sys.executable).parent
PATH = f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
ANSIBLE_RUNNER = shutil.which("ansible-runner", path=PATH)
RECEPTORCTL = str(BIN / "receptorctl")

needs_ansible = pytest.mark.skipif(
    ANSIBLE_RUNNER is None or shutil.which("ansible-playbook", path=PATH) is None,
    reason="ansible-runner/ansible-playbook not installed "
           "(pip install 'mesh-plugin-ansible-runner[runner]')")

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hello
      debug:
        msg: "hello from the ansible-runner work type"
"""


def ansible_env(scratch: Path) -> dict[str, str]:
    """Keep ansible's home and temporary files in ``scratch``, and find the venv's executables."""
    home, tmp = scratch / "ansible-home", scratch / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return {"PATH": PATH, "ANSIBLE_HOME": str(home), "TMPDIR": str(tmp),
            "ANSIBLE_LOCAL_TEMP": str(tmp), "ANSIBLE_NOCOLOR": "1"}


def work_type(**config: object) -> AnsibleRunnerWorkType:
    return AnsibleRunnerWorkType(WorkAnsibleRunnerConfig(worktype="ansible-runner",
                                                         **config))  # type: ignore[arg-type]


# -- registration and the private data directory -----------------------------------------------


def test_registers_the_section(register_plugin: Callable[..., PluginHost]) -> None:
    host = register_plugin(mesh_plugin_ansible_runner)
    spec = host.work_types["work-ansible-runner"].spec
    config = spec.build("awx")
    assert config == WorkAnsibleRunnerConfig(worktype="awx", ansiblerunner="ansible-runner",
                                             privatedatadir="", cleanup=True)


def test_params_are_refused() -> None:
    with pytest.raises(WorkError, match="extra params provided but not allowed"):
        work_type().check_params({"params": "--help"})


def test_private_data_dir_is_per_unit(tmp_path: Path,
                                      unit_handle: Callable[..., WatchedUnit]) -> None:
    unit = unit_handle("ansible-runner")
    default = work_type().private_data_dir(unit)
    assert default == unit.store.root.parent / "ansible-runner" / "testnode" / unit.unit_id
    configured = work_type(privatedatadir=str(tmp_path / "pdd"))
    assert configured.private_data_dir(unit) == tmp_path / "pdd" / "testnode" / unit.unit_id


@pytest.mark.parametrize("cleanup", [True, False])
def test_release_removes_the_private_data_dir(cleanup: bool,
                                              unit_handle: Callable[..., WatchedUnit]) -> None:
    # `true` stands in for ansible-runner: the unit runs `true worker --private-data-dir DIR`
    wt = work_type(ansiblerunner="true", cleanup=cleanup)
    unit = unit_handle(wt)

    async def main() -> None:
        await wt.start(unit)
        status = await unit.final()
        assert (status.state, status.detail) == (UnitState.SUCCEEDED, "exit status 0")
        private = wt.private_data_dir(unit)
        assert private.is_dir()
        await wt.release(unit)
        assert private.exists() is not cleanup

    asyncio.run(main())


# -- end to end: the AWX flow through three real nodes -----------------------------------------


@needs_ansible
def test_awx_flow_through_the_mesh(mesh_cluster: Callable[..., Mesh], tmp_path: Path) -> None:
    cluster = mesh_cluster(
        3, sections={"node3": [{"work-ansible-runner": {"worktype": "ansible-runner"}}]},
        env={"node3": ansible_env(tmp_path / "executor")},
        plugins=["mesh-plugin-ansible-runner"])
    cluster.wait_until_work_types("node1", "node3", ["ansible-runner"])
    project = tmp_path / "pd" / "project"
    project.mkdir(parents=True)
    (project / "play.yml").write_text(PLAYBOOK)
    out_dir = tmp_path / "out"
    env = {**os.environ, **ansible_env(tmp_path / "controller")}

    transmit = subprocess.Popen([ANSIBLE_RUNNER, "transmit", str(tmp_path / "pd"), "-p",  # type: ignore[list-item]
                                 "play.yml"], stdout=subprocess.PIPE, env=env)
    work = subprocess.Popen([RECEPTORCTL, "--socket", str(cluster.nodes["node1"].socket),
                             "work", "submit", "--node", "node3", "--payload", "-", "--follow",
                             "ansible-runner"],
                            stdin=transmit.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    transmit.stdout.close()  # type: ignore[union-attr]
    process = subprocess.Popen([ANSIBLE_RUNNER, "process", str(out_dir)],  # type: ignore[list-item]
                               stdin=work.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env)
    work.stdout.close()  # type: ignore[union-attr]
    try:
        shown, _ = process.communicate(timeout=180)
        work_err = work.stderr.read()  # type: ignore[union-attr]
        assert transmit.wait(timeout=60) == 0
        assert work.wait(timeout=60) == 0, work_err
    finally:
        for proc in (transmit, work, process):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = shown.decode(errors="replace")
    assert process.returncode == 0, text
    assert (out_dir / "artifacts" / "status").read_text() == "successful", text
    assert '"msg": "hello from the ansible-runner work type"' in text
    events = [json.loads(p.read_text())
              for p in (out_dir / "artifacts" / "job_events").glob("*.json")]
    assert any(e.get("event") == "runner_on_ok" for e in events)

    # The unit ran in a private data dir of its own, which release removes.
    executor = cluster.nodes["node3"]
    [(unit_id, unit)] = executor.control("work list").items()
    assert (unit["WorkType"], unit["StateName"]) == ("ansible-runner", "Succeeded")
    private = executor.datadir / "ansible-runner" / "node3" / unit_id
    assert (private / "project" / "play.yml").read_text() == PLAYBOOK
    assert executor.control(f"work release {unit_id}") == {"released": unit_id}
    assert not private.exists()
