"""Structured logs (structlog): JSON lines with a correlation id per message and no personal data."""
from __future__ import annotations

import logging
import re
import secrets
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1: JSON lines escape C0 only
LOGGED_CHARS = 120
_FORBIDDEN_KEYS = frozenset({
    "name", "patient_name", "cccd", "bhyt", "birth_date", "dob", "address", "phone", "payload", "message_text",
})


def _drop_personal_fields(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: a log call that passes a personal field gets it replaced, not printed."""
    for key in _FORBIDDEN_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def loggable(text: str, limit: int = LOGGED_CHARS) -> str:
    """Sender-chosen text (a control id, an element name) as a log line may carry it: no control bytes, short."""
    return _CONTROL.sub("?", text[:limit])


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send structlog and stdlib logging to stderr in one format."""
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_personal_fields,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def new_correlation_id() -> str:
    """A fresh id that follows one message through every log line."""
    return secrets.token_hex(8)  # as unique as uuid4().hex[:16], at a fraction of its cost per message


@contextmanager
def correlation(correlation_id: str, **context: str) -> Iterator[str]:
    """Bind a correlation id (and other non-personal context) to every log line inside the block."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **context):
        yield correlation_id


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
