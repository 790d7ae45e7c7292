"""A node whose datadir fills up: new units fail with a clear error, finished ones stay intact.

The datadir is a 16 MiB tmpfs mounted for the test (needs root, as CI has; skipped otherwise).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from mesh.testing import Mesh, kill_runners
from work_helpers import receptorctl, status, submitted_unit, wait_state

SIZE = 16 << 20
CAT = {"work-command": {"worktype": "cat", "command": "cat"}}


@pytest.fixture
def small_disk() -> Iterator[Path]:
    mountpoint = Path(tempfile.mkdtemp(prefix="mesh-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs",
                              str(mountpoint)], capture_output=True, text=True)
    if mounted.returncode != 0:
        os.rmdir(mountpoint)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        kill_runners(mountpoint)
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        os.rmdir(mountpoint)


def _fingerprint(unit_dir: Path) -> dict[str, str]:
    return {name: hashlib.sha256((unit_dir / name).read_bytes()).hexdigest()
            for name in ("status", "stdin", "stdout")}


def test_full_datadir_fails_new_units_and_keeps_old_ones(mesh: Mesh, small_disk: Path,
                                                         tmp_path: Path) -> None:
    node = mesh.add("small", listen=False, sections=[CAT])
    node.node_extra["datadir"] = str(small_disk)
    mesh.start()
    units = small_disk / "small"

    first = tmp_path / "first"
    first.write_bytes(os.urandom(2 << 20))
    kept = submitted_unit(receptorctl(node, "work", "submit", "cat", "--payload", str(first)))
    wait_state(node, kept, {2})
    before = _fingerprint(units / kept)

    # a payload bigger than the disk: the client hears why, the unit is Failed, space is freed
    huge = tmp_path / "huge"
    huge.write_bytes(os.urandom(SIZE))
    refused = receptorctl(node, "work", "submit", "cat", "--payload", str(huge), check=False)
    assert refused.returncode != 0
    assert b"No space left on device" in refused.stdout + refused.stderr, refused
    failed = [u for u in node.control("work list") if u != kept]
    assert len(failed) == 1
    assert status(node, failed[0])["StateName"] == "Failed"
    assert "No space left on device" in status(node, failed[0])["Detail"]
    assert (units / failed[0] / "stdin").stat().st_size == 0

    # the disk completely full: a new unit cannot even be created, and none is half-made
    filler = small_disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    dirs_before = sorted(p.name for p in units.iterdir())
    refused = receptorctl(node, "work", "submit", "cat", "--payload-literal", "x", check=False)
    assert refused.returncode != 0
    assert b"cannot create a unit in" in refused.stdout + refused.stderr, refused
    assert b"No space left on device" in refused.stdout + refused.stderr, refused
    assert sorted(p.name for p in units.iterdir()) == dirs_before

    # what was there before is untouched, and the node still serves
    assert node.alive
    assert _fingerprint(units / kept) == before
    assert receptorctl(node, "work", "results", kept).stdout == first.read_bytes()

    # space again: work goes on
    filler.unlink()
    again = submitted_unit(receptorctl(node, "work", "submit", "cat", "--payload-literal", "ok"))
    wait_state(node, again, {2})
    assert receptorctl(node, "work", "results", again).stdout == b"ok\n"
