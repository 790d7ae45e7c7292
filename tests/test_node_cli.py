"""The ``mesh`` command line as a user sees it: config errors, defaults, formats, logs, reload.

Everything runs as subprocesses (``python -m mesh ...`` and the real ``receptorctl``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.config.loader import load_config
from mesh.plugins import make_plugin_manager
from mesh.testing import ControlSession, Mesh, NodeProcess, free_port, wait_until

MESH = [sys.executable, "-m", "mesh"]
RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def receptorctl(sock: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(RECEPTORCTL, "--socket", str(sock), *args)


def peers(node: NodeProcess) -> dict[str, float]:
    return {c["NodeID"]: c["Cost"] for c in node.status()["Connections"]}


# ------------------------------------------------------------------------------------------------
# (a) bad configs: one line on stderr naming the file and the place, exit code != 0


BAD_CONFIGS = {
    "unknown-section": (
        "- node:\n    id: a\n- tcp-listner:\n    port: 4444\n",
        ["unknown section 'tcp-listner'", "did you mean 'tcp-listener'?"]),
    "unknown-key": (
        "- node:\n    id: a\n- tcp-listener:\n    prot: 4444\n",
        ["tcp-listener", "'prot'", "did you mean 'port'?"]),
    "wrong-type": (
        "- node:\n    id: a\n- tcp-listener:\n    port: abc\n",
        ["tcp-listener", "'port'", "expected an integer", "'abc'"]),
    "wrong-type-bool": (
        "- node:\n    id: a\n- tcp-peer:\n    address: 127.0.0.1:4444\n    redial: maybe\n",
        ["tcp-peer", "'redial'", "expected a boolean"]),
    "missing-key": (
        "- node:\n    id: a\n- tcp-peer:\n    cost: 2\n",
        ["tcp-peer", "missing required key 'address'"]),
    "yaml-syntax": (
        "- node:\n    id: a\n- tcp-listener: {port: [4444\n",
        ["YAML syntax error", "line "]),
    "yaml-tabs": (
        "- node:\n\tid: a\n",
        ["YAML syntax error", "tabs"]),
    "firewall-regex": (
        "- node:\n    id: a\n    firewallrules:\n"
        "      - action: reject\n        fromnode: '/[a-/'\n",
        ["node", "'firewallrules'", "regex", "'/[a-/'"]),
    "firewall-action": (
        "- node:\n    id: a\n    firewallrules:\n      - action: explode\n",
        ["node", "'firewallrules'", "explode"]),
    "duplicate-work-types": (
        "- node:\n    id: a\n"
        "- work-command:\n    worktype: echo\n    command: echo\n"
        "- work-command:\n    worktype: echo\n    command: cat\n",
        ["work-command", "'worktype'", "'echo'", "defined twice"]),
    "unsafe-work-type": (
        "- node:\n    id: a\n- work-command:\n    worktype: ../etc\n    command: echo\n",
        ["work-command", "'worktype'", "'../etc'", "letters, digits"]),
    "bad-maxpayload": (
        "- node:\n    id: a\n- work-limits:\n    maxpayload: lots\n",
        ["work-limits", "'maxpayload'", "'lots' is not a size", "'100M'"]),
    "bad-node-id": (
        "- node:\n    id: 'no spaces please'\n",
        ["node", "'id'", "no spaces please"]),
    "singleton-twice": (
        "- node:\n    id: a\n- node:\n    id: b\n",
        ["'node'", "only once"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_gives_one_clear_line(mesh_dir: Path, case: str) -> None:
    text, expected = BAD_CONFIGS[case]
    path = mesh_dir / f"{case}.yml"
    path.write_text(text)
    result = run(*MESH, "node", "-c", str(path), timeout=60)
    assert result.returncode != 0
    assert result.returncode == 2, "config errors exit with 2"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "Traceback" not in result.stderr
    assert str(path) in line
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"
    assert result.stdout == ""


def test_missing_config_file(mesh_dir: Path) -> None:
    path = mesh_dir / "nope.yml"
    result = run(*MESH, "node", "-c", str(path))
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert str(path) in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------------------------
# (b) no config at all: the embedded default


def test_node_without_config_uses_embedded_default(mesh_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MESH_SOCKET", "RECEPTORCTL_SOCKET")}
    env.update(HOME=str(mesh_dir), XDG_STATE_HOME=str(mesh_dir / "state"))
    default_socket = mesh_dir / "state" / "mesh" / "control.sock"
    log = open(mesh_dir / "node.log", "wb")
    proc = subprocess.Popen([*MESH, "node"], env=env, cwd=mesh_dir, stdout=log, stderr=log,
                            start_new_session=True)
    log.close()
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"node exited with {proc.returncode}: "
                                     f"{(mesh_dir / 'node.log').read_text()}")
            with ControlSession(default_socket, timeout=5) as session:
                return session.greeting.startswith("Receptor Control, node ")

        wait_until(ready, timeout=30, what="default control socket")
        hostname = socket.gethostname().split(".")[0]

        status = run(*MESH, "status", env=env, cwd=mesh_dir)
        assert status.returncode == 0, status.stderr
        assert f"Node ID: {hostname}" in status.stdout

        as_json = run(*MESH, "status", "--json", env=env, cwd=mesh_dir)
        assert json.loads(as_json.stdout)["NodeID"] == hostname

        ctl = receptorctl(default_socket, "status")
        assert ctl.returncode == 0, ctl.stderr
        assert f"Node ID: {hostname}" in ctl.stdout

        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    # Nothing was written outside the temporary home.
    assert {p.name for p in mesh_dir.iterdir()} <= {"state", "node.log", ".local", ".config"}


# ------------------------------------------------------------------------------------------------
# (c) the version-2 config format


class V2Node(NodeProcess):
    """A node whose config file is written in the ``version: 2`` mapping form."""

    port: int = 0

    def config_v2(self) -> dict[str, Any]:
        return {
            "version": 2,
            "node": {"id": self.name, "datadir": str(self.datadir)},
            "log-level": "debug",
            "tcp-listeners": [{"port": self.port, "bindaddr": "127.0.0.1", "cost": 2.0,
                               "nodecost": {"listform": 1.5}}],
            "control-services": [{"service": "control", "filename": str(self.socket)}],
            "work-commands": [{"worktype": "echo", "command": "echo"},
                              {"worktype": "cat", "command": "cat"}],
        }

    def config_v1(self) -> list[dict[str, Any]]:
        v2 = self.config_v2()
        return [{"node": v2["node"]}, {"log-level": "debug"},
                *({"tcp-listener": item} for item in v2["tcp-listeners"]),
                *({"control-service": item} for item in v2["control-services"]),
                *({"work-command": item} for item in v2["work-commands"])]

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config_v2(), sort_keys=False))


def test_version_2_config_is_equivalent_to_list_form(mesh: Mesh) -> None:
    v2 = V2Node("v2node", mesh.workdir / "v2node")
    v2.port = free_port()
    v2.workdir.mkdir(parents=True)
    v2.write_config()
    list_path = v2.workdir / "list-form.yml"
    list_path.write_text(yaml.safe_dump(v2.config_v1(), sort_keys=False))

    specs = make_plugin_manager().section_specs()
    from_v2 = load_config(v2.config_path, specs)
    from_list = load_config(list_path, specs)
    assert [(e.section, e.values) for e in from_v2.entries] == \
        [(e.section, e.values) for e in from_list.entries]

    mesh.nodes["v2node"] = v2
    mesh.ports["v2node"] = v2.port
    mesh.add("listform", listen=False)
    mesh.link("listform", "v2node", cost=1.5)
    mesh.start()
    mesh.wait_converged()
    status = v2.status()
    assert status["NodeID"] == "v2node"
    assert peers(v2) == {"listform": 1.5}
    control_ads = [ad for ad in status["Advertisements"]
                   if ad["NodeID"] == "v2node" and ad["Service"] == "control"]
    assert control_ads and {w["WorkType"] for w in control_ads[0]["WorkCommands"]} == \
        {"echo", "cat"}
    reply = v2.control("ping listform")
    assert reply["Success"], reply


# ------------------------------------------------------------------------------------------------
# (d) --log-format json


def test_log_format_json_every_line_is_an_event(mesh_dir: Path) -> None:
    port = free_port()
    sock = mesh_dir / "j.sock"
    config = mesh_dir / "j.yml"
    config.write_text(yaml.safe_dump([
        {"node": {"id": "jsonnode", "datadir": str(mesh_dir / "data")}},
        {"log-level": "debug"},
        {"control-service": {"filename": str(sock)}},
        {"tcp-peer": {"address": f"127.0.0.1:{port}"}},  # nobody there: dial failures
    ]))
    # The flag beats the environment variable (and stderr is no terminal, so "auto" is out).
    env = {**os.environ, "MESH_LOG_FORMAT": "console"}
    out_path, err_path = mesh_dir / "stdout", mesh_dir / "stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([*MESH, "--log-format", "json", "node", "-c", str(config)],
                                env=env, stdout=out, stderr=err, start_new_session=True)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"node exited with {proc.returncode}: {err_path.read_text()}")
        with ControlSession(sock, timeout=5) as session:
            return session.greeting.endswith("jsonnode")

    try:
        wait_until(ready, timeout=30, what="control socket")
        ctl = receptorctl(sock, "status")  # control sessions log too
        assert ctl.returncode == 0, ctl.stderr
        assert receptorctl(sock, "ping", "nowhere", "--count", "1").returncode == 2
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 0
    assert out_path.read_bytes() == b""
    lines = err_path.read_text().splitlines()
    events = []
    for line in lines:
        event = json.loads(line)  # every line is JSON ...
        assert isinstance(event, dict), line  # ... and an object
        assert event.get("node_id") == "jsonnode", line
        assert isinstance(event.get("event"), str) and event["event"], line
        events.append(event["event"])
    assert len(events) >= 5
    assert "node_started" in events and "node_stopping" in events
    assert "backend_dial_failed" in events


# ------------------------------------------------------------------------------------------------
# (e) reload via receptorctl


def test_reload_adds_link_keeps_others_and_reports_errors(mesh: Mesh) -> None:
    alpha = mesh.add("alpha")
    beta = mesh.add("beta")
    gamma = mesh.add("gamma", listen=False)
    mesh.link("gamma", "alpha")
    mesh.start()
    wait_until(lambda: peers(gamma) == {"alpha": 1} and peers(alpha) == {"gamma": 1},
               timeout=30, what="gamma - alpha link")

    # Add a tcp-peer to beta and reload: the new link comes up, the old one is untouched.
    mesh.link("gamma", "beta")
    gamma.write_config()
    result = receptorctl(gamma.socket, "reload")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Reload successful" in result.stdout
    wait_until(lambda: peers(gamma) == {"alpha": 1, "beta": 1}, timeout=30,
               what="gamma linked to alpha and beta")
    wait_until(lambda: peers(beta) == {"gamma": 1}, timeout=30, what="beta's side")
    assert peers(alpha) == {"gamma": 1}
    mesh.wait_converged()

    def link_events(node: NodeProcess, event: str, peer: str) -> int:
        return sum(1 for e in node.log_events() if e.get("event") == event
                   and e.get("peer") == peer)

    def alpha_link_untouched() -> None:
        assert link_events(gamma, "connection_lost", "alpha") == 0
        assert link_events(alpha, "connection_lost", "gamma") == 0
        assert link_events(gamma, "connection_established", "alpha") == 1
        assert peers(gamma) == {"alpha": 1, "beta": 1}
        assert peers(alpha) == {"gamma": 1}

    alpha_link_untouched()

    # A change to the node section cannot be reloaded: ERRORCODE 3, nothing changes.
    items = yaml.safe_load(gamma.config_path.read_text())
    items[0]["node"]["firewallrules"] = [{"action": "drop", "fromnode": "beta"}]
    gamma.config_path.write_text(yaml.safe_dump(items, sort_keys=False))
    result = receptorctl(gamma.socket, "reload")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "ERRORCODE 3" in result.stdout + result.stderr

    # A YAML syntax error: ERRORCODE 4, nothing changes.
    gamma.config_path.write_text("- node: {id: gamma\n")
    result = receptorctl(gamma.socket, "reload")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "ERRORCODE 4" in result.stdout + result.stderr
    assert str(gamma.config_path) in result.stdout + result.stderr

    assert gamma.alive
    alpha_link_untouched()
    assert gamma.control("ping beta")["Success"]

    # Back to a good file: reload succeeds again, and dropping beta's peer closes only that link.
    gamma.sections = [s for s in gamma.sections
                      if s.get("tcp-peer", {}).get("address") != f"127.0.0.1:{mesh.ports['beta']}"]
    gamma.write_config()
    result = receptorctl(gamma.socket, "reload")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_until(lambda: peers(gamma) == {"alpha": 1} and peers(beta) == {}, timeout=30,
               what="beta link removed by reload")
    assert link_events(gamma, "connection_lost", "alpha") == 0
    assert link_events(gamma, "connection_established", "alpha") == 1
    assert gamma.control("ping alpha")["Success"]
