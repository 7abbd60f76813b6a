"""Structured logs: structlog renders every record, stdlib ``logging`` ones included, as one JSON object a line
or as readable coloured lines on a terminal (setting ``log.format``)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Literal, TextIO

import structlog
from litestar.logging.config import BaseLoggingConfig
from litestar.types.callable_types import ExceptionLoggingHandler, GetLogger

from shared.settings import LogFormat, Settings

# The root handler configure_logging installs, found again by name when it is called a second time.
_HANDLER = "timebank"

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def renders_json(log_format: LogFormat, stream: TextIO) -> bool:
    """Whether lines go out as JSON: asked for, or "auto" and the stream is not a terminal."""
    if log_format == "auto":
        return not stream.isatty()
    return log_format == "json"


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Route this process's logs (stdlib loggers and structlog alike) through one structlog renderer on
    ``stream`` (stderr by default). Calling it again replaces what it installed before."""
    stream = stream or sys.stderr
    # What every record gets, whether it comes from structlog or from a stdlib logger.
    stamp: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: list[structlog.types.Processor]
    if renders_json(settings.log.format, stream):
        render = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        colors = stream.isatty()
        # Locals stay out of tracebacks: they may hold tokens or passwords. Rich colours its tracebacks whatever
        # the stream, so it only draws them on a terminal.
        tracebacks = (
            structlog.dev.RichTracebackFormatter(show_locals=False) if colors else structlog.dev.plain_traceback
        )
        render = [structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=tracebacks)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*stamp, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
    )
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[settings.log.level])
    # httpx logs every request it makes at INFO: the outbox, the audit's download and the benchmarks make thousands
    # a second, and rendering each one cost more than the request. Its warnings and errors still come through.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, _LEVELS[settings.log.level]))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *stamp,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


@dataclass
class AppLogging(BaseLoggingConfig):
    """The apps' ``logging_config``: Litestar's loggers are left to ``configure_logging`` and reach the root
    handler. (Litestar's default would install its own plain-text handlers each time an app is built.)"""

    # The apps' own handler for unexpected errors logs them (shared/problems.py); Litestar need not log them twice.
    log_exceptions: Literal["always", "debug", "never"] = "never"
    exception_logging_handler: ExceptionLoggingHandler | None = None
    disable_stack_trace: set[int | type[Exception]] = field(default_factory=set)
    traceback_line_limit: int = -1

    def configure(self) -> GetLogger:
        return logging.getLogger

    @staticmethod
    def set_level(logger: logging.Logger, level: int) -> None:
        logger.setLevel(level)
