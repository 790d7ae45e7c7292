"""A light start: what each command and a node import, and the early control socket.

Timings live in ``bench/startup_bench.py``; these tests check the behaviour that makes them:
which modules a process imported (its ``sys.modules`` at exit, written by an ``atexit`` hook
around the real entry point), and that a starting node answers ``status`` while a slow
plugin is still being imported.
"""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.testing import ControlSession, Mesh, NodeProcess, wait_until

#: Runs ``mesh.cli.main(ARGS)`` and writes ``sorted(sys.modules)`` to OUT when it exits.
ENTRY = textwrap.dedent("""
    import atexit, json, sys
    out, args = sys.argv[1], sys.argv[2:]
    atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
    from mesh.cli import main
    sys.exit(main(args))
""")
RECEPTORCTL = str(Path(sys.executable).parent / "receptorctl")

#: The QUIC/TLS stack and the other heavy dependencies.
HEAVY = ("aioquic", "cryptography", "websockets", "OpenSSL", "service_identity", "pylsqpack")
#: Plugins that a plain tcp + work-command node has no use for.
UNUSED_PLUGINS = ("mesh_builtin.udp", "mesh_builtin.websocket", "mesh_builtin.container",
                  "mesh_builtin.signing", "mesh_builtin.tls", "mesh_builtin.certs",
                  "mesh_builtin.metrics", "mesh_builtin.tcpproxy", "mesh_plugin_echo",
                  "mesh_plugin_ansible_runner")
#: Kernel modules a node imports only when asked: the work manager's stats view (a metrics
#: scrape) and the choice among signer plugins (a node with one loaded).  ``mesh.net.stats``
#: is one too, but the ``stats`` command that tells a test node is ready asks for it.
ON_DEMAND = ("mesh.work.stats", "mesh.work.signer_choice")


@pytest.fixture(scope="module", autouse=True)
def plugin_index() -> None:
    """Build this environment's plugin index first (building it imports every plugin)."""
    subprocess.run([sys.executable, "-m", "mesh", "plugins"], capture_output=True, check=True,
                   timeout=120)


def imported(modules: set[str], *prefixes: str) -> list[str]:
    """The modules of ``modules`` that are, or are inside, one of ``prefixes``."""
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def mesh_command(mesh_dir: Path, *args: str, env: dict[str, str] | None = None,
                 ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``mesh ARGS`` to the end; its result and the modules it had imported."""
    out = mesh_dir / f"modules-{time.monotonic_ns()}.json"
    result = subprocess.run([sys.executable, "-c", ENTRY, str(out), *args], capture_output=True,
                            text=True, timeout=120, env={**os.environ, **(env or {})})
    return result, set(json.loads(out.read_text()))


class TracedNode(NodeProcess):
    """A node process started through :data:`ENTRY`: :meth:`modules` after it stopped."""

    def argv(self) -> list[str]:
        return [sys.executable, "-c", ENTRY, str(self.workdir / "modules.json"),
                *self.mesh_args()]

    def modules(self) -> set[str]:
        assert self.stop() == 0, self.log_tail()
        return set(json.loads((self.workdir / "modules.json").read_text()))


def traced_mesh(mesh: Mesh, name: str, sections: list[dict[str, Any]] = ()) -> TracedNode:
    traced = mesh.add(name, sections=list(sections), node_class=TracedNode)
    assert isinstance(traced, TracedNode)
    return traced


ECHO_COMMAND = {"work-command": {"worktype": "echo", "command": "cat"}}


# -- the command line ------------------------------------------------------------------------


def test_version_imports_no_framework(mesh_dir: Path) -> None:
    result, modules = mesh_command(mesh_dir, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"mesh, version {__import__('mesh').__version__}\n"
    assert not imported(modules, *HEAVY, "click", "pluggy", "asyncio", "structlog", "yaml",
                        "mesh_builtin")


def test_help_lists_every_command_and_imports_none(mesh_dir: Path) -> None:
    result, modules = mesh_command(mesh_dir, "--help")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert {"cert", "node", "ping", "plugins", "status", "traceroute", "work"} <= listed
    assert "Ping a node over the mesh." in result.stdout
    assert not imported(modules, *HEAVY, "asyncio", "structlog", "mesh_builtin",
                        "mesh.cli_commands", "mesh.work.cli_commands")


def test_client_commands_import_no_quic_tls_work_type_or_asyncio(mesh: Mesh,
                                                                  mesh_dir: Path) -> None:
    node = mesh.add("solo", listen=False, sections=[ECHO_COMMAND])
    mesh.start()
    sock = str(node.socket)
    for args in (("status", "--socket", sock), ("work", "list", "--socket", sock),
                 ("ping", "solo", "--count", "1", "--socket", sock)):
        result, modules = mesh_command(mesh_dir, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert not imported(modules, *HEAVY, "asyncio", "structlog", "mesh_builtin",
                            "mesh_plugin_echo", "mesh.net", "mesh.work.workceptor"), args
    assert "Node ID: solo" in mesh_command(mesh_dir, "status", "--socket", sock)[0].stdout


def test_a_subcommand_imports_its_own_plugin(mesh_dir: Path) -> None:
    result, modules = mesh_command(mesh_dir, "cert", "--help")
    assert result.returncode == 0, result.stderr
    assert "mesh_builtin.certs" in modules
    assert not imported(modules, "mesh_builtin.command", "mesh_builtin.tcp", "asyncio")


# -- a node ----------------------------------------------------------------------------------


def test_node_imports_only_the_plugins_its_config_uses(mesh: Mesh) -> None:
    node = traced_mesh(mesh, "lean", [ECHO_COMMAND])
    mesh.start()
    assert node.status()["NodeID"] == "lean"
    modules = node.modules()
    assert {"mesh_builtin.tcp", "mesh_builtin.command"} <= modules
    assert not imported(modules, *UNUSED_PLUGINS)
    assert not imported(modules, *ON_DEMAND)
    assert not imported(modules, *HEAVY), "no stream was used: QUIC must not be loaded"


def test_quic_loads_with_the_first_stream(mesh: Mesh) -> None:
    controller = traced_mesh(mesh, "ctl")
    executor = traced_mesh(mesh, "exe", [ECHO_COMMAND])
    mesh.link("exe", "ctl")
    mesh.start()
    mesh.wait_until_work_types("ctl", "exe", ["echo"])
    submit = subprocess.run([RECEPTORCTL, "--socket", str(controller.socket), "work", "submit",
                             "--node", "exe", "--payload-literal", "over a stream", "--follow",
                             "echo"], capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    assert "over a stream" in submit.stdout
    for node in (executor, controller):
        assert imported(node.modules(), "aioquic"), node.name


# -- the early control socket ----------------------------------------------------------------

SLOW_PLUGIN = textwrap.dedent('''
    """A plugin whose import waits until the test creates the file RELEASE."""
    import os, time
    from dataclasses import dataclass, field

    from mesh import hookimpl
    from mesh.config.schema import SectionSpec

    deadline = time.monotonic() + 120
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        time.sleep(0.02)


    @dataclass
    class SlowConfig:
        note: str = field(default="", metadata={"doc": "Anything."})


    @hookimpl
    def mesh_register_config_sections(register):
        register(SectionSpec("slow-start", SlowConfig, singleton=True, bare="note"))
''')


def slow_plugin(root: Path, release: Path) -> dict[str, str]:
    """A distribution in ``root`` whose plugin module blocks its import until ``release``
    exists; the environment that makes it visible (and only it and mesh's own)."""
    info = root / "mesh_plugin_slow-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mesh-plugin-slow\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[mesh.plugins]\nslow = mesh_plugin_slow\n")
    (root / "mesh_plugin_slow.py").write_text(
        f"RELEASE = {str(release)!r}\n" + SLOW_PLUGIN)
    return {"PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
            "MESH_LOAD_PLUGINS": "mesh,slow"}


def test_status_is_answered_while_a_slow_plugin_loads(mesh: Mesh, mesh_dir: Path) -> None:
    release = mesh_dir / "release"
    env = slow_plugin(mesh_dir / "site", release)
    release.touch()  # the first run builds the plugin index, which imports every plugin
    assert subprocess.run([sys.executable, "-m", "mesh", "plugins"], env={**os.environ, **env},
                          capture_output=True, timeout=120).returncode == 0
    release.unlink()

    node = mesh.add("early", listen=False, sections=[{"slow-start": "x"}], env=env)
    node.start(wait=False)
    try:
        # The plugin has not been imported, so the node cannot be up: yet it answers.
        session = wait_until(lambda: ControlSession(node.socket, timeout=10), timeout=30,
                             what="the early control socket")
        with session:
            status = session.command("status")
            assert status["NodeID"] == "early"
            assert status["Connections"] == [] and status["RoutingTable"] == {}
            assert session.command('{"command":"status","requested_fields":["Version"]}') == {
                "Version": status["Version"]}
        ctl = subprocess.run([RECEPTORCTL, "--socket", str(node.socket), "status"],
                             capture_output=True, text=True, timeout=60)
        assert ctl.returncode == 0 and "Node ID: early" in ctl.stdout, ctl.stderr

        # Any other command waits (the session is parked) until the node is up.
        parked = ControlSession(node.socket, timeout=60)
        parked.sock.sendall(b"work list\n")
        assert not node.log_events("node_started")
        release.touch()
        assert json.loads(parked.file.readline()) == {}
        parked.close()
        wait_until(lambda: node.log_events("node_started"), what="the node to finish starting")
        assert node.control("status")["NodeID"] == "early"
    finally:
        release.touch()


def test_a_config_error_after_the_early_start_removes_the_socket(mesh_dir: Path) -> None:
    sock = mesh_dir / "n.sock"
    config = mesh_dir / "n.yml"
    config.write_text(yaml.safe_dump([
        {"node": {"id": "broken", "datadir": str(mesh_dir / "data")}},
        {"control-service": {"filename": str(sock)}},
        {"tcp-listener": {"port": "not-a-port"}}]))
    result = subprocess.run([sys.executable, "-m", "mesh", "node", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "tcp-listener" in result.stderr and "port" in result.stderr
    assert not sock.exists()


def test_a_second_node_on_the_same_socket_is_refused(mesh: Mesh) -> None:
    first = mesh.add("first", listen=False)
    mesh.start()
    clash = mesh.workdir / "clash.yml"
    clash.write_text(yaml.safe_dump([
        {"node": {"id": "second", "datadir": str(mesh.workdir / "d2")}},
        {"control-service": {"filename": str(first.socket)}}]))
    result = subprocess.run([sys.executable, "-m", "mesh", "node", "-c", str(clash)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "is in use by another node" in result.stderr
    assert first.status()["NodeID"] == "first"  # its socket still answers


# -- the plugin index ------------------------------------------------------------------------


def test_an_edited_plugin_is_reindexed(mesh_dir: Path) -> None:
    root = mesh_dir / "site"
    info = root / "mesh_plugin_edit-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mesh-plugin-edit\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text("[mesh.plugins]\nedit = mesh_plugin_edit\n")
    module = root / "mesh_plugin_edit.py"
    source = textwrap.dedent('''
        from mesh import hookimpl

        async def handler(ctx, request):
            return {}

        @hookimpl
        def mesh_register_control_commands(register):
            register(NAME, handler)
    ''')
    env = {"PYTHONPATH": str(root), "MESH_LOAD_PLUGINS": "mesh,edit"}

    def commands() -> list[str]:
        result, _ = mesh_command(mesh_dir, "plugins", "--json", env=env)
        assert result.returncode == 0, result.stderr
        listing = {p["name"]: p for p in json.loads(result.stdout)}
        return listing["edit"]["registered"]["control command"]

    module.write_text('NAME = "first"\n' + source)
    assert commands() == ["first"]
    module.write_text('NAME = "second"\n' + source)
    os.utime(module, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    assert commands() == ["second"]
    # and a command that runs from the index sees it too (the index was rewritten)
    result, modules = mesh_command(mesh_dir, "--help", env=env)
    assert result.returncode == 0 and "mesh_plugin_edit" not in modules


def test_index_is_stored_in_the_cache_dir(mesh_dir: Path) -> None:
    env = {"MESH_CACHE_DIR": str(mesh_dir / "cache")}
    result, _ = mesh_command(mesh_dir, "--help", env=env)
    assert result.returncode == 0, result.stderr
    stored = list((mesh_dir / "cache").glob("plugins-*.marshal"))
    assert len(stored) == 1
    index = marshal.loads(stored[0].read_bytes())["index"]
    assert index["cli_commands"]["status"][0] == "mesh.cli_commands"
    assert index["sections"]["tcp-listener"][0] == "tcp"


def test_unwritable_cache_only_costs_time(mesh_dir: Path) -> None:
    blocker = mesh_dir / "file"
    blocker.write_text("not a directory")
    result, _ = mesh_command(mesh_dir, "--help", env={"MESH_CACHE_DIR": str(blocker / "x")})
    assert result.returncode == 0, result.stderr
    assert "Commands:" in result.stdout

