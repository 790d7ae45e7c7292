"""The main of a bench script that runs on one scratch mesh (crash_loop, load, mesh100)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from mesh.testing import Mesh


def run_bench(prefix: str, run: Callable[[Mesh], Any], report: Callable[[Any], str],
              failures: tuple[type[BaseException], ...]) -> None:
    """``run`` on a scratch mesh, print ``report`` of its result, and exit with
    ``FAIL: <why>`` on one of ``failures``; the scratch mesh is always removed."""
    mesh = Mesh(Path(tempfile.mkdtemp(prefix=prefix)))
    try:
        print(report(run(mesh)))
    except failures as exc:
        sys.exit(f"FAIL: {exc}")
    finally:
        mesh.cleanup()
