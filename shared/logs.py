"""Logging, configured once per process: one line per event, carrying the request id.

Human-readable by default; JSON lines with ``LOG_FORMAT=json`` (containers).
The request id comes from a context variable that the broker layer sets around
each handled message, so handlers never pass it to the logger by hand.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_configured = False


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s"


def configure(level: str = "INFO", fmt: str = "text", *, stream: object = None) -> None:
    """Configure the root logger once; later calls only change the level."""
    global _configured
    root = logging.getLogger()
    root.setLevel(level.upper())
    if _configured:
        return
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    # Libraries that are chatty at INFO.
    for name in ("aio_pika", "aiormq", "asyncio", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured = True


@contextmanager
def request_context(request_id: object) -> Iterator[None]:
    token = request_id_var.set(str(request_id))
    try:
        yield
    finally:
        request_id_var.reset(token)
