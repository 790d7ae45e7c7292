"""Small asyncio helpers shared by the kernel's long-running parts."""

from __future__ import annotations

import asyncio
from typing import Iterable


async def cancel_and_wait(tasks: Iterable["asyncio.Task[object] | None"]) -> None:
    """Cancel every task and wait until each has finished, ignoring how it ended."""
    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
