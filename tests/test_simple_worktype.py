"""``mesh.work.simple.SimpleWorkType``: an in-process work type written as one coroutine, driven
directly on a real unit store (the echo plugin's tests drive one through real nodes)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import pytest
from structlog.testing import capture_logs

from mesh.testing import WatchedUnit
from mesh.work.simple import SimpleWorkType, UnitOutput
from mesh.work.states import UnitState
from mesh.work.unitstore import UnitStatus
from mesh.work.worktype import UnitHandle, WorkError

Run = Callable[[UnitHandle, BinaryIO, UnitOutput], Any]


@dataclass
class Config:
    worktype: str = "test"


@dataclass
class SignedConfig:
    worktype: str = "signed"
    verifysignature: bool = True


class Coroutine(SimpleWorkType[Config]):
    """A SimpleWorkType whose ``run`` is the coroutine function a test passes."""

    allowed_params = frozenset({"name"})

    def __init__(self, run: Run, config: Any = None) -> None:
        super().__init__(config or Config())
        self._body = run
        self.calls = 0

    async def run(self, unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str | None:
        self.calls += 1
        return await self._body(unit, stdin, stdout)


def set_state(unit: UnitHandle, state: UnitState) -> None:
    """What the kernel records after ``cancel`` returned."""
    def change(status: UnitStatus) -> None:
        status.state, status.detail = state, state.label

    unit.update(change, check=False)


def run_to_end(wt: SimpleWorkType[Any], unit: WatchedUnit) -> UnitStatus:
    """Start the unit, then wait (woken by its notifications) until it is final."""
    async def main() -> UnitStatus:
        await wt.start(unit)
        return await unit.final()

    return asyncio.run(main())


# -- running ---------------------------------------------------------------------------------


def test_output_is_reported_as_it_grows(unit_handle: Callable[..., WatchedUnit]) -> None:
    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        data = stdin.read()
        await stdout.write(data.upper())
        await stdout.write(b"!" + unit.params["name"].encode())
        return f"Wrote {stdout.size} bytes"

    wt = Coroutine(run)
    unit = unit_handle(wt, stdin=b"hello ", params={"name": "mesh"})

    status = run_to_end(wt, unit)
    assert unit.stdout == b"HELLO !mesh"
    assert (status.state, status.detail, status.stdout_size) == (UnitState.SUCCEEDED,
                                                                 "Wrote 11 bytes", 11)
    # Running first, then each write's size, then the final state: each one notified
    assert [(s.state, s.stdout_size) for s in unit.seen] == [
        (UnitState.RUNNING, 0), (UnitState.RUNNING, 6), (UnitState.RUNNING, 11),
        (UnitState.SUCCEEDED, 11)]


def test_a_run_that_returns_none_is_done(unit_handle: Callable[..., WatchedUnit]) -> None:
    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> None:
        return None

    wt = Coroutine(run)
    unit = unit_handle(wt)

    status = run_to_end(wt, unit)
    assert (status.state, status.detail, status.stdout_size) == (UnitState.SUCCEEDED, "Done", 0)
    assert unit.stdout_path.exists()


@pytest.mark.parametrize("error, detail, logged", [
    (WorkError("the input is not YAML"), "the input is not YAML", False),
    (FileNotFoundError(2, "No such file or directory", "/srv/model.bin"),
     "Error: No such file or directory: /srv/model.bin", False),
    (ValueError("boom"), "Error: ValueError: boom", True),
])
def test_an_exception_fails_the_unit(unit_handle: Callable[..., WatchedUnit], error: Exception,
                                     detail: str, logged: bool) -> None:
    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        await stdout.write(b"partial")
        raise error

    wt = Coroutine(run)
    unit = unit_handle(wt)

    with capture_logs() as logs:
        status = run_to_end(wt, unit)
    assert (status.state, status.detail, status.stdout_size) == (UnitState.FAILED, detail, 7)
    failures = [e for e in logs if e["event"] == "unit_run_failed"]
    # a bug in the plugin is logged with its traceback; a refusal or an OS error says it all
    assert [(e["unit_id"], e["work_type"]) for e in failures] == \
        ([(unit.unit_id, "test")] if logged else [])


def test_a_final_state_set_meanwhile_wins(unit_handle: Callable[..., WatchedUnit]) -> None:
    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        set_state(unit, UnitState.CANCELED)  # e.g. canceled while the run was finishing
        return "too late"

    wt = Coroutine(run)
    unit = unit_handle(wt)

    run_to_end(wt, unit)
    assert (unit.status().state, unit.status().detail) == (UnitState.CANCELED, "Canceled")


def test_a_unit_canceled_before_start_does_not_run(
        unit_handle: Callable[..., WatchedUnit]) -> None:
    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        return "ran"

    wt = Coroutine(run)
    unit = unit_handle(wt)
    set_state(unit, UnitState.CANCELED)
    asyncio.run(wt.start(unit))
    assert wt.calls == 0
    assert unit.status().state == UnitState.CANCELED


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_stops_the_run_and_waits_for_it(unit_handle: Callable[..., WatchedUnit]) -> None:
    cleaned_up = []

    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        try:
            await stdout.write(b"first")
            await asyncio.Event().wait()  # forever, until canceled
            return "never"
        finally:
            await asyncio.sleep(0.01)  # cleanup that takes a while: cancel() waits for it
            cleaned_up.append(True)

    wt = Coroutine(run)
    unit = unit_handle(wt)

    async def main() -> None:
        await wt.start(unit)
        await unit.until(lambda s: s.stdout_size > 0, what="the first write")
        await wt.cancel(unit)
        assert cleaned_up == [True]
        set_state(unit, UnitState.CANCELED)  # what the kernel does once cancel() returned
        await asyncio.sleep(0.05)
        await wt.cancel(unit)  # a second cancel finds nothing to stop

    asyncio.run(main())
    status = unit.status()
    assert (status.state, status.detail) == (UnitState.CANCELED, "Canceled")
    assert unit.stdout == b"first"


def test_cancel_of_a_unit_that_is_not_running(unit_handle: Callable[..., WatchedUnit]) -> None:
    async def run(unit: UnitHandle, stdin: BinaryIO, stdout: UnitOutput) -> str:
        return "quick"

    wt = Coroutine(run)
    unit, never_started = unit_handle(wt), unit_handle(wt)

    async def main() -> None:
        await wt.start(unit)
        await unit.final()
        await wt.cancel(unit)
        await wt.cancel(never_started)

    asyncio.run(main())
    assert (unit.status().state, unit.status().detail) == (UnitState.SUCCEEDED, "quick")


# -- restart ---------------------------------------------------------------------------------


def test_restart_fails_a_running_unit(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = Coroutine(lambda *_: None)
    unit = unit_handle(wt)
    unit.mark_running()  # as the node that stopped left it
    asyncio.run(wt.restart(unit))
    status = unit.status()
    assert (status.state, status.detail) == (
        UnitState.FAILED,
        "Failed to restart: test runs inside the node process and ended when the node stopped")


def test_restart_leaves_a_final_unit_alone(unit_handle: Callable[..., WatchedUnit]) -> None:
    wt = Coroutine(lambda *_: None)
    unit = unit_handle(wt)
    unit.succeed("Echoed 3 lines")
    asyncio.run(wt.restart(unit))
    assert (unit.status().state, unit.status().detail) == (UnitState.SUCCEEDED,
                                                           "Echoed 3 lines")


# -- params and config -----------------------------------------------------------------------


def test_declared_and_empty_params_are_accepted() -> None:
    wt = Coroutine(lambda *_: None)
    assert wt.check_params({}) is None
    assert wt.check_params({"name": "x", "params": "", "other": ""}) is None


def test_params_is_refused_in_receptors_words() -> None:
    with pytest.raises(WorkError, match="^extra params provided but not allowed$"):
        Coroutine(lambda *_: None).check_params({"params": "-n"})


def test_other_params_pass_as_with_receptors_work_types() -> None:
    assert Coroutine(lambda *_: None).check_params({"nmae": "x"}) is None


def test_name_and_signature_check_come_from_the_config() -> None:
    plain, signed = Coroutine(lambda *_: None), Coroutine(lambda *_: None, SignedConfig())
    assert (plain.name, plain.verify_signature) == ("test", False)
    assert (signed.name, signed.verify_signature) == ("signed", True)
    assert signed.config == SignedConfig()
