"""container work type: each ``work-container`` section runs every unit in a podman container.

A unit is one ``podman run -i`` of the configured image, launched through the ``command`` work
type's detached runner (:mod:`mesh_builtin.command_runner`), so it gets the same guarantees: the
unit's ``stdin`` file is the container's stdin, stdout and stderr go to ``stdout`` byte for byte
(``--log-driver=passthrough`` hands the files straight to the container), the exit code becomes
``exit status N``, and the unit survives the node being killed and restarted.

What this module adds to the command type:

* the podman command line, built as an argv list from the config (:func:`podman_argv`); no shell
  ever sees it.  ``ExtraData.Params`` holds it (shell-quoted) once the unit starts.
* a deterministic container name per unit, ``mesh-<node>-<unit>``, so cancel, restart and
  release find the container without any record of it.
* containers are not started with ``--rm``: they are removed when the runner exits (the unit is
  final), on cancel (``podman rm --force --time 0``: the runner is killed first, so the unit ends
  Canceled, not ``exit status 137``) and on release.  A unit that finished while its node was down
  keeps its stopped container until it is released.
* checks that turn podman's ``exit status 125`` into a Detail that says what to fix: with
  ``pull: never`` the image must exist locally (checked with ``podman image exists``, cached for
  :data:`IMAGE_CHECK_TTL` seconds), and bind-mount sources must exist.  Other podman failures end
  as ``exit status 125`` with podman's message at the end of the unit's stdout.

Node restart: a unit whose runner still runs is re-attached (the detached runner's machinery).
If the runner is gone, nobody holds the exit code of ``podman run`` any more; the unit is marked
Failed (``Failed to restart: runner process N is gone ...``) and its container removed, rather
than re-attached through ``podman wait``: the container may have exited unobserved, and a
second reader of its output would not be byte-exact.

Exit codes 125 (podman failed), 126 (command cannot run) and 127 (command not found) come from
podman; a workload that exits with one of them cannot be told apart from those.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from mesh import hookimpl
from mesh.config.errors import SectionValueError
from mesh.config.schema import SectionSpec
from mesh.work.worktype import UnitHandle
from mesh_builtin.command import CommandWorkType, WorkCommandConfig

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mesh.plugin_types import PluginNode, RegisterWorkType

log = structlog.get_logger(__name__)

PULL_POLICIES = ("never", "missing", "always", "newer")
DEFAULT_ULIMITS = ("nofile=20000:20000", "nproc=32768:32768")
IMAGE_CHECK_TTL = 60.0  # seconds a successful `podman image exists` is trusted
PODMAN_TIMEOUT = 60.0  # seconds for podman housekeeping commands (image exists, rm)

_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_.-]")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s?([kKmMgGtTpP][iI]?)?[bB]?$")  # podman's RAMInBytes
_ULIMIT = re.compile(r"^[a-z]+=-?\d+(:-?\d+)?$")
_ENV_NAME = re.compile(r"^[^=\0]+$")


@dataclass(frozen=True)
class Mount:
    """One bind mount, parsed from ``SRC:DST[:rw|ro]``."""

    source: str
    target: str
    writable: bool = False

    @classmethod
    def parse(cls, text: str) -> "Mount":
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"{text!r} is not SRC:DST or SRC:DST:MODE (paths may not contain ':')")
        source, target, *mode = parts
        if not (source.startswith("/") and target.startswith("/")):
            raise ValueError(f"{text!r}: source and destination must be absolute paths")
        if mode and mode[0] not in ("ro", "rw"):
            raise ValueError(f"{text!r}: mode must be 'ro' or 'rw', got {mode[0]!r}")
        return cls(source, target, bool(mode) and mode[0] == "rw")

    def volume(self) -> str:
        return f"{self.source}:{self.target}:{'rw' if self.writable else 'ro'}"


@dataclass
class WorkContainerConfig:
    worktype: str = field(metadata={"doc": "Name of the work type that clients submit."})
    image: str = field(metadata={
        "doc": "Image to run (e.g. `localhost/runner:1`); with `pull: never` it must be in "
               "podman's local storage."})
    command: list[str] = field(default_factory=list, metadata={
        "doc": "Command to run in the container: a list is the argv as is, a single string is "
               "split like a shell does. Empty: the image's CMD."})
    params: str = field(default="", metadata={
        "doc": "Arguments appended to `command`, split like a shell does (quotes and "
               "backslashes; no variable expansion). With an empty `command` they replace the "
               "image's CMD."})
    allowruntimeparams: bool = field(default=False, metadata={
        "doc": "Allow the submitter to append arguments with the `params` work parameter."})
    env: dict[str, str] = field(default_factory=dict, metadata={
        "doc": "Environment variables set in the container (`--env`); the values are visible "
               "in the unit's ExtraData, so do not put secrets here."})
    mounts: list[str] = field(default_factory=list, metadata={
        "doc": "Bind mounts `SRC:DST[:ro|rw]` (absolute paths without ':'); read-only unless "
               "`rw` is given. A missing SRC fails the unit at start."})
    network: str = field(default="none", metadata={
        "doc": "`podman run --network`. The default `none` gives the container only a loopback "
               "interface; `bridge` and `host` let it reach the network."})
    memory: str = field(default="", metadata={
        "doc": "Memory limit (`--memory`, e.g. `256m`, `1g`). Empty: no limit."})
    cpus: float | None = field(default=None, metadata={
        "doc": "CPU limit in CPUs (`--cpus`, e.g. 0.5). Empty: no limit."})
    pids: int | None = field(default=None, metadata={
        "doc": "Limit on the number of processes (`--pids-limit`; -1 for none). Empty: podman's "
               "default."})
    pull: str = field(default="never", metadata={
        "doc": "Image pull policy (`--pull`): never, missing, always or newer."})
    runtime: str = field(default="runc", metadata={
        "doc": "OCI runtime (`--runtime`), a name or a path."})
    ulimits: list[str] = field(default_factory=lambda: list(DEFAULT_ULIMITS), metadata={
        "doc": "Resource limits (`--ulimit`, `name=soft[:hard]`); default "
               "`[\"nofile=20000:20000\", \"nproc=32768:32768\"]`, which fits hosts whose hard "
               "nofile limit is 20000 (podman's own defaults fail there)."})
    runtimeoptions: list[str] = field(default_factory=list, metadata={
        "doc": "Extra global podman options, placed before `run` (e.g. `[\"--root\", DIR, "
               "\"--runroot\", DIR2]` for a storage of its own); also used for `podman rm` and "
               "`podman image exists`."})
    runoptions: list[str] = field(default_factory=list, metadata={
        "doc": "Extra `podman run` options, placed before the image (e.g. `[\"--user\", "
               "\"1000\"]`). Do not add `--rm`, `--detach` or `--name`: the work type manages "
               "those."})
    verifysignature: bool = field(default=False, metadata={
        "doc": "Require signed work submissions (needs a work-verification section)."})
    podman: str = field(default="podman", metadata={
        "doc": "The podman executable (a path, or a name looked up in PATH)."})

    def validate(self) -> None:
        for key in ("worktype", "image", "network", "runtime", "podman"):
            value = getattr(self, key)
            if not value.strip():
                raise SectionValueError(key, "must not be empty")
            if value.startswith("-"):
                raise SectionValueError(key, f"must not start with '-' (got {value!r})")
        split = {"params": self.params}
        if len(self.command) == 1:
            split["command"] = self.command[0]
        for key, text in split.items():
            try:
                shlex.split(text)
            except ValueError as exc:
                raise SectionValueError(key, f"cannot be split into arguments: {exc}; "
                                             "check the quotes") from None
        for name, value in self.env.items():
            if not _ENV_NAME.match(name) or "\0" in value:
                raise SectionValueError("env", f"{name!r}: names must be non-empty without '=' "
                                               "and names and values without NUL bytes")
        for i, text in enumerate(self.mounts, 1):
            try:
                Mount.parse(text)
            except ValueError as exc:
                raise SectionValueError("mounts", f"element {i}: {exc}") from None
        if self.memory and not _MEMORY.match(self.memory):
            raise SectionValueError("memory", f"expected a size such as 256m or 1g, got "
                                              f"{self.memory!r}")
        if self.cpus is not None and self.cpus <= 0:
            raise SectionValueError("cpus", "must be greater than 0")
        if self.pids is not None and self.pids <= 0 and self.pids != -1:
            raise SectionValueError("pids", "must be greater than 0, or -1 for no limit")
        if self.pull not in PULL_POLICIES:
            raise SectionValueError("pull", f"must be one of {', '.join(PULL_POLICIES)}; "
                                            f"got {self.pull!r}")
        for i, text in enumerate(self.ulimits, 1):
            if not _ULIMIT.match(text):
                raise SectionValueError("ulimits", f"element {i}: expected name=soft[:hard] "
                                                   f"(e.g. nofile=1024:2048), got {text!r}")

    def command_args(self) -> list[str]:
        """``command`` as an argv (a single string is split like a shell)."""
        if len(self.command) == 1:
            return shlex.split(self.command[0])
        return list(self.command)


def container_name(node_id: str, unit_id: str) -> str:
    """``mesh-<node>-<unit>``; a node ID with characters podman refuses gets a hash suffix."""
    safe = _NAME_SAFE.sub("_", node_id)
    if safe != node_id or not safe:
        safe += "-" + hashlib.sha256(node_id.encode()).hexdigest()[:8]
    return f"mesh-{safe}-{unit_id}"


def podman_argv(config: WorkContainerConfig, *, name: str, args: list[str],
                labels: dict[str, str] | None = None) -> list[str]:
    """The full ``podman ... run ...`` argv of one unit; ``args`` are appended to ``command``."""
    argv = [config.podman, *config.runtimeoptions, "run",
            "--interactive",  # the unit's stdin file is the container's stdin
            "--name", name,
            f"--pull={config.pull}",
            f"--network={config.network}",
            "--log-driver=passthrough",  # stdout/stderr are the unit's stdout file itself
            "--detach-keys=",  # no byte sequence of the payload may detach
            "--runtime", config.runtime]
    for key, value in sorted((labels or {}).items()):
        argv += ["--label", f"{key}={value}"]
    for limit in config.ulimits:
        argv += ["--ulimit", limit]
    for key, value in config.env.items():
        argv += ["--env", f"{key}={value}"]
    for text in config.mounts:
        argv += ["--volume", Mount.parse(text).volume()]
    if config.memory:
        argv += ["--memory", config.memory]
    if config.cpus is not None:
        argv += ["--cpus", f"{config.cpus:g}"]
    if config.pids is not None:
        argv += ["--pids-limit", str(config.pids)]
    argv += config.runoptions
    argv += [config.image, *config.command_args(), *args]
    return argv


class ContainerWorkType(CommandWorkType):
    """One ``work-container`` entry: a command work type whose command is ``podman run``."""

    def __init__(self, config: WorkContainerConfig, node: PluginNode | None = None) -> None:
        super().__init__(WorkCommandConfig(
            worktype=config.worktype, command=config.podman, params=config.params,
            allowruntimeparams=config.allowruntimeparams,
            verifysignature=config.verifysignature), node)
        self.container = config
        self._image_checked = -IMAGE_CHECK_TTL  # monotonic time of the last successful check

    # -- names and command lines -----------------------------------------------------------

    def container_name(self, unit: UnitHandle) -> str:
        """The unit's container, ``mesh-<node>-<unit>`` (see :func:`container_name`)."""
        return container_name(unit.node_id, unit.unit_id)

    def podman_argv(self, unit: UnitHandle, args: list[str]) -> list[str]:
        """The ``podman run`` argv of ``unit`` (``args``: its params, split), its container
        named by :meth:`container_name` and labelled with the node and unit IDs."""
        return podman_argv(self.container, name=self.container_name(unit), args=args,
                           labels={"mesh.node": unit.node_id, "mesh.unit": unit.unit_id})

    # -- start -----------------------------------------------------------------------------

    async def start(self, unit: UnitHandle) -> None:
        started = self.start_params(unit)
        if started is None:
            return
        problem = self._missing_mount() or await self._missing_image()
        if problem:
            unit.fail(f"Error: {problem}")
            return
        # Does nothing if the unit was canceled while the image was checked.
        await self.runner.start(unit, self.podman_argv(unit, started[1]))

    def _missing_mount(self) -> str | None:
        for text in self.container.mounts:
            mount = Mount.parse(text)
            if not os.path.exists(mount.source):
                return (f"mount source {mount.source} does not exist on this node "
                        f"(mounts: {text!r})")
        return None

    async def _missing_image(self) -> str | None:
        """With ``pull: never``, why the image cannot run (None if it is there, or unknown)."""
        config = self.container
        if config.pull != "never" or time.monotonic() - self._image_checked < IMAGE_CHECK_TTL:
            return None
        code, err = await self._podman("image", "exists", config.image)
        if code == 0:
            self._image_checked = time.monotonic()
            return None
        if code == 1:
            return (f"image {config.image} is not in podman's local storage and pull is "
                    f"'never': build, load or pull it on this node first")
        if code is None:
            return err
        return None  # podman failed otherwise: `podman run` reports it (exit status 125)

    # -- the runner's end, release -------------------------------------------------------

    async def runner_ended(self, unit: UnitHandle) -> None:
        """The runner exited, was killed by cancel or is gone at restart: remove the container.

        On cancel the runner is killed first (once the container is removed, podman exits 137
        and a live runner would record Failed instead of Canceled); at restart this also ends
        an orphaned ``podman run`` at once (it would ignore SIGTERM while its container does).
        """
        await self._remove(unit)

    async def release(self, unit: UnitHandle) -> None:
        await self._remove(unit)

    # -- podman housekeeping ---------------------------------------------------------------

    async def _remove(self, unit: UnitHandle) -> None:
        """``podman rm --force --time 0`` the unit's container (nothing if it does not exist)."""
        name = self.container_name(unit)
        code, err = await self._podman("rm", "--force", "--ignore", "--time", "0", name)
        if code == 0:
            log.debug("container_removed", unit_id=unit.unit_id, container=name)
        else:
            log.warning("container_remove_failed", unit_id=unit.unit_id, container=name,
                        code=code, error=err)

    async def _podman(self, *args: str) -> tuple[int | None, str]:
        """Run ``podman <runtimeoptions> args``: (exit code, stderr), or (None, why it failed)."""
        argv = [self.container.podman, *self.container.runtimeoptions, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return None, (f"cannot run podman executable {self.container.podman!r}: "
                          f"{exc.strerror or exc}; install podman or set `podman` in the "
                          f"work-container section")
        try:
            async with asyncio.timeout(PODMAN_TIMEOUT):
                _, err = await proc.communicate()
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return None, f"podman {args[0]} did not finish within {PODMAN_TIMEOUT:g} s"
        return proc.returncode, err.decode(errors="replace").strip()


@hookimpl
def mesh_register_work_types(register: RegisterWorkType) -> None:
    register(SectionSpec("work-container", WorkContainerConfig,
                         doc="A work type that runs each unit in a podman container."),
             ContainerWorkType)
