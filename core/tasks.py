"""Small asyncio helpers shared by the kernel's long-running parts."""

from __future__ import annotations

import asyncio
import time
from typing import Iterable


async def cancel_and_wait(tasks: Iterable["asyncio.Task[object] | None"], *,
                          patience: float = 2.0, tries: int = 5) -> "set[asyncio.Task[object]]":
    """Cancel every task and wait until each has finished, ignoring how it ended.

    A task that is still running ``patience`` seconds after a cancellation is cancelled
    again (``tries`` times in all): code that swallowed one cancellation (``asyncio.wait_for``
    in Python 3.11 can) must not keep a node from stopping.  What survives every try is left
    running and logged, and returned.
    """
    pending = {task for task in tasks if task is not None}
    for _ in range(tries):
        if not pending:
            return pending
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=patience)
        for task in done:  # retrieved, so asyncio does not log them as never retrieved
            if not task.cancelled():
                task.exception()
    if pending:
        import structlog  # only here: this module is imported before logging is set up

        structlog.get_logger("mesh.tasks").error(
            "tasks_not_stopping", tasks=sorted(task.get_name() for task in pending),
            detail=f"still running after {tries} cancellations")
    return pending


async def stop_other_tasks(*, patience: float = 1.0, tries: int = 2) -> "set[asyncio.Task[object]]":
    """Cancel every other task of the running loop and wait for them; returns those that
    would not stop.  ``asyncio.run`` cancels what is left once more and then waits for it
    without a limit, so a process with such a task left must end some other way."""
    current = asyncio.current_task()
    return await cancel_and_wait([task for task in asyncio.all_tasks() if task is not current],
                                 patience=patience, tries=tries)


class DueTimer:
    """When something is next due: :meth:`request` can pull that time earlier, never later.

    :meth:`wait` returns once the due time has passed (and forgets it); while nothing is
    requested it sleeps with no timer at all, so an idle owner costs nothing.  Built on a bare
    future and ``call_later`` (not ``wait_for``, whose cancellation races in Python 3.11 can
    leave a task stuck while the node shuts down).
    """

    def __init__(self) -> None:
        #: The ``time.monotonic()`` at which it is due, or None when nothing is requested.
        self.at: float | None = None
        self._waiter: asyncio.Future[None] | None = None

    def request(self, delay: float) -> None:
        """Be due in ``delay`` seconds, unless already due earlier."""
        when = time.monotonic() + delay
        if self.at is None or when < self.at:
            self.at = when
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        """Return once the due time has passed (it may move earlier while we wait)."""
        loop = asyncio.get_running_loop()
        while True:
            delay = None if self.at is None else self.at - time.monotonic()
            if delay is not None and delay <= 0:
                self.at = None
                await asyncio.sleep(0)  # due already: still let the others run first
                return
            self._waiter = loop.create_future()
            handle = loop.call_later(delay, self._wake) if delay is not None else None
            try:
                await self._waiter
            finally:
                if handle is not None:
                    handle.cancel()
                self._waiter = None
