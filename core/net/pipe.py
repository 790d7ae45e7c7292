"""Copying bytes from one stream to another, as bridges between a socket and a mesh stream do."""

from __future__ import annotations

from typing import Awaitable, Callable


async def pipe(read: Callable[[int], Awaitable[bytes]], write: Callable[[bytes], object],
               drain: Callable[[], Awaitable[None]], finish: Callable[[], object], *,
               chunk: int = 65536) -> None:
    """Copy from ``read`` to ``write`` (waiting on ``drain``) until EOF, then call ``finish``
    (typically a half-close of the writing side).  Errors propagate to the caller."""
    while data := await read(chunk):
        write(data)
        await drain()
    finish()
