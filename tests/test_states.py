"""The pure unit state machine (mesh.work.states)."""

from __future__ import annotations

import itertools

import pytest

from mesh.work.states import (
    COMPLETE,
    FINAL,
    TransitionError,
    UnitState,
    check_transition,
    state_name,
)

P, R, S, F, C = (UnitState.PENDING, UnitState.RUNNING, UnitState.SUCCEEDED, UnitState.FAILED,
                 UnitState.CANCELED)

ALLOWED = {
    (P, P), (P, R), (P, S), (P, F), (P, C),
    (R, R), (R, S), (R, F), (R, C),
    (C, F),  # a remote unit whose cancel failed
}


def test_values_are_receptors() -> None:
    assert [int(s) for s in (P, R, S, F, C)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("value", "name"), [
    (0, "Pending"), (1, "Running"), (2, "Succeeded"), (3, "Failed"), (4, "Canceled"),
    (5, "Unknown: 5"), (-1, "Unknown: -1"), (99, "Unknown: 99"),
])
def test_state_name(value: int, name: str) -> None:
    assert state_name(value) == name


def test_label_matches_state_name() -> None:
    for state in UnitState:
        assert state.label == state_name(int(state))


def test_complete_is_receptors_iscomplete_and_final_adds_canceled() -> None:
    assert COMPLETE == {S, F}
    assert FINAL == {S, F, C}
    assert C not in COMPLETE
    assert [s in FINAL for s in (P, R, S, F, C)] == [False, False, True, True, True]
    assert 2 in COMPLETE and 4 in FINAL  # plain ints from a status file compare equal


@pytest.mark.parametrize(("old", "new"), sorted(itertools.product(UnitState, repeat=2)))
def test_transition_table(old: UnitState, new: UnitState) -> None:
    if (old, new) in ALLOWED:
        check_transition(old, new)
        check_transition(int(old), int(new))
    else:
        with pytest.raises(TransitionError) as info:
            check_transition(old, new)
        assert str(info.value) == f"a {old.label} unit cannot become {new.label}"


def test_final_states_never_go_back() -> None:
    for old in (S, F):
        for new in UnitState:
            with pytest.raises(TransitionError):
                check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [(7, 1), (1, 7), (-1, 0)])
def test_unknown_states_are_refused(old: int, new: int) -> None:
    with pytest.raises(TransitionError, match=f"unknown state {old} or {new}"):
        check_transition(old, new)


def test_transition_error_is_a_value_error() -> None:
    assert issubclass(TransitionError, ValueError)
