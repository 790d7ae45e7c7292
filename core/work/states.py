"""Work-unit states and the pure state machine that guards their transitions."""

from __future__ import annotations

from enum import IntEnum


class UnitState(IntEnum):
    """Receptor's unit states (the numbers are on the wire and on disk)."""

    PENDING = 0
    RUNNING = 1
    SUCCEEDED = 2
    FAILED = 3
    CANCELED = 4

    @property
    def label(self) -> str:
        """``StateName`` as Receptor spells it."""
        return self.name.capitalize()


def state_name(value: int) -> str:
    """``StateName`` for any stored value (``Unknown: n`` like Go for other numbers)."""
    try:
        return UnitState(value).label
    except ValueError:
        return f"Unknown: {value}"


#: Receptor counts only these as complete (a Canceled unit is not "complete" there).
COMPLETE = frozenset({UnitState.SUCCEEDED, UnitState.FAILED})
#: States after which nothing more happens to the unit's output (we also end streams here).
FINAL = frozenset({UnitState.SUCCEEDED, UnitState.FAILED, UnitState.CANCELED})

_ALLOWED: dict[UnitState, frozenset[UnitState]] = {
    UnitState.PENDING: frozenset({UnitState.RUNNING, UnitState.SUCCEEDED, UnitState.FAILED,
                                  UnitState.CANCELED}),
    UnitState.RUNNING: frozenset({UnitState.RUNNING, UnitState.SUCCEEDED, UnitState.FAILED,
                                  UnitState.CANCELED}),
    UnitState.SUCCEEDED: frozenset(),
    UnitState.FAILED: frozenset(),
    UnitState.CANCELED: frozenset({UnitState.FAILED}),
}


class TransitionError(ValueError):
    """A state change that the machine forbids (e.g. Succeeded → Running)."""


def check_transition(old: int, new: int) -> None:
    """Raise :class:`TransitionError` unless ``old → new`` is allowed.

    Same-state updates of Pending and Running are allowed (Detail or StdoutSize changes).
    A Canceled unit may still become Failed (a remote unit whose cancel failed).
    """
    try:
        old_state, new_state = UnitState(old), UnitState(new)
    except ValueError:
        raise TransitionError(f"unknown state {old} or {new}") from None
    if old_state == new_state and old_state in (UnitState.PENDING, UnitState.RUNNING):
        return
    if new_state not in _ALLOWED[old_state]:
        raise TransitionError(f"a {old_state.label} unit cannot become {new_state.label}")
