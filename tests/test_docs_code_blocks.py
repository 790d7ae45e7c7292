"""The code blocks of docs/hooks.md and docs/plugin-guide.md work as the docs say.

Like tests/test_config_docs.py for docs/config.md, this checks the docs against the code instead
of trusting them:

* every ```python block compiles.  A block whose fence follows ``<!-- fragment -->`` is only
  compiled: it uses names the reader supplies;
* every other block runs as a module and uses no name it does not define or import.  A block
  after ``<!-- module: NAME -->`` is the module NAME, which other blocks may import; one after
  ``<!-- excerpt: PATH -->`` is copied from PATH: each of its definitions equals PATH's
  (docstrings aside), and it runs among PATH's globals.  A bodiless signature
  (``def mesh_x(a, b) -> None: ...``) is not run;
* a function named ``mesh_*`` is a hook of :mod:`mesh.hookspecs`, taking only arguments of that
  hook; a signature lists exactly the hook's arguments, in order;
* a block with ``@hookimpl`` functions registers cleanly with a real plugin manager (CLI hooks
  with a real click group);
* a block that defines ``test_*`` functions passes under pytest, with mesh's fixtures;
* the complete plugins of docs/hooks.md run for real: installed as a temporary distribution and
  loaded by two node processes, node2 linked to node1 only through the docs' ``unix-peer``
  backend; the docs' work type runs a unit, the service echoes a stream, the control command
  and the CLI command answer, the observers log;
* TOML blocks depend on mesh by its distribution name and use the ``mesh.plugins`` group, the
  kernel-defaults table names what the kernel registers, ``mesh plugins`` samples are what the
  command prints and YAML config samples load.
"""

from __future__ import annotations

import ast
import builtins
import copy
import importlib
import inspect
import json
import os
import re
import shlex
import shutil
import socket
import socketserver
import subprocess
import sys
import symtable
import tempfile
import threading
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import click
import pytest
import yaml

import mesh
from mesh import hookspecs
from mesh.config.loader import parse_config
from mesh.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, PluginHost, make_plugin_manager
from mesh.testing import Mesh, NodeProcess, wait_services, wait_until
from file_modules import load_file

ROOT = Path(__file__).resolve().parent.parent
HOOKS_MD = ROOT / "docs" / "hooks.md"
GUIDE_MD = ROOT / "docs" / "plugin-guide.md"
DOCS = (HOOKS_MD, GUIDE_MD)
#: The discovery variables; subprocesses get only those a test sets.
PLUGIN_ENV = ("MESH_LOAD_PLUGINS", "MESH_DISABLE_PLUGINS", "MESH_TRACE_PLUGINS",
              "MESH_STRICT_PLUGINS")
#: The temporary distribution the real runs install the plugins of docs/hooks.md as.
DOCS_DIST = "mesh-docs-examples"

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
CLOSING = re.compile(r"^ *```\s*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<key>[a-z-]+)(?::\s*(?P<value>.*?))?\s*-->\s*$")
MARKERS = frozenset({"fragment", "module", "excerpt"})
HOOK_SPECS: dict[str, list[str]] = {
    name: list(inspect.signature(fn).parameters) for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, "mesh_spec")}


# -- the blocks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced code block of a doc, with the markers on the lines right above its fence."""

    doc: Path
    line: int
    lang: str
    code: str
    markers: tuple[tuple[str, str], ...] = ()

    @property
    def where(self) -> str:
        return f"docs/{self.doc.name}:{self.line}"

    def marker(self, key: str) -> str | None:
        return dict(self.markers).get(key)

    @property
    def module_name(self) -> str:
        return self.marker("module") or f"doc_{self.doc.stem.replace('-', '_')}_{self.line}"

    @property
    def tree(self) -> ast.Module:
        """The block's AST; empty when it does not compile (test_python_block_compiles says
        why)."""
        try:
            return ast.parse(self.code, self.where)
        except SyntaxError:
            return ast.Module(body=[], type_ignores=[])

    @property
    def runnable(self) -> bool:
        """A Python block that is run, not only compiled."""
        return (self.lang == "python" and self.marker("fragment") is None
                and not _is_signature(self.tree))

    @property
    def hooks(self) -> list[str]:
        """The hooks its top-level ``@hookimpl`` functions implement."""
        return sorted(node.name for node in self.tree.body
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and any(_names_hookimpl(d) for d in node.decorator_list))

    @property
    def tests(self) -> list[str]:
        return [node.name for node in self.tree.body
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def _names_hookimpl(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "hookimpl") or \
        (isinstance(decorator, ast.Attribute) and decorator.attr == "hookimpl")


def _is_signature(tree: ast.Module) -> bool:
    """Only bodiless, undecorated ``def f(...) -> T: ...`` statements."""
    return bool(tree.body) and all(
        isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.decorator_list
        and len(node.body) == 1 and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant) and node.body[0].value.value is ...
        for node in tree.body)


def blocks_of(doc: Path) -> list[Block]:
    """Every fenced code block of ``doc``, in order."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        start, indent = index, len(fence["indent"])
        index += 1
        body: list[str] = []
        while index < len(lines) and not CLOSING.match(lines[index]):
            body.append(lines[index][indent:])
            index += 1
        index += 1  # the closing fence
        markers = []
        above = start - 1
        while above >= 0 and (marker := MARKER.match(lines[above])):
            markers.append((marker["key"], (marker["value"] or "").strip()))
            above -= 1
        out.append(Block(doc, start + 1, fence["lang"], "\n".join(body) + "\n",
                         tuple(reversed(markers))))
    return out


BLOCKS = [block for doc in DOCS for block in blocks_of(doc)]
PYTHON = [b for b in BLOCKS if b.lang == "python"]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the discovery variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in PLUGIN_ENV}, **extra}


def with_pythonpath(path: Path) -> str:
    """``PYTHONPATH`` with ``path`` first."""
    return os.pathsep.join(filter(None, [str(path), os.environ.get("PYTHONPATH")]))


def _ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


def _params(blocks: list[Block]) -> Any:
    return pytest.mark.parametrize("block", blocks, ids=_ids(blocks))


# -- loading a block -------------------------------------------------------------------------


def undefined_names(code: str, namespace: dict[str, Any]) -> set[str]:
    """Global names ``code`` reads that neither ``namespace`` (after running it) nor the
    builtins define: what a reader copying the block would miss."""
    missing: set[str] = set()

    def visit(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            if not symbol.is_referenced():
                continue
            if table.get_type() == "module" or symbol.is_global():
                name = symbol.get_name()
                if name not in namespace and not hasattr(builtins, name):
                    missing.add(name)
        for child in table.get_children():
            visit(child)

    visit(symtable.symtable(code, "<doc>", "exec"))
    return missing


def _excerpt_source(block: Block) -> types.ModuleType:
    """The module an ``excerpt`` block is copied from, loaded from its file (as a module of its
    own: dataclasses look their module up in ``sys.modules``)."""
    path = ROOT / (block.marker("excerpt") or "")
    assert path.is_file(), f"{block.where}: excerpt of {path}, which does not exist"
    return load_file(f"_excerpt_source_{block.module_name}", path, register=True)


@pytest.fixture(scope="session")
def doc_modules() -> Iterator[Path]:
    """A directory on ``sys.path`` holding each runnable block (excerpts aside) as a module."""
    directory = Path(tempfile.mkdtemp(prefix="mesh-doc-modules-"))
    names = []
    for block in PYTHON:
        if block.runnable and block.marker("excerpt") is None:
            (directory / f"{block.module_name}.py").write_text(block.code, encoding="utf-8")
            names.append(block.module_name)
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        for name in names:
            sys.modules.pop(name, None)
        shutil.rmtree(directory, ignore_errors=True)


def load_block(block: Block) -> types.ModuleType:
    """Run a runnable block as its module (an excerpt among its source's globals) and check
    that it names nothing it does not define."""
    if block.marker("excerpt") is not None:
        source = _excerpt_source(block)
        module = types.ModuleType(block.module_name)
        module.__dict__.update(vars(source), __name__=block.module_name)
        sys.modules[block.module_name] = module  # dataclasses look their module up there
        try:
            exec(compile(block.code, block.where, "exec"), vars(module))
        finally:
            del sys.modules[block.module_name], sys.modules[source.__name__]
    else:
        try:
            module = importlib.import_module(block.module_name)
        except ModuleNotFoundError as exc:
            if exc.name in ("mesh_plugin_echo",):
                pytest.skip(f"{block.where} needs {exc.name}, which is not installed")
            raise
    missing = undefined_names(block.code, vars(module))
    assert not missing, (f"{block.where} uses {', '.join(sorted(missing))} without defining or "
                         f"importing it; import it, or mark the block <!-- fragment -->")
    return module


def run_mesh(*args: str, env: dict[str, str] | None = None, cwd: Path) -> str:
    """The output of ``mesh ARGS`` run in ``cwd`` (no ambient discovery variables)."""
    result = subprocess.run([sys.executable, "-m", "mesh", *args], cwd=cwd,
                            env=clean_env(**(env or {})), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- every Python block ----------------------------------------------------------------------


def test_blocks_are_found() -> None:
    assert len(PYTHON) > 10
    unknown = [(b.where, key) for b in BLOCKS for key, _ in b.markers if key not in MARKERS]
    assert not unknown, f"unknown markers {unknown}; known: {sorted(MARKERS)}"


@_params(PYTHON)
def test_python_block_compiles(block: Block) -> None:
    compile(block.code, block.where, "exec")


@_params(PYTHON)
def test_hook_functions_match_hookspecs(block: Block) -> None:
    signature = _is_signature(block.tree)
    for node in block.tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or \
                not node.name.startswith("mesh_"):
            continue
        assert node.name in HOOK_SPECS, (f"{block.where}: {node.name} is not a hook in "
                                         f"mesh.hookspecs")
        spec = HOOK_SPECS[node.name]
        args = [arg.arg for arg in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        if signature:
            assert args == spec, f"{block.where}: the signature of {node.name} is {spec}"
        else:
            extra = [arg for arg in args if arg not in spec]
            assert not extra, f"{block.where}: {node.name} has no argument {extra}; it has {spec}"


@_params([b for b in PYTHON if b.runnable])
def test_block_runs_as_a_module(block: Block, doc_modules: Path) -> None:
    load_block(block)


@_params([b for b in PYTHON if b.marker("excerpt") is not None])
def test_excerpt_equals_its_source(block: Block) -> None:
    source_path = ROOT / (block.marker("excerpt") or "")
    source = _definitions(ast.parse(source_path.read_text(encoding="utf-8")))
    shown = _definitions(block.tree)
    assert shown, f"{block.where} defines nothing to compare with {source_path.name}"
    for name, dump in shown.items():
        assert name in source, f"{block.where}: {name} is not defined in {source_path}"
        assert dump == source[name], (f"{block.where}: {name} differs from its source in "
                                      f"{source_path.relative_to(ROOT)}; copy it again")


def _definitions(tree: ast.Module) -> dict[str, str]:
    """Top-level functions and classes by name, as AST dumps without docstrings."""
    out = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = ast.dump(_without_docstrings(copy.deepcopy(node)))
    return out


def _without_docstrings(node: ast.AST) -> ast.AST:
    for item in ast.walk(node):
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and \
                item.body and isinstance(item.body[0], ast.Expr) and \
                isinstance(item.body[0].value, ast.Constant) and \
                isinstance(item.body[0].value.value, str):
            item.body = item.body[1:] or [ast.Pass()]
    return node


@_params([b for b in PYTHON if b.runnable and b.hooks])
def test_plugin_block_registers(block: Block, doc_modules: Path) -> None:
    module = load_block(block)
    host = make_plugin_manager(entry_points=False, extra=[(block.module_name, module)])
    host.register_cli(click.Group("mesh"))
    assert host.infos[block.module_name].hooks == block.hooks


@_params([b for b in PYTHON if b.runnable and b.tests])
def test_doc_tests_pass(block: Block, doc_modules: Path, tmp_path: Path) -> None:
    load_block(block)  # skips when the plugin it tests is not installed
    test_file = tmp_path / f"test_{block.module_name}.py"
    test_file.write_text(block.code, encoding="utf-8")
    # receptorctl and mesh on PATH, as in a reader's activated virtualenv
    env = clean_env(PYTHONPATH=with_pythonpath(doc_modules),
                    PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                          os.environ.get("PATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{block.where}:\n{result.stdout}\n{result.stderr}"
    assert f"{len(block.tests)} passed" in result.stdout, result.stdout


# -- the plugins of docs/hooks.md, run for real ----------------------------------------------


@dataclass
class DocPlugins:
    """docs/hooks.md's complete plugins, installed as the distribution :data:`DOCS_DIST`."""

    site: Path
    #: The plugin (module) that registers each (kind, name), e.g. ("backend", "unix-peer").
    owners: dict[tuple[str, str], str] = field(default_factory=dict)

    def owner(self, kind: str, name: str) -> str:
        assert (kind, name) in self.owners, (
            f"docs/hooks.md has no complete plugin registering the {kind} {name!r} any more; "
            f"update this test with the docs")
        return self.owners[(kind, name)]

    @property
    def env(self) -> dict[str, str]:
        """What a node or a command needs to load mesh's builtins and these plugins only."""
        return {"PYTHONPATH": with_pythonpath(self.site),
                "MESH_LOAD_PLUGINS": f"{mesh.DISTRIBUTION},{DOCS_DIST}"}


@pytest.fixture(scope="module")
def doc_plugins(tmp_path_factory: pytest.TempPathFactory) -> DocPlugins:
    site = tmp_path_factory.mktemp("site")
    plugins = [b for b in PYTHON if b.doc == HOOKS_MD and b.runnable and b.hooks]
    info = site / f"{DOCS_DIST.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DOCS_DIST}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{b.module_name} = {b.module_name}\n"
                                              for b in plugins))
    docs = DocPlugins(site)
    for block in plugins:
        (site / f"{block.module_name}.py").write_text(block.code, encoding="utf-8")
        module = types.ModuleType(f"_docs_dist_{block.module_name}")
        sys.modules[module.__name__] = module  # type hints are resolved in the module
        try:
            exec(compile(block.code, block.where, "exec"), vars(module))
            host = make_plugin_manager(entry_points=False, extra=[(block.module_name, module)])
            host.register_cli(click.Group("mesh"))
        finally:
            del sys.modules[module.__name__]
        for kind, names in host.infos[block.module_name].registered.items():
            for name in names:
                docs.owners[(kind, name)] = block.module_name
    return docs


class UnixToTcp(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A Unix socket that forwards each connection to a local TCP port: what node2's
    ``unix-peer`` dials to reach node1's ``tcp-listener``."""

    daemon_threads = True

    def __init__(self, path: Path, port: int) -> None:
        self.port = port
        self.connections = 0
        super().__init__(str(path), _Forward)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)


class _Forward(socketserver.BaseRequestHandler):
    server: UnixToTcp

    def handle(self) -> None:
        self.server.connections += 1
        try:
            upstream = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
        except OSError:
            return  # node1 is not listening yet: node2 dials again
        upstream.settimeout(None)
        with upstream:
            back = threading.Thread(target=_copy, args=(upstream, self.request), daemon=True)
            back.start()
            _copy(self.request, upstream)
            back.join(timeout=30)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@dataclass
class DocMesh:
    mesh: Mesh
    proxy: UnixToTcp
    plugins: DocPlugins

    @property
    def node1(self) -> NodeProcess:
        return self.mesh.nodes["node1"]

    @property
    def node2(self) -> NodeProcess:
        return self.mesh.nodes["node2"]


@pytest.fixture(scope="module")
def doc_mesh(doc_plugins: DocPlugins) -> Iterator[DocMesh]:
    """node1 (tcp-listener) and node2, whose only link is the docs' unix-peer backend to node1
    (through :class:`UnixToTcp`), with the docs' work type and service configured."""
    for kind, name in (("backend", "unix-peer"), ("work type", "work-cat"),
                       ("service", "echo-service")):
        doc_plugins.owner(kind, name)
    workdir = Path(tempfile.mkdtemp(prefix="mesh-docs-"))  # short: Unix socket paths
    cluster = Mesh(workdir)
    proxy: UnixToTcp | None = None
    try:
        cluster.add("node1", env=doc_plugins.env)
        proxy = UnixToTcp(workdir / "to-node1.sock", cluster.ports["node1"])
        cluster.add("node2", listen=False, env=doc_plugins.env,
                    sections=[{"unix-peer": str(workdir / "to-node1.sock")},
                              {"work-cat": "cat"}, {"echo-service": "echo"}])
        cluster.start()
        cluster.wait_converged()
        wait_services(cluster, "control")
        yield DocMesh(cluster, proxy, doc_plugins)
    finally:
        cluster.cleanup()
        if proxy is not None:
            proxy.close()


def test_backend_block_links_two_nodes(doc_mesh: DocMesh) -> None:
    assert doc_mesh.node2.routes().get("node1") == "node1"
    assert doc_mesh.proxy.connections >= 1
    assert "tcp-peer" not in json.dumps(doc_mesh.node2.sections)


def test_link_observer_block_logs_the_link(doc_mesh: DocMesh) -> None:
    events = wait_until(lambda: doc_mesh.node1.log_events("neighbour_up", peer="node2"),
                        timeout=30, what="node1's neighbour_up event")
    assert events[0]["node_id"] == "node1"  # added by the node, as the docs say
    assert events[0]["cost"] == 1.0


def test_work_type_block_runs_a_unit(doc_mesh: DocMesh, tmp_path: Path) -> None:
    doc_mesh.mesh.wait_until_work_types("node1", "node2", ["cat"])
    output = run_mesh("work", "submit", "--socket", str(doc_mesh.node1.socket), "--node",
                      "node2", "--payload-literal", "hello docs", "--follow", "cat", cwd=tmp_path)
    assert output == "hello docs\n"


def test_unit_observer_block_logs_a_failed_unit(doc_mesh: DocMesh) -> None:
    node2 = doc_mesh.node2
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(str(node2.socket))
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"Receptor Control")
        client.sendall(b"work submit node2 cat\n")
        created = reader.readline().decode()
        match = re.match(r"Work unit created with ID (\w+)\.", created)
        assert match, created
        client.sendall(b"half a payl")  # and go away before the end of the payload
        reader.close()
    unit_id = match.group(1)
    wait_until(lambda: node2.control(f"work status {unit_id}")["State"] == 3, timeout=30,
               what=f"unit {unit_id} Failed")
    events = wait_until(lambda: node2.log_events("unit_failed", unit_id=unit_id), timeout=30,
                        what=f"the docs' unit_failed event; the unit's events: "
                             f"{node2.log_events(unit_id=unit_id)}")
    assert "client disconnected" in events[0]["detail"]


def test_service_block_echoes_a_stream(doc_mesh: DocMesh) -> None:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(str(doc_mesh.node1.socket))
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"Receptor Control")
        client.sendall(b"connect node2 echo\n")
        assert reader.readline() == b"Connecting\n"
        client.sendall(b"over the mesh and back\n")
        client.shutdown(socket.SHUT_WR)
        assert reader.read() == b"over the mesh and back\n"


def test_control_command_block_answers(doc_mesh: DocMesh) -> None:
    doc_mesh.plugins.owner("control command", "uptime")
    reply = doc_mesh.node1.control("uptime")
    assert reply["NodeID"] == "node1"
    assert 0 < reply["Seconds"] < 600


def test_cli_command_block_runs(doc_plugins: DocPlugins, tmp_path: Path) -> None:
    doc_plugins.owner("cli command", "hello")
    assert run_mesh("hello", "world", env=doc_plugins.env, cwd=tmp_path) == "hello world\n"


# -- TOML, tables, command output and configs -------------------------------------------------


@_params([b for b in BLOCKS if b.lang == "toml"])
def test_toml_block_names_mesh_correctly(block: Block) -> None:
    project = tomllib.loads(block.code).get("project", {})
    if "name" in project:  # a plugin distribution
        names = [re.match(r"[A-Za-z0-9._-]+", dep).group(0).lower()  # type: ignore[union-attr]
                 for dep in project.get("dependencies", [])]
        assert mesh.DISTRIBUTION in names, (
            f"{block.where}: a plugin depends on mesh's distribution {mesh.DISTRIBUTION!r} "
            f"(not {names})")
        assert set(project.get("entry-points", {})) == {ENTRY_POINT_GROUP}
    else:  # lines of mesh's own pyproject.toml
        ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
        for group, entries in project.get("entry-points", {}).items():
            for name, target in entries.items():
                assert ours.get(group, {}).get(name) == target, (
                    f"{block.where}: pyproject.toml has no entry point {name} = {target!r}")


def test_kernel_defaults_table_names_what_the_kernel_registers() -> None:
    host = make_plugin_manager(entry_points=False)
    host.register_cli(click.Group("mesh"))
    rows = {}
    for line in HOOKS_MD.read_text(encoding="utf-8").splitlines():
        row = re.match(r"^\s*\|\s*`(mesh\.[\w.]+)`\s*\|(.*)\|\s*$", line)
        if row:
            rows[row[1]] = set(re.findall(r"`([^`]+)`", row[2]))
    assert set(rows) == set(DEFAULT_PLUGINS), "docs/hooks.md's kernel-defaults table is stale"
    for plugin, named in rows.items():
        registered = {name for names in host.infos[plugin].registered.values() for name in names}
        assert named == registered, f"docs/hooks.md: {plugin} registers {sorted(registered)}"


@dataclass(frozen=True)
class Sample:
    """A ``$ ... mesh plugins ...`` line of a console block and the output shown under it."""

    where: str
    env: dict[str, str]
    args: list[str]
    output: list[str]


def plugins_samples() -> list[Sample]:
    samples = []
    for block in BLOCKS:
        if block.lang != "console":
            continue
        lines = block.code.splitlines()
        for index, line in enumerate(lines):
            if not line.startswith("$ ") or "mesh plugins" not in line:
                continue
            words = shlex.split(line[2:], comments=True)
            env = {}
            while words and re.match(r"^[A-Z_]+=", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            output = []
            for after in lines[index + 1:]:
                if after.startswith("$ "):
                    break
                output.append(after)
            if words[:2] == ["mesh", "plugins"] and output:
                samples.append(Sample(f"docs/{block.doc.name}:{block.line}", env, words[2:],
                                      output))
    return samples


def plugin_blocks(lines: list[str]) -> dict[str, list[str]]:
    """``mesh plugins`` output by plugin name (each plugin's header and indented lines)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        if line == "...":
            current = None
        elif not line.startswith(" "):
            current = blocks.setdefault(line.split()[0], [line])
        elif current is not None:
            current.append(line)
    return blocks


SAMPLES = plugins_samples()


def test_plugins_samples_are_found() -> None:
    assert {sample.where.split(":")[0] for sample in SAMPLES} == {"docs/hooks.md",
                                                                   "docs/plugin-guide.md"}


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.where for s in SAMPLES])
def test_plugins_sample_is_what_the_command_prints(sample: Sample, tmp_path: Path) -> None:
    real = plugin_blocks(run_mesh("plugins", *sample.args, env=sample.env, cwd=tmp_path)
                         .splitlines())
    shown = plugin_blocks(sample.output)
    if "echo" in shown and "echo" not in real:
        pytest.skip("mesh-plugin-echo is not installed")
    for name, lines in shown.items():
        assert lines == real.get(name), (
            f"{sample.where}: `mesh plugins` prints for {name}:\n" + "\n".join(real.get(name, [])))
    if "..." not in sample.output:
        assert set(shown) == set(real), f"{sample.where}: `mesh plugins` lists {sorted(real)}"


def test_plugins_json_sample_is_what_the_command_prints(tmp_path: Path) -> None:
    samples = [(block, json.loads(block.code)) for block in BLOCKS
               if block.doc == HOOKS_MD and block.lang == "json"]
    entries = [(block, entry) for block, data in samples if isinstance(data, list)
               for entry in data if isinstance(entry, dict) and "distribution" in entry]
    assert entries, "docs/hooks.md shows no `mesh plugins --json` entry"
    real = {entry["name"]: entry for entry in json.loads(run_mesh("plugins", "--json",
                                                                  cwd=tmp_path))}
    for block, entry in entries:
        assert entry == real.get(entry["name"]), (
            f"{block.where}: `mesh plugins --json` prints {real.get(entry['name'])}")


@_params([b for b in BLOCKS if b.lang == "yaml"])
def test_yaml_config_block_loads(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(yaml.safe_load(block.code), list), f"{block.where} is not a node config"
    monkeypatch.setenv("MESH_LOAD_PLUGINS", f"{mesh.DISTRIBUTION},mesh-plugin-echo")
    monkeypatch.delenv("MESH_DISABLE_PLUGINS", raising=False)
    host: PluginHost = make_plugin_manager()
    if "echo" not in host.infos and "work-echo" in block.code:
        pytest.skip("mesh-plugin-echo is not installed")
    parse_config(block.code, host.section_specs(), source=block.where)
