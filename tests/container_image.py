"""Podman in a scratch directory, and the local test images, built without any registry.

* :class:`Scratch` keeps every podman state file under one directory (``--root``, ``--runroot``,
  ``--tmpdir`` and a ``containers.conf`` named by ``CONTAINERS_CONF``), with runc, cgroupfs, no
  network and ulimits that fit this machine (see shared/reference/real-components.md).
* :func:`build_busybox_image`: ``localhost/busybox:test``, a static busybox (from the Debian package
  ``busybox-static``, fetched with ``apt-get download`` and cached) with a few applet links.
* :func:`build_host_python_image`: ``localhost/hostpython:test``, an almost empty root file system
  (``/bin``, ``/lib`` ... as links into ``/usr``, a ``/etc/passwd``) meant to be run with the host's
  ``/usr``, Python installation and virtualenv bind-mounted read-only: Python and ansible-runner in a
  container without building a 100 MB image.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

BUSYBOX_IMAGE = "localhost/busybox:test"
HOST_PYTHON_IMAGE = "localhost/hostpython:test"
BUSYBOX_APPLETS = ("sh", "echo", "cat", "sleep", "hostname", "wc", "head", "tr", "ls", "env",
                   "true", "false", "seq", "touch", "id")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mesh-tests"
TIMEOUT = 120


class ImageUnavailable(Exception):
    """A test image cannot be built here; the message says why (tests skip with it)."""


def podman_missing() -> str | None:
    """Why podman-backed tests cannot run here, or None."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed (apt-get install -y podman runc)")
    return None


@dataclass
class Scratch:
    """A podman whose whole state lives under ``root``."""

    root: Path

    @classmethod
    def create(cls) -> "Scratch":
        # Short path: conmon's attach socket lives under the runroot (108-byte limit).
        scratch = cls(Path(tempfile.mkdtemp(prefix="mesh-pm-")))
        for sub in ("tmp", "netconf"):
            (scratch.root / sub).mkdir()
        d = scratch.root
        scratch.conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            'netns = "none"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            f'tmp_dir = "{d}/tmp"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{d}/events.log"\n'
            'cgroup_manager = "cgroupfs"\n'
            "[network]\n"
            f'network_config_dir = "{d}/netconf"\n')
        return scratch

    @property
    def conf(self) -> Path:
        return self.root / "containers.conf"

    @property
    def global_args(self) -> list[str]:
        """For ``runtimeoptions``: podman's global options that select this storage."""
        return ["--root", str(self.root / "root"), "--runroot", str(self.root / "run"),
                "--tmpdir", str(self.root / "tmp")]

    @property
    def env(self) -> dict[str, str]:
        return {"CONTAINERS_CONF": str(self.conf)}

    def podman(self, *args: str, check: bool = True,
               timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["podman", *self.global_args, *args], capture_output=True,
                                text=True, timeout=timeout, env={**os.environ, **self.env},
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)} exited {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result

    def containers(self) -> dict[str, str]:
        """Every container (running or not) by name → status."""
        out = self.podman("ps", "--all", "--format", "{{.Names}}\t{{.Status}}").stdout
        return dict(line.split("\t", 1) for line in out.splitlines() if line)

    def destroy(self) -> None:
        """Remove every container and image, then the directory."""
        self.podman("rm", "--all", "--force", "--time", "0", check=False)
        self.podman("rmi", "--all", "--force", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def import_rootfs(self, rootfs: Path, image: str, cmd: str) -> str:
        archive = rootfs.parent / (rootfs.name + ".tar")
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        self.podman("import", "--change", f"CMD {cmd}", str(archive), image)
        return image


def busybox_binary() -> Path:
    """A static busybox from the Debian package (downloaded once into the cache)."""
    binary = CACHE / "busybox"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        try:
            result = subprocess.run(["apt-get", "download", "busybox-static"], cwd=work,
                                    capture_output=True, text=True, timeout=TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ImageUnavailable(f"cannot run apt-get download busybox-static: {exc}") from None
        debs = list(Path(work).glob("busybox-static_*.deb"))
        if result.returncode != 0 or not debs:
            raise ImageUnavailable("apt-get download busybox-static failed (run apt-get update "
                                   f"first?): {result.stderr.strip()[-300:]}")
        subprocess.run(["dpkg", "-x", str(debs[0]), str(Path(work) / "x")], check=True,
                       timeout=TIMEOUT)
        extracted = Path(work) / "x" / "bin" / "busybox"
        os.replace(extracted, binary)
    return binary


def build_busybox_image(scratch: Scratch) -> str:
    rootfs = scratch.root / "busybox-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "tmp").mkdir(mode=0o1777)
    (rootfs / "tmp").chmod(0o1777)
    shutil.copy2(busybox_binary(), rootfs / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    return scratch.import_rootfs(rootfs, BUSYBOX_IMAGE, '["/bin/sh"]')


def build_host_python_image(scratch: Scratch) -> str:
    """An image to run with the host's /usr (and Python prefixes) bind-mounted read-only."""
    rootfs = scratch.root / "hostpython-rootfs"
    for sub in ("usr", "etc", "root", "tmp"):
        (rootfs / sub).mkdir(parents=True)
    (rootfs / "tmp").chmod(0o1777)
    for link in ("bin", "sbin", "lib", "lib64"):
        (rootfs / link).symlink_to(f"usr/{link}")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\n")
    return scratch.import_rootfs(rootfs, HOST_PYTHON_IMAGE, '["/bin/sh"]')
