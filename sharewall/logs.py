"""structlog configuration shared by every sharewall process (JSON lines, ISO UTC time)."""

from __future__ import annotations

import atexit
import logging
import sys

import orjson
import structlog

from sharewall.line_writer import LineWriter

# The process's stdout writer thread, when `configure_logging(writer_thread=True)` made one.
_stdout: LineWriter | None = None


def _dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


class _LineLogger:
    """structlog's logger over a `LineWriter`: each rendered event is one queued line."""

    __slots__ = ("_writer",)

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message.encode())

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure_logging(
    level: str = "info", *, json: bool | None = None, writer_thread: int | None = None
) -> None:
    """Configure structlog once: contextvars first, level, ISO UTC timestamp, JSON to stdout.

    `writer_thread` (a byte limit): lines go to stdout through `stdout_lines()`, a `LineWriter`
    (a buffer of that limit and a writer thread: a stalled reader never blocks the event loop),
    drained at exit. Without it each line is one blocking write.
    """
    global _stdout
    if json is None:
        json = not sys.stdout.isatty()
    renderer = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json
        else structlog.dev.ConsoleRenderer()
    )
    factory: object
    if writer_thread is not None:
        if _stdout is None:
            sys.stdout.flush()  # what was printed before goes first
            _stdout = LineWriter(sys.stdout.fileno(), limit=writer_thread)
            atexit.register(_stdout.close)
        logger = _LineLogger(_stdout)
        factory = lambda *_args: logger  # noqa: E731
    else:
        # One write per line (the line and its newline together): processes sharing stdout,
        # as `proxy --workers N` do, never interleave inside a line.
        factory = structlog.WriteLoggerFactory(sys.stdout)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def stdout_lines() -> LineWriter | None:
    """The process's stdout `LineWriter` (None unless logging was configured with one)."""
    return _stdout
