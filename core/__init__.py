"""mesh: a Receptor-compatible overlay network with a small plugin kernel."""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``from mesh import hookimpl``.
hookimpl = pluggy.HookimplMarker("mesh")

__all__ = ["hookimpl", "__version__"]
