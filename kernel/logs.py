"""Log formatting: readable lines on a terminal, JSON lines with `--log-json`.

Only the CLI calls `configure`. Step records carry a `step` dict (actor,
selector, message id, duration, outcome); message bodies and keys are
never logged.

The kernel logs every step from its event loop, so a record costs the
logging thread as little as possible: `log_step` skips the caller lookup,
and the writer thread formats and writes records in batches. Waking a
thread per record costs more than the record (a cross-CPU wake-up, and a
second thread contending for the GIL), so the writer wakes on the first
record of a batch, lets `BATCH_WINDOW_S` gather the rest, then writes them
all at once. A line reaches the stream at most that much later.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

BATCH_WINDOW_S = 0.02

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def log_step(logger: logging.Logger, step: Mapping[str, Any]) -> None:
    """Log one step at INFO: message "step", `step` (a plain dict) as its data.

    The same record `logger.info("step", extra={"step": step})` makes, less the
    caller lookup (a walk up the stack), which no formatter here shows.
    """
    if logger.isEnabledFor(logging.INFO):
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, "step", (),
                                        None, "log_step", {"step": step}))


class ReadableFormatter(logging.Formatter):
    """`HH:MM:SS level logger: message key=value ...`."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # many records share a second: format it once
            self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
            self._second = second
        text = f"{self._stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
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


class _Lines(logging.StreamHandler):
    """A stream handler that collects formatted lines and writes them on `flush`."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
            try:
                if lines:
                    self.stream.write("".join(lines))
                super().flush()
            except (OSError, ValueError):  # the stream is gone (closed, broken pipe)
                pass  # the lines are lost, as a failing emit loses its record


_STOP = object()


class _Writer:
    """The writer thread: takes queued records a batch at a time (see the module note)."""

    def __init__(self, records: queue.SimpleQueue[Any], handler: logging.Handler) -> None:
        self.records = records
        self.handler = handler
        self._thread = threading.Thread(target=self._run, name="batos-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued, then end the thread (idempotent)."""
        if self._thread.is_alive():
            self.records.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self.records.get()]
            time.sleep(BATCH_WINDOW_S)  # records arriving meanwhile wake no one
            while True:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            if not self._write(batch):
                return

    def _write(self, batch: list[Any]) -> bool:
        """Handle `batch` in order; False once the stop mark is met."""
        for record in batch:
            if record is _STOP:
                self.handler.flush()
                return False
            if record.levelno >= self.handler.level:
                self.handler.handle(record)
        self.handler.flush()
        return True


_writer: _Writer | None = None


def configure(level: str = "INFO", as_json: bool = False) -> None:
    """Log to stderr from a writer thread; the caller's thread only enqueues."""
    global _writer
    if _writer is not None:
        _writer.stop()
    handler = _Lines(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else ReadableFormatter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    _writer = _Writer(records, handler)
    _writer.start()
    atexit.register(_writer.stop)
    # No formatter here shows a record's thread or process: skip looking them up.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(records)]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
