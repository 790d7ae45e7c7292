"""Load a Python file that is not on the import path (a docs script, an excerpt's source)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def load_file(name: str, path: Path, *, register: bool = False) -> ModuleType:
    """Execute ``path`` as a module called ``name``; ``register`` puts it in ``sys.modules``
    first (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
