"""structlog setup: human console on a terminal, JSON lines otherwise.

Context keys: every event of a node process carries ``node_id`` (bound by :func:`bind_node`, also
in threads and in records of the standard ``logging`` module); events about a link, session,
handshake, stream or route carry ``peer`` (the other node's ID, or its address until the ID is
known); events about a work unit carry ``unit_id``.  Libraries that log through ``logging``
(asyncio, websockets, aioquic, plugins using ``logging.getLogger``) are rendered the same way,
with the logger's name under ``logger``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any, Callable, Literal, TextIO

import structlog

LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}

LogFormat = Literal["auto", "console", "json"]

#: Libraries whose own ``logging`` output is shown from WARNING up only (their debug and info
#: records are per packet, per lock or per loop); other ``logging`` records from INFO up.
QUIET_LIBRARIES = ("asyncio", "quic", "websockets")

log = structlog.get_logger(__name__)

#: The node this process runs (set by :func:`bind_node`), for events outside its context.
_process_node_id: str | None = None


def _add_process_node_id(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    # Context variables do not reach threads or the records of other libraries' loggers; the
    # process-wide node ID does.  An explicit or context-bound node_id wins.
    if _process_node_id is not None:
        event_dict.setdefault("node_id", _process_node_id)
    return event_dict


class _StructlogHandler(logging.Handler):
    """The root handler :func:`configure_logging` installs (replaced when called again).

    It prints through a structlog ``PrintLogger``, whose lock per file also serializes
    structlog's own events: lines written from two threads never interleave.
    """

    def __init__(self, file: TextIO) -> None:
        super().__init__()
        self._printer = structlog.PrintLogger(file)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._printer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog, and the standard ``logging`` module, for this process.

    Every event goes to stderr.  ``fmt="auto"`` renders for humans when stderr is a terminal and
    JSON lines otherwise.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    context: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_process_node_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric = LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[*context, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

    # Records of the logging module (asyncio's "Task exception was never retrieved", websockets,
    # warnings) become events of the same format, not stray text lines.
    handler = _StructlogHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*context, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer]))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.INFO))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.captureWarnings(True)


def ensure_configured() -> None:
    """Configure logging from the environment (``MESH_LOG_LEVEL``, ``MESH_LOG_FORMAT``,
    ``MESH_TRACE_PLUGINS``) unless this process has configured structlog already.

    For code that may log before a command has set logging up (plugin loading in the CLI):
    without it structlog would print to stdout, into a command's output.
    """
    if structlog.is_configured():
        return
    tracing = os.environ.get("MESH_TRACE_PLUGINS", "") not in ("", "0")
    configure_logging(os.environ.get("MESH_LOG_LEVEL") or ("info" if tracing else "warning"),
                      os.environ.get("MESH_LOG_FORMAT", "auto"))  # type: ignore[arg-type]


def bind_node(node_id: str) -> None:
    """Make every later event of this process carry ``node_id``."""
    global _process_node_id
    _process_node_id = node_id
    structlog.contextvars.bind_contextvars(node_id=node_id)


def loop_exception_handler(node_id: str) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]],
                                                     None]:
    """An event-loop exception handler that logs ``unhandled_exception`` with ``node_id``.

    asyncio calls it for exceptions nobody retrieved (a task that failed and was never
    awaited, a failing callback); the event names the task and carries the traceback.
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        source = context.get("task") or context.get("future") or context.get("handle")
        name = source.get_name() if isinstance(source, asyncio.Task) else (
            repr(source) if source is not None else None)
        log.error("unhandled_exception", node_id=node_id, message=context.get("message"),
                  task=name, error=f"{type(exc).__name__}: {exc}" if exc else None,
                  exc_info=exc if exc is not None else False)

    return handle
