"""Received items waiting for their reader: one queue and one wake-up for every receiver.

Link sessions (tcp, udp, websocket) queue whole messages for ``Session.recv``; endpoints
queue datagrams for ``recvfrom``.  Each adds its own bounds and flow control around it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Inbox(Generic[T]):
    """Items received and not yet taken, and the one reader waiting for them."""

    def __init__(self, closed_error: Callable[[], Exception]) -> None:
        #: Makes the exception :meth:`get` raises once the inbox is closed and empty.
        self.closed_error = closed_error
        self.items: deque[T] = deque()
        self.closed = False
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put(self, item: T) -> None:
        self.items.append(item)
        self._wake()

    def extend(self, items: Iterable[T]) -> None:
        self.items.extend(items)
        self._wake()

    def close(self) -> None:
        """No more items will come: once the queue is empty, :meth:`get` raises."""
        self.closed = True
        self._wake()

    async def wait(self) -> None:
        """Return once an item is waiting or the inbox is closed (taking nothing)."""
        while not self.items and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def get(self) -> T:
        """The oldest item, waiting for one; raises ``closed_error()`` once closed and empty."""
        while not self.items:  # wait() inlined: this is every message's path
            if self.closed:
                raise self.closed_error()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.items.popleft()
