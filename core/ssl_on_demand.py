"""asyncio without OpenSSL until something uses TLS.

Importing asyncio imports :mod:`ssl`, which maps OpenSSL's libcrypto into the process: about
4 MB of an idle node's memory and 15 ms of its start, although most nodes never speak TLS.
:func:`import_asyncio` imports asyncio while ``import ssl`` fails (asyncio then holds
``ssl = None``, as on a Python built without ssl) and installs an import hook: the first
``import ssl`` anywhere in the process later (the tls plugin, websockets, aioquic, a plugin of
your own) loads the real module and hands it to asyncio's modules before the importer gets it,
so anything that can build an ``SSLContext`` finds asyncio able to use it.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec, PathFinder

from mesh import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from types import ModuleType

#: asyncio's modules that bind ``ssl`` when they are imported (CPython 3.11 - 3.13).
ASYNCIO_SSL_MODULES = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


def import_asyncio() -> None:
    """Import asyncio without ssl if neither is imported yet; a no-op otherwise."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]  # `import ssl` raises ImportError
    try:
        __import__("asyncio")
    finally:
        del sys.modules["ssl"]
    sys.meta_path.insert(0, _SslFinder())


def give_asyncio_ssl(ssl: ModuleType) -> None:
    """Let asyncio's modules use ``ssl`` (what they would have bound at import)."""
    for name in ASYNCIO_SSL_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", None) is None:
            module.ssl = ssl  # type: ignore[attr-defined]
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None:
        sslproto.SSLAgainErrors = (ssl.SSLWantReadError,  # type: ignore[attr-defined]
                                   ssl.SSLSyscallError)


class _SslFinder:
    """Finds the real ``ssl`` once, and hands it to asyncio right after it is executed."""

    def find_spec(self, name: str, path: object = None, target: object = None,
                  ) -> ModuleSpec | None:
        if name != "ssl":
            return None
        sys.meta_path.remove(self)
        spec = PathFinder.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _GivingLoader(spec.loader)
        return spec


class _GivingLoader:
    def __init__(self, loader: object) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[attr-defined]

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)  # type: ignore[attr-defined]
        give_asyncio_ssl(module)
