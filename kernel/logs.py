"""Log formatting: readable lines on a terminal, JSON lines with `--log-json`.

Only the CLI calls `configure`. Step records carry a `step` dict (actor,
selector, message id, duration, outcome); message bodies and keys are
never logged.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class ReadableFormatter(logging.Formatter):
    """`HH:MM:SS level logger: message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        step = getattr(record, "step", None)
        if isinstance(step, dict):
            text += " " + " ".join(f"{k}={v}" for k, v in step.items() if v is not None)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": round(record.created, 6), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class _Enqueue(logging.handlers.QueueHandler):
    """Hand records to the writer thread as they are: formatting happens there."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: logging.handlers.QueueListener | None = None


def configure(level: str = "INFO", as_json: bool = False) -> None:
    """Log to stderr from a writer thread; the caller's thread only enqueues.

    The kernel logs every step from its event loop, so formatting and writing
    must not happen there.
    """
    global _listener
    if _listener is not None:
        _listener.stop()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if as_json else ReadableFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(records, writer)
    _listener.start()
    atexit.register(_listener.stop)
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
