"""structlog set-up: JSON lines when not on a TTY (journald, containers), colours on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import TextIO


def _import_structlog_without_rich() -> None:
    """structlog renders tracebacks with rich when rich is installed, and decides so when it
    is imported: some 3 MB and 50 ms at every start. runbookd does not depend on rich (tools
    beside it may install it), and its tracebacks read well plain. Needs to run before any
    other module imports structlog; a later `import rich` elsewhere works as ever."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

import structlog  # noqa: E402

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", *, stream: TextIO | None = None, human: bool = False) -> None:
    """`human`: lines for a person to read even off a TTY (the demo's story, piped)."""
    out = stream if stream is not None else sys.stdout
    renderer: structlog.typing.Processor
    tty = out.isatty()
    if tty or human:
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
