"""The final size and SHA-256 of a unit's stdout, recorded when the unit becomes final.

A unit's status then carries ``StdoutFinalSize`` and ``StdoutSHA256`` (extra fields that
Receptor and receptorctl ignore), so a truncated or corrupted copy of the results is caught:
by a controller that mirrored a remote unit, by ``mesh work results`` at EOF, and by
``mesh work results --verify`` (the ``work verify`` control command) later.

Who records them: the command runner for its units (hashing while the command writes); the
unit store for every other write that makes a unit final, at once when stdout is at most
:data:`INLINE_MAX` bytes, else the work manager adds them from a thread right after.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: Largest stdout the unit store hashes inline, in the write that makes a unit final (~10 ms).
INLINE_MAX = 8 * 1024 * 1024
CHUNK = 1024 * 1024
SIZE_FIELD, SHA256_FIELD = "StdoutFinalSize", "StdoutSHA256"
HEX_DIGITS = frozenset("0123456789abcdef")


class DigestMismatch(Exception):
    """A copy of a unit's stdout differs from the size and SHA-256 recorded for it."""


@dataclass(frozen=True)
class Digest:
    """Size and SHA-256 (hex) of a unit's complete stdout."""

    size: int
    sha256: str

    def check(self, actual: "Digest", what: str) -> None:
        """Raise :class:`DigestMismatch` naming ``what`` (e.g. ``the mirrored stdout``)
        unless ``actual`` equals this recorded digest."""
        if actual.size < self.size:
            raise DigestMismatch(f"{what} is truncated: {actual.size} of {self.size} bytes")
        if actual != self:
            raise DigestMismatch(f"{what} does not match the recorded result: {actual.size} "
                                 f"bytes with SHA-256 {actual.sha256}, recorded {self.size} "
                                 f"bytes with SHA-256 {self.sha256}")


def recorded(fields: object) -> Digest | None:
    """The digest recorded in a status dict (a file's or a ``work status`` reply), or None
    if it has none (a Receptor node, a unit that is not final) or a malformed one."""
    if not isinstance(fields, dict):
        return None
    size, sha = fields.get(SIZE_FIELD), fields.get(SHA256_FIELD)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    if not isinstance(sha, str) or len(sha) != 64 or not set(sha.lower()) <= HEX_DIGITS:
        return None
    return Digest(size, sha.lower())


class RunningDigest:
    """A digest fed in order, chunk after chunk (a client reading a results stream)."""

    def __init__(self) -> None:
        import hashlib  # here: ~5 ms (OpenSSL) that a node start need not pay

        #: Bytes fed so far.
        self.pos = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes | memoryview) -> None:
        self._hash.update(chunk)
        self.pos += len(chunk)

    def result(self) -> Digest:
        return Digest(self.pos, self._hash.hexdigest())


def file_digest(path: Path | str, limit: int | None = None) -> Digest:
    """The digest of the file at ``path`` as it is now (a missing file is empty), of its
    first ``limit`` bytes if given: what a process the unit started wrote after the unit
    ended is no part of its results (a final unit's results stream ends at the recorded
    size too, as Receptor's ends at StdoutSize)."""
    running = RunningDigest()
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return running.result()
    try:
        while chunk := os.read(fd, CHUNK if limit is None else min(CHUNK, limit - running.pos)):
            running.update(chunk)
    finally:
        os.close(fd)
    return running.result()
