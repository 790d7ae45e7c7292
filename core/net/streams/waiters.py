"""Completing the futures stream readers, writers and acceptors wait on."""

from __future__ import annotations

import asyncio


def resolve(fut: asyncio.Future[None], exc: BaseException | None = None) -> None:
    """Complete ``fut`` unless it is already done (or cancelled by a timed-out waiter)."""
    if not fut.done():
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)
