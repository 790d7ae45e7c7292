"""mesh: a Receptor-compatible overlay network with a small plugin kernel.

Importing ``mesh`` costs nothing beyond this file: ``hookimpl`` (and with it pluggy) is made
on first use, so ``mesh --version`` and the early start of a node do not pay for pluggy.
"""

from __future__ import annotations

__version__ = "0.1.0"
#: The name to ``pip install`` ("mesh" on PyPI is an unrelated project): plugins depend on it.
DISTRIBUTION = "meshceptor"

TYPE_CHECKING = False  # not typing's: importing typing costs `mesh --version` a third of its time
if TYPE_CHECKING:  # pragma: no cover
    import pluggy

    #: Marker for plugin hook implementations: ``from mesh import hookimpl``.
    hookimpl: pluggy.HookimplMarker

__all__ = ["DISTRIBUTION", "hookimpl", "__version__"]


def __getattr__(name: str) -> object:
    if name == "hookimpl":
        import pluggy

        marker = pluggy.HookimplMarker("mesh")
        globals()["hookimpl"] = marker
        return marker
    raise AttributeError(f"module 'mesh' has no attribute {name!r}")
