"""Bulk release by policy: the control service's ``work release-matching`` (a mesh extension).

A reaper (AWX runs one every minute) releases every unit that is Failed, Succeeded or
Canceled, or older than some age, in one request instead of ``work list`` and one
``work release`` per unit.  Local and remote units alike go through
:meth:`Workceptor.release`, so a remote unit is released on its remote node too.

Request forms (see docs/compatibility.md)::

    {"command": "work", "subcommand": "release-matching", "states": ["failed", "canceled"],
     "olderthan": "1h", "dryrun": true, "force": false}
    work release-matching [failed] [succeeded] [canceled] [all] [older-than=DURATION]
                          [dry-run] [force]
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import structlog

from mesh.config.duration import DurationError, parse_go_duration
from mesh.control.protocol import CommandError
from mesh.work.states import FINAL, UnitState
from mesh.work.unitstore import UnitStoreError
from mesh.work.workceptor import REMOTE, Workceptor
from mesh.work.worktype import WorkError

log = structlog.get_logger(__name__)

SUBCOMMAND = "release-matching"
#: State names a request may give (case-insensitive); ``all`` is every state.
STATE_NAMES: dict[str, frozenset[int]] = {
    "succeeded": frozenset({UnitState.SUCCEEDED}),
    "failed": frozenset({UnitState.FAILED}),
    "canceled": frozenset({UnitState.CANCELED}),
    "all": frozenset(UnitState),
}
#: JSON keys of the request besides ``command`` and ``subcommand``.
JSON_KEYS = ("states", "olderthan", "dryrun", "force", "signature")
#: Units released at the same time (each remote one waits for its remote node's reply).
CONCURRENCY = 8
USAGE = ("give one or more of the states failed, succeeded, canceled, all and/or an age "
         "(JSON \"olderthan\": \"1h\"; text older-than=1h)")

#: Checks whether a unit of the given work type may be released by this request; returns
#: why not (e.g. a missing signature), or None.
Authorize = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Selection:
    """Which units a request releases: those in ``states`` (None: any state) whose status
    file last changed at least ``older_than`` seconds ago (None: any age)."""

    states: frozenset[int] | None
    older_than: float | None
    dry_run: bool = False
    force: bool = False

    def matches(self, state: int, age: float) -> bool:
        return (self.states is None or state in self.states) and \
            (self.older_than is None or age >= self.older_than)


@dataclass
class ReleaseReport:
    """What a ``release-matching`` request did (or, dry, would do)."""

    dry_run: bool
    #: Units released (dry run: that would be released).
    released: list[str] = field(default_factory=list)
    #: Remote units whose node cannot be reached now (released when it can, as
    #: ``work release`` replies ``release pending``).
    pending: list[str] = field(default_factory=list)
    #: Unit ID → why it was not released.
    errors: dict[str, str] = field(default_factory=dict)

    def reply(self) -> dict[str, Any]:
        """The control reply: ``{"released": [...], "errors": {...}}`` (plus
        ``"release pending"`` when there are any), or ``{"would release": [...]}`` dry."""
        if self.dry_run:
            out: dict[str, Any] = {"would release": sorted(self.released)}
            if self.errors:
                out["errors"] = dict(sorted(self.errors.items()))
            return out
        out = {"released": sorted(self.released), "errors": dict(sorted(self.errors.items()))}
        if self.pending:
            out["release pending"] = sorted(self.pending)
        return out


# -- parsing ---------------------------------------------------------------------------------


def parse_request(params: dict[str, Any] | None, words: list[str]) -> Selection:
    """The selection of a JSON request (``params``) or a text one (``words`` after the
    subcommand); raises CommandError naming the bad value and the fix."""
    if params is not None:
        return _parse_json(params)
    return _parse_words(words)


def _parse_json(params: dict[str, Any]) -> Selection:
    unknown = sorted(k for k in params if k not in ("command", "subcommand", *JSON_KEYS))
    if unknown:
        raise CommandError(f"work {SUBCOMMAND}: unknown key {unknown[0]!r}; the keys are "
                           f"{', '.join(JSON_KEYS)}")
    names = params.get("states", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CommandError(f"work {SUBCOMMAND}: states must be a list of state names, "
                           f"e.g. [\"failed\", \"canceled\"]")
    older = params.get("olderthan")
    if older is not None and not isinstance(older, str):
        raise CommandError(f"work {SUBCOMMAND}: olderthan must be a duration string such as "
                           f"\"1h\" or \"30m\", not {older!r}")
    return _selection(names, older or None, dry_run=_flag(params, "dryrun"),
                      force=_flag(params, "force"))


def _flag(params: dict[str, Any], key: str) -> bool:
    value = params.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise CommandError(f"work {SUBCOMMAND}: {key} must be true or false, not {value!r}")


def _parse_words(words: list[str]) -> Selection:
    names: list[str] = []
    older: str | None = None
    dry_run = force = False
    for word in words:
        lower = word.lower()
        if lower.startswith("older-than="):
            older = word.partition("=")[2]
        elif lower == "dry-run":
            dry_run = True
        elif lower == "force":
            force = True
        elif lower in STATE_NAMES:
            names.append(lower)
        else:
            raise CommandError(f"work {SUBCOMMAND}: unknown word {word!r}; it takes "
                               f"failed, succeeded, canceled, all, older-than=DURATION, "
                               f"dry-run and force")
    return _selection(names, older, dry_run=dry_run, force=force)


def _selection(names: list[str], older: str | None, *, dry_run: bool,
               force: bool) -> Selection:
    states: frozenset[int] = frozenset()
    for name in names:
        chosen = STATE_NAMES.get(name.lower())
        if chosen is None:
            raise CommandError(f"work {SUBCOMMAND}: unknown state {name!r}; give "
                               f"{', '.join(STATE_NAMES)}")
        states |= chosen
    older_than: float | None = None
    if older is not None:
        try:
            older_than = parse_go_duration(older)
        except DurationError as exc:
            raise CommandError(f"work {SUBCOMMAND}: bad older-than: {exc}") from None
        if older_than < 0:
            raise CommandError(f"work {SUBCOMMAND}: older-than {older!r} is negative; give "
                               f"an age such as 1h")
    if not states and older_than is None:
        raise CommandError(f"work {SUBCOMMAND} needs a selection: {USAGE}")
    # an age alone selects only units that are done: a long-running unit is no debris
    return Selection(states or FINAL, older_than, dry_run, force)


# -- selection and release -------------------------------------------------------------------


class _Unit(NamedTuple):
    """What the selection looks at in one unit."""

    state: int
    work_type: str
    #: Seconds since the status file last changed.
    age: float
    #: A remote unit whose release already waits for its remote node (a retry runs).
    releasing: bool


def _inspect(wc: Workceptor, unit_id: str, now: float) -> _Unit | None:
    """The unit's state, work type and age (from its status file's last change, the clock
    of ``unit-lifecycle retention``); None if it is gone.  An unreadable status counts as
    Failed, as ``work list`` shows it."""
    try:
        changed = wc.store.changed_at(unit_id)
    except (OSError, UnitStoreError):  # gone, or never a unit ID
        return None
    try:
        status = wc.store.read(unit_id)
    except UnitStoreError:
        if not wc.store.exists(unit_id):
            return None
        return _Unit(UnitState.FAILED, "", now - changed, False)
    releasing = status.work_type == REMOTE and wc.remote.release_pending(unit_id)
    return _Unit(status.state, status.work_type, now - changed, releasing)


async def release_matching(wc: Workceptor, selection: Selection, *,
                           authorize: Authorize | None = None) -> ReleaseReport:
    """Release (dry: list) every unit ``selection`` matches, local and remote.

    ``authorize`` may refuse units by work type (the unit is then an error); it is called
    once per work type.  A unit released meanwhile by someone else counts neither as
    released nor as an error; one unit's failure does not stop the others.  A remote unit
    whose release already waits for its remote node is reported pending again without a
    new attempt (a reaper that runs every minute must not hammer a node that is down),
    unless ``force``.
    """
    report = ReleaseReport(selection.dry_run)
    now = time.time()
    chosen: list[str] = []
    refusals: dict[str, str | None] = {}
    for unit_id in wc.store.ids():
        unit = _inspect(wc, unit_id, now)
        if unit is None or not selection.matches(unit.state, unit.age):
            continue
        if authorize is not None and unit.work_type not in refusals:
            refusals[unit.work_type] = authorize(unit.work_type)  # once: verifying is costly
        refusal = refusals.get(unit.work_type)
        if refusal is not None:
            report.errors[unit_id] = refusal
        elif unit.releasing and not selection.force and not selection.dry_run:
            report.pending.append(unit_id)
        else:
            chosen.append(unit_id)
    if selection.dry_run:
        report.released = chosen
        return report
    limit = asyncio.Semaphore(CONCURRENCY)

    async def release(unit_id: str) -> None:
        async with limit:
            await _release_one(wc, unit_id, selection.force, report)

    await asyncio.gather(*(release(unit_id) for unit_id in chosen))
    log.info("units_released_matching", node_id=wc.node.node_id,
             released=len(report.released), pending=len(report.pending),
             errors=len(report.errors))
    return report


async def _release_one(wc: Workceptor, unit_id: str, force: bool,
                       report: ReleaseReport) -> None:
    try:
        reply = await wc.release(unit_id, force=force)
    except (WorkError, UnitStoreError, OSError) as exc:
        if wc.store.exists(unit_id):
            report.errors[unit_id] = str(exc)
        return
    except Exception as exc:  # one unit must not stop the others nor hide their outcome
        log.error("unit_release_failed", node_id=wc.node.node_id, unit_id=unit_id,
                  error=f"{type(exc).__name__}: {exc}",
                  exc_info=(type(exc), exc, exc.__traceback__))
        report.errors[unit_id] = f"{type(exc).__name__}: {exc}"
        return
    if "released" in reply:
        report.released.append(unit_id)
    elif "release pending" in reply:
        report.pending.append(unit_id)
    # "already released": someone else was quicker
