"""Waiting for a condition: the one polling helper of the tests, and its async twin.

Every wait polls ``condition`` against a deadline and raises :class:`TimeoutError` naming what it
waited for (and the condition's last exception, if it raised) instead of hanging or sleeping a
fixed time.  :func:`wait_until_async` is for conditions that the running event loop makes true
(a blocking sleep there would stop the very loop that has to make progress).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


class _Poll:
    """One wait's deadline and the condition's last error."""

    def __init__(self, condition: Callable[[], T], timeout: float, what: str) -> None:
        self.condition, self.timeout, self.what = condition, timeout, what
        self.deadline = time.monotonic() + timeout
        self.last_error: Exception | None = None

    def attempt(self) -> T | None:
        """The condition's value if truthy, else None; :class:`TimeoutError` past the deadline."""
        try:
            value = self.condition()
            if value:
                return value
        except Exception as exc:  # conditions may fail while things start
            self.last_error = exc
        if time.monotonic() > self.deadline:
            raise TimeoutError(f"timed out after {self.timeout}s waiting for {self.what}"
                               + (f" (last error: {self.last_error})" if self.last_error else ""))
        return None


def wait_until(condition: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll ``condition`` every ``interval`` s until it returns a truthy value, and return it.

    An exception of ``condition`` counts as "not yet" (and is named in the timeout's message).

    :raises TimeoutError: ``condition`` was not truthy within ``timeout`` s.
    """
    poll = _Poll(condition, timeout, what)
    while (value := poll.attempt()) is None:
        time.sleep(interval)
    return value


async def wait_until_async(condition: Callable[[], T], *, timeout: float = 30.0,
                           interval: float = 0.01, what: str = "condition") -> T:
    """:func:`wait_until` for a coroutine: the event loop runs between the polls.

    :raises TimeoutError: ``condition`` was not truthy within ``timeout`` s.
    """
    poll = _Poll(condition, timeout, what)
    while (value := poll.attempt()) is None:
        await asyncio.sleep(interval)
    return value
