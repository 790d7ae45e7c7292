"""The AWX flow through the mesh, with the real ansible-runner on both ends:

    ansible-runner transmit DIR -p play.yml \\
      | mesh work submit --node executor01 --payload - --follow ansible-runner-worker \\
      | ansible-runner process OUT

The transmit stream and the worker's reply (JSON lines, then a base64 zip without a trailing
newline, then ``{"eof": true}``) must pass byte-exact through controller01 - relayer01 -
executor01.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh
from work_helpers import BIN, MESH, RECEPTORCTL, running_line

PATH = f"{BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}"
ANSIBLE_RUNNER = shutil.which("ansible-runner", path=PATH)

pytestmark = pytest.mark.skipif(
    ANSIBLE_RUNNER is None or shutil.which("ansible-playbook", path=PATH) is None,
    reason="ansible-runner/ansible-playbook not installed (pip install ansible-runner "
           "ansible-core; they are in the test extra)")

PLAYBOOK = """\
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: say hello
      debug:
        msg: "hello through the mesh"
"""


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mesh-awx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def ansible_env(scratch: Path, who: str) -> dict[str, str]:
    home, tmp = scratch / who / "ansible-home", scratch / who / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return {"PATH": PATH, "ANSIBLE_HOME": str(home), "TMPDIR": str(tmp),
            "ANSIBLE_LOCAL_TEMP": str(tmp), "ANSIBLE_NOCOLOR": "1"}


@pytest.fixture(scope="module")
def line(scratch: Path) -> Iterator[Mesh]:
    with running_line(
        "mesh-wawx-",
        executor_sections=[{"work-command": {"worktype": "ansible-runner-worker",
                                             "command": "ansible-runner",
                                             "params": "worker"}}],
        executor_env=ansible_env(scratch, "executor")) as cluster:
        yield cluster


@pytest.fixture
def private_data_dir(tmp_path: Path) -> Path:
    project = tmp_path / "pd" / "project"
    project.mkdir(parents=True)
    (project / "play.yml").write_text(PLAYBOOK)
    return tmp_path / "pd"


SUBMITTERS = {
    "mesh": [*MESH, "work", "submit", "--node", "executor01", "--payload", "-", "--follow",
             "ansible-runner-worker"],
    "receptorctl": [RECEPTORCTL, "work", "submit", "--node", "executor01", "--payload", "-",
                    "--follow", "ansible-runner-worker"],
}


@pytest.mark.parametrize("cli", sorted(SUBMITTERS))
def test_ansible_runner_through_the_mesh(line: Mesh, scratch: Path, private_data_dir: Path,
                                         tmp_path: Path, cli: str) -> None:
    ctl = line.nodes["controller01"]
    out_dir = tmp_path / "out"
    env = {**os.environ, **ansible_env(scratch, "controller"), "MESH_SOCKET": str(ctl.socket)}
    submit = list(SUBMITTERS[cli])
    if cli == "receptorctl":
        submit[1:1] = ["--socket", str(ctl.socket)]
    transmit = subprocess.Popen([ANSIBLE_RUNNER, "transmit", str(private_data_dir), "-p",
                                 "play.yml"], stdout=subprocess.PIPE, env=env)
    work = subprocess.Popen(submit, stdin=transmit.stdout, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    transmit.stdout.close()  # type: ignore[union-attr]
    process = subprocess.Popen([ANSIBLE_RUNNER, "process", str(out_dir)], stdin=work.stdout,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
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
    assert (out_dir / "artifacts" / "rc").read_text() == "0"
    assert '"msg": "hello through the mesh"' in text
    events = [json.loads(p.read_text())
              for p in sorted((out_dir / "artifacts" / "job_events").glob("*.json"),
                              key=lambda p: int(p.name.split("-", 1)[0]))]
    assert any(e.get("event") == "runner_on_ok" for e in events)
    assert events[-1]["event"] == "playbook_on_stats"
