"""The failures of mesh streams, apart from the QUIC machinery that raises them.

Code that only catches stream errors (the control service, remote work) imports them from
here, so it does not load aioquic before a stream is used.
"""

from __future__ import annotations

#: Application error code of an abnormal close (Receptor's 500).
ERROR_FAILURE = 500


class StreamError(Exception):
    """Base class of mesh stream failures."""


class DialError(StreamError):
    """A dial produced no stream; ``str()`` is the problem (e.g. "service unknown")."""


class DialTimeout(DialError):
    """The QUIC handshake did not finish within the dial timeout."""


class StreamAborted(StreamError):
    """The connection or stream ended abnormally; ``str()`` is the reason, ``code`` the error."""

    def __init__(self, reason: str, code: int = ERROR_FAILURE) -> None:
        super().__init__(reason)
        self.code = code


class StreamClosedError(StreamError):
    """Data was written after ``write_eof()`` or ``close()``."""


class ListenerClosed(StreamError):
    """``accept()`` on a closed :class:`StreamListener`."""
