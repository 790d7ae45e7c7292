"""The plugin index: what each installed plugin registers, known without importing it.

A node imports only the plugins its config uses, and a ``mesh`` command only the plugin that
owns it.  To know which plugin that is, the kernel keeps an index: built once by loading every
plugin (:func:`mesh.plugins.make_plugin_manager`), stored (with :mod:`marshal`) in the user's
cache directory
and trusted while nothing it was built from has changed:

* the key (the file name) covers the interpreter, ``sys.path`` (without the script's own
  directory) and the discovery variables ``MESH_LOAD_PLUGINS`` / ``MESH_DISABLE_PLUGINS``;
* the fingerprint covers the modification times of the ``sys.path`` directories (installing or
  removing a distribution adds or removes a ``*.dist-info`` directory there) and of every source
  file of the plugins' packages, the kernel's included (an edited plugin is re-indexed).

An index is never written while a plugin fails to load or is invalid (an unknown hook), so a
broken plugin is retried (and reported) on every start instead of being remembered as absent.
``MESH_CACHE_DIR`` moves the cache; an unwritable cache directory only costs the rebuild on
every start.

This module imports only built-in modules (not even json or typing): reading the index is part
of every command's start-up, ``mesh --help`` included.
"""

from __future__ import annotations

import marshal
import os
import sys
import zlib

from mesh.defaults import cache_dir

TYPE_CHECKING = False  # typing, dataclasses, json and pathlib would double `mesh --help`
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Iterable

#: Bumped whenever the stored shape changes.
INDEX_FORMAT = 2
#: Index files kept per cache directory (one per interpreter / path / filter combination).
KEEP_INDEXES = 32
DISCOVERY_VARIABLES = ("MESH_LOAD_PLUGINS", "MESH_DISABLE_PLUGINS")


class CliCommandInfo:
    """What ``mesh --help`` shows of a subcommand whose plugin is not imported."""

    __slots__ = ("owner", "help", "short_help", "hidden")

    def __init__(self, owner: str, help: str | None = None, short_help: str | None = None,
                 hidden: bool = False) -> None:
        self.owner, self.help, self.short_help, self.hidden = owner, help, short_help, hidden


class IndexedPlugin:
    """One plugin as the index knows it."""

    __slots__ = ("name", "target", "distribution", "version", "hooks", "registered")

    def __init__(self, name: str, target: str, distribution: str, version: str,
                 hooks: list[str], registered: dict[str, list[str]]) -> None:
        self.name = name
        #: The entry point's value (``module`` or ``module:attribute``).
        self.target = target
        self.distribution = distribution
        self.version = version
        self.hooks = hooks
        #: kind ("config section", "backend", "work type", "cli command", ...) → names.
        self.registered = registered


class PluginIndex:
    """Every plugin of one environment and what it registered."""

    def __init__(self) -> None:
        self.plugins: dict[str, IndexedPlugin] = {}
        #: section name → (owner, version-2 plural key)
        self.sections: dict[str, tuple[str, str]] = {}
        self.cli_commands: dict[str, CliCommandInfo] = {}
        #: ``mesh --help`` as click renders it 80 columns wide (printed without click).
        self.help = ""

    def owners(self, kind: str) -> dict[str, str]:
        """Registered name → owning plugin, for one kind of registration."""
        return {name: plugin.name for plugin in self.plugins.values()
                for name in plugin.registered.get(kind, ())}

    def section_owners(self, names: Iterable[str]) -> tuple[set[str], set[str]]:
        """The plugins owning the given section names (singular or version-2 plural), and the
        names no plugin owns."""
        by_name: dict[str, str] = {}
        for section, (owner, plural) in self.sections.items():
            by_name.setdefault(plural, owner)
        for section, (owner, _) in self.sections.items():
            by_name[section] = owner  # a singular name wins over another section's plural
        owners, unknown = set(), set()
        for name in names:
            owner = by_name.get(name)
            if owner is None:
                unknown.add(name)
            else:
                owners.add(owner)
        return owners, unknown

    def to_data(self) -> dict[str, Any]:
        """Plain data (what :mod:`marshal` stores)."""
        return {"plugins": [[getattr(p, k) for k in IndexedPlugin.__slots__]
                            for p in self.plugins.values()],
                "sections": {k: list(v) for k, v in self.sections.items()},
                "cli_commands": {k: [getattr(v, f) for f in CliCommandInfo.__slots__]
                                 for k, v in self.cli_commands.items()},
                "help": self.help}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> PluginIndex:
        index = cls()
        index.plugins = {p[0]: IndexedPlugin(*p) for p in data["plugins"]}
        index.sections = {k: (v[0], v[1]) for k, v in data["sections"].items()}
        index.cli_commands = {k: CliCommandInfo(*v) for k, v in data["cli_commands"].items()}
        index.help = data["help"]
        return index


# -- where the index lives, and when it is still true -----------------------------------------


def _search_path() -> list[str]:
    """``sys.path`` without the entry Python put first for the script, ``-m`` or ``-c``."""
    paths = list(sys.path)
    if paths and not sys.flags.safe_path:
        paths = paths[1:]
    return paths


def _key() -> str:
    """What an index is for: this interpreter, search path and discovery variables."""
    from mesh import __version__

    return repr((INDEX_FORMAT, __version__, sys.prefix, sys.version, _search_path(),
                 [os.environ.get(name) for name in DISCOVERY_VARIABLES]))


def index_path(key: str | None = None) -> str:
    """The index file for ``key`` (default: this environment's).  The name is a checksum of
    the key, which the file repeats: a clash only costs a rebuild."""
    key = _key() if key is None else key
    return os.path.join(cache_dir(), f"plugins-{zlib.crc32(key.encode()):08x}.marshal")


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _source_files(modules: Iterable[str]) -> list[str]:
    """Every ``.py`` file of the top-level packages of ``modules`` (already imported)."""
    files: set[str] = set()
    for module_name in modules:
        top = sys.modules.get(module_name.partition(".")[0])
        origin = getattr(top, "__file__", None)
        if not origin:
            continue
        if os.path.basename(origin) != "__init__.py":
            files.add(origin)
            continue
        for root, dirs, names in os.walk(os.path.dirname(origin)):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            files.update(os.path.join(root, n) for n in names if n.endswith(".py"))
    return sorted(files)


def fingerprint(files: Iterable[str]) -> dict[str, int | None]:
    """Modification times of the search path directories and of ``files``."""
    return {path: _mtime(path or ".") for path in [*_search_path(), *files]}


# -- reading and writing ------------------------------------------------------------------------


def read_index() -> PluginIndex | None:
    """The stored index if it is still true for this environment, else None."""
    key = _key()
    try:
        with open(index_path(key), "rb") as stored_file:
            stored = marshal.load(stored_file)
        if stored.get("format") != INDEX_FORMAT or stored.get("key") != key:
            return None
        recorded: dict[str, int | None] = stored["fingerprint"]
        if any(_mtime(path or ".") != mtime for path, mtime in recorded.items()):
            return None
        return PluginIndex.from_data(stored["index"])
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError, IndexError):
        return None


class BuildLock:
    """``with BuildLock():`` while this environment's index is rebuilt: processes that find
    it stale at the same moment (a hundred nodes starting at once after an upgrade) wait for
    the first one's index instead of each importing every plugin.  Does nothing where the
    cache directory cannot be written."""

    def __enter__(self) -> BuildLock:
        import fcntl

        self._fd = -1
        try:
            os.makedirs(cache_dir(), mode=0o700, exist_ok=True)
            self._fd = os.open(index_path() + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError:
            self.__exit__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def write_index(index: PluginIndex) -> None:
    """Store ``index`` for this environment (atomically; a failure to write is not an error)."""
    import tempfile

    modules = [plugin.target.partition(":")[0] for plugin in index.plugins.values()]
    key = _key()
    record = {"format": INDEX_FORMAT, "key": key,
              "fingerprint": fingerprint(_source_files(modules)), "index": index.to_data()}
    path = index_path(key)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".plugins-", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            marshal.dump(record, out)
        os.replace(tmp, path)
        _prune(directory)
    except (OSError, ValueError):
        pass


def _prune(directory: str) -> None:
    """Keep the :data:`KEEP_INDEXES` most recently written index files."""
    files = sorted((os.path.join(directory, name) for name in os.listdir(directory)
                    if name.startswith("plugins-") and name.endswith(".marshal")),
                   key=lambda p: _mtime(p) or 0, reverse=True)
    for old in files[KEEP_INDEXES:]:
        try:
            os.unlink(old)
        except OSError:
            pass
