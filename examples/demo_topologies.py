"""The topologies of Demo 03 (the diamond) and Demo 04 (the large mesh) as :class:`Mesh` builders.

Tests and benches run the same shapes as the demos (the tests check that the demos' configs
match :data:`DEMO04_LINKS`).  This directory is on their ``sys.path`` (tests/conftest.py, the
bench scripts that use it, the demos' ``run.py``).
"""

from __future__ import annotations

from typing import Iterable

from mesh.testing import Mesh

#: Links of the ten-node topology of the seed's Demo 04, as (dialer, listener).
#: Reconstructed: two controllers, east and west relays, three executors, and two
#: independent paths from west-controller01 to east-executor01.
DEMO04_LINKS: tuple[tuple[str, str], ...] = (
    ("east-relayer01", "controller01"),
    ("east-relayer02", "controller01"),
    ("west-relayer01", "controller01"),
    ("west-relayer01", "west-controller01"),
    ("west-relayer02", "west-controller01"),
    ("west-relayer03", "west-relayer01"),
    ("west-relayer03", "west-relayer02"),
    ("west-relayer02", "east-relayer02"),
    ("east-executor01", "east-relayer01"),
    ("east-executor01", "east-relayer02"),
    ("west-executor01", "west-relayer03"),
    ("west-executor02", "west-relayer03"),
)
DEMO04_RELAYS = ("east-relayer01", "east-relayer02", "west-relayer01", "west-relayer02",
                 "west-relayer03")


def build_diamond(mesh: Mesh, executor_sections: Iterable[dict] = ()) -> Mesh:
    """Demo 03's diamond: controller01 → relayer01 (cost 1) / relayer02 (cost 2) → executor01."""
    mesh.add("controller01")
    mesh.add("relayer01")
    mesh.add("relayer02")
    mesh.add("executor01", listen=False, sections=executor_sections)
    mesh.link("relayer01", "controller01", cost=1.0)
    mesh.link("relayer02", "controller01", cost=2.0)
    mesh.link("executor01", "relayer01")
    mesh.link("executor01", "relayer02")
    return mesh


def build_demo04(mesh: Mesh, executor_sections: Iterable[dict] = ()) -> Mesh:
    """The ten nodes of Demo 04; every executor gets ``executor_sections``."""
    listeners = {listener for _, listener in DEMO04_LINKS}
    names = ["controller01", "west-controller01", *DEMO04_RELAYS, "east-executor01",
             "west-executor01", "west-executor02"]
    for name in names:
        sections = list(executor_sections) if "executor" in name else []
        mesh.add(name, listen=name in listeners, sections=sections)
    for dialer, listener in DEMO04_LINKS:
        mesh.link(dialer, listener)
    return mesh
