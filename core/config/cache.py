"""The config cache: a config file's YAML, parsed once and kept until the file changes.

A node reads its config at every start, its early control responder first of all, and
parsing YAML means importing PyYAML: a sizeable part of a node's start-up time and memory.
So :func:`mesh.config.loader.read_config` keeps what it parsed, with :mod:`marshal`, in the
cache directory (``$MESH_CACHE_DIR``, see :func:`mesh.defaults.cache_dir`), and trusts it
while the file's real path, inode, size and modification time are unchanged.  Only YAML
that parsed without error is kept, so every error is reported from the file itself.
"""

from __future__ import annotations

import marshal
import os
import zlib

from mesh import __version__
from mesh.config.scalars import SourceFloat, SourceInt
from mesh.defaults import cache_dir

#: Bumped whenever the stored shape changes.
CACHE_FORMAT = 1
#: Cached config files kept (the most recently stored).
KEEP_CONFIGS = 512
_INT, _FLOAT = "\0mesh:int", "\0mesh:float"


class Lookup:
    """The cache's answer for one file: ``hit`` and ``data``, or :meth:`store` after parsing."""

    def __init__(self, path: str, stamp: tuple[int, ...] | None, data: object = None,
                 hit: bool = False) -> None:
        self.path, self.stamp, self.data, self.hit = path, stamp, data, hit

    def store(self, data: object) -> None:
        """Keep ``data``, the file's parsed YAML, for the version of the file looked up."""
        if self.stamp is None:
            return
        record = {"format": CACHE_FORMAT, "version": __version__, "path": self.path,
                  "stamp": self.stamp, "data": _encode(data)}
        target = _cache_file(self.path)
        try:
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            tmp = f"{target}.{os.getpid()}.tmp"
            # the config may hold what only its owner may read: so does its copy
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                           "wb") as out:
                marshal.dump(record, out)
            os.replace(tmp, target)
            _prune(os.path.dirname(target))
        except (OSError, ValueError):
            pass  # a cache that cannot be written only costs the parse next time


def lookup(path: str) -> Lookup:
    """What the cache holds for the config file ``path`` (stat'ed before it is read, so a file
    changed while it is read is parsed again next time)."""
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError:
        return Lookup(path, None)
    stamp = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    try:
        with open(_cache_file(real), "rb") as stored_file:
            stored = marshal.load(stored_file)
        if (stored["format"], stored["version"], stored["path"], stored["stamp"]) == (
                CACHE_FORMAT, __version__, real, stamp):
            return Lookup(real, stamp, _decode(stored["data"]), hit=True)
    except (OSError, ValueError, EOFError, KeyError, TypeError):
        pass
    return Lookup(real, stamp)


def _cache_file(real: str) -> str:
    return os.path.join(cache_dir(), f"config-{zlib.crc32(real.encode()):08x}.marshal")


def _prune(directory: str) -> None:
    names = [os.path.join(directory, n) for n in os.listdir(directory)
             if n.startswith("config-") and n.endswith(".marshal")]
    if len(names) <= KEEP_CONFIGS:
        return
    names.sort(key=lambda p: os.stat(p).st_mtime_ns, reverse=True)
    for old in names[KEEP_CONFIGS:]:
        try:
            os.unlink(old)
        except OSError:
            pass


def _encode(value: object) -> object:
    """``value`` with the numbers that keep their source text as marked tuples (marshal
    stores plain ints and floats only)."""
    if isinstance(value, SourceInt):
        return (_INT, int(value), value.text)
    if isinstance(value, SourceFloat):
        return (_FLOAT, float(value), value.text)
    if isinstance(value, dict):
        return {_encode(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return type(value)(_encode(v) for v in value)
    return value


def _decode(value: object) -> object:
    if isinstance(value, tuple) and len(value) == 3 and value[0] in (_INT, _FLOAT):
        return (SourceInt if value[0] == _INT else SourceFloat)(value[1], value[2])
    if isinstance(value, dict):
        return {_decode(k): _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return type(value)(_decode(v) for v in value)
    return value
