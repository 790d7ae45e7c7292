"""A node always finishes stopping: a cancellation that something swallowed is not the end.

Found by the 300-node bench: when every node got SIGTERM at once, a few dozen kept running for
ever.  Their tcp-peer redial loop had been cancelled in the same loop turn as its dial failed
with "connection refused"; Python 3.11's ``asyncio.wait_for`` then raises the dial's error and
drops the cancellation, so the loop logged ``backend_dial_failed`` and dialled again, and
``Node.shutdown`` waited on it for ever.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from mesh.net.backend import Backoff, redial_loop
from mesh.tasks import cancel_and_wait, stop_other_tasks

ROOT = Path(__file__).resolve().parent.parent


async def swallow_one_cancellation() -> None:
    """Be cancelled once and carry on, as ``asyncio.wait_for`` does when its inner future
    finished in the same turn (the task's ``cancelling()`` count stays 1)."""
    asyncio.current_task().cancel()  # type: ignore[union-attr]
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        pass


async def immortal() -> None:
    """A task that ignores every cancellation (a plugin bug)."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


class RefusedHost:
    """The part of a node that :func:`redial_loop` uses while every dial fails."""

    node_id = "stopper"

    async def run_session(self, session: object, options: object) -> str:
        raise AssertionError("no dial succeeds here")

    async def wait_link_down(self, peer: str) -> None:
        raise AssertionError("no dial succeeds here")


def test_redial_loop_ends_when_a_dial_swallowed_its_cancellation() -> None:
    dials = 0

    async def dial() -> object:
        nonlocal dials
        dials += 1
        await swallow_one_cancellation()
        raise ConnectionRefusedError(111, "Connect call failed")

    async def main() -> None:
        loop = redial_loop(dial, RefusedHost(), None, redial=True, what="tcp-peer test",  # type: ignore[arg-type]
                           backoff=Backoff(initial=0.01, maximum=0.01))
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await loop

    asyncio.run(main())
    assert dials == 1, f"the loop dialled {dials} times after it was cancelled"


def test_cancel_and_wait_cancels_again_what_swallowed_a_cancellation() -> None:
    cancellations = 0

    async def stubborn() -> None:
        nonlocal cancellations
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancellations += 1
                if cancellations == 2:
                    raise

    async def main() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await cancel_and_wait([task], patience=0.05)
        assert task.cancelled()

    asyncio.run(main())
    assert cancellations == 2


def test_cancel_and_wait_gives_up_on_a_task_that_never_stops() -> None:
    async def main() -> None:
        task = asyncio.create_task(immortal())
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await cancel_and_wait([task], patience=0.02, tries=3)
        assert not task.done()
        task.get_coro().close()  # type: ignore[union-attr]

    asyncio.run(main())


def test_stop_other_tasks_names_what_would_keep_asyncio_run_waiting() -> None:
    """Node.run ends the process itself when this finds a task (asyncio.run would wait for it
    for ever after cancelling it once more)."""
    async def main() -> None:
        stubborn = asyncio.create_task(immortal(), name="immortal")
        polite = asyncio.create_task(asyncio.sleep(3600), name="polite")
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            left = await stop_other_tasks(patience=0.02, tries=2)
        assert left == {stubborn} and polite.cancelled()
        stubborn.get_coro().close()  # type: ignore[union-attr]

    asyncio.run(main())


def test_no_asyncio_wait_for_in_shipped_code() -> None:
    """``asyncio.timeout`` keeps a cancellation that arrives as the awaited thing finishes;
    ``asyncio.wait_for`` (Python 3.11) can drop it.  Shipped code uses the former."""
    offenders = []
    for top in ("core", "plugins_builtin", "contrib"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "build" in path.relative_to(ROOT).parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bwait_for\(", line) and "asyncio" in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "use `async with asyncio.timeout(t)`:\n" + "\n".join(offenders)
