"""Log formatting: readable lines on a terminal, JSON lines with `--log-json`.

Only the CLI calls `configure`. Step records carry a `step` dict (actor,
selector, message id, duration, outcome); message bodies and keys are
never logged.

The kernel logs every step from its event loop, so a record costs the
logging thread as little as possible, and the writer thread formats and
writes records in batches. Waking a thread per record costs more than the
record (a cross-CPU wake-up, and a second thread contending for the GIL), so
the writer wakes on the first record of a batch, lets `BATCH_WINDOW_S`
gather the rest, then writes them all at once. A line reaches the stream at
most that much later.

Step records take a shorter lane still: when `configure`'s writer is the
only place a step record could go (no other handler on the way up from the
logger, INFO enabled), `log_step` queues a plain tuple and the writer
formats the same line from it - no `LogRecord`, no handler chain, on a
thread that shares one GIL with the steps. Anywhere else (a test's capture
handler, an extra handler) it makes the standard record.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

BATCH_WINDOW_S = 0.02

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def log_step(logger: logging.Logger, step: Mapping[str, Any]) -> None:
    """Log one step at INFO: message "step", `step` (a plain dict) as its data.

    The same line `logger.info("step", extra={"step": step})` writes, less the
    caller lookup (a walk up the stack), which no formatter here shows.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    writer = _writer
    if writer is not None and writer.only_route(logger):
        writer.records.put((time.time(), logger.name, step))
        return
    logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, "step", (),
                                    None, "log_step", {"step": step}))


class ReadableFormatter(logging.Formatter):
    """`HH:MM:SS level logger: message key=value ...`."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        step = getattr(record, "step", None)
        text = self._line(record.created, record.levelname, record.name, record.getMessage(),
                          step if isinstance(step, dict) else None)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text

    def format_step(self, created: float, name: str, step: dict[str, Any]) -> str:
        """The line `format` makes of a step record."""
        return self._line(created, "INFO", name, "step", step)

    def _line(self, created: float, level: str, name: str, message: str,
              step: dict[str, Any] | None) -> str:
        second = int(created)
        if second != self._second:  # many records share a second: format it once
            self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
            self._second = second
        text = f"{self._stamp} {level:<7} {name}: {message}"
        if step is not None:
            text += " " + " ".join(f"{k}={v}" for k, v in step.items() if v is not None)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        data = _head(record.created, record.levelname, record.name, record.getMessage())
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)

    def format_step(self, created: float, name: str, step: dict[str, Any]) -> str:
        """The line `format` makes of a step record."""
        data = _head(created, "INFO", name, "step")
        data["step"] = step
        return json.dumps(data, default=str)


def _head(created: float, level: str, name: str, message: str) -> dict[str, Any]:
    return {"time": round(created, 6), "level": level, "logger": name, "message": message}


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

    def emit_step(self, created: float, name: str, step: dict[str, Any]) -> None:
        """A step queued by `log_step`'s short lane, as `emit` writes its record."""
        formatter: Any = self.formatter
        try:
            self._lines.append(formatter.format_step(created, name, step) + self.terminator)
        except Exception:  # the standard record's path reports it (handleError)
            record = logging.makeLogRecord({"name": name, "levelno": logging.INFO,
                                            "levelname": "INFO", "msg": "step",
                                            "created": created, "step": step})
            self.emit(record)

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

    def __init__(self, records: queue.SimpleQueue[Any], handler: _Lines) -> None:
        self.records = records
        self.handler = handler
        self.enqueue = _Enqueue(records)
        self._thread = threading.Thread(target=self._run, name="batos-log", daemon=True)

    def only_route(self, logger: logging.Logger) -> bool:
        """This writer is the one handler a record of `logger` reaches."""
        node: Any = logger
        while node is not None:
            handlers = node.handlers
            if node.parent is None:  # the root
                return len(handlers) == 1 and handlers[0] is self.enqueue
            if handlers:
                return False
            if not node.propagate:
                return False
            node = node.parent
        return False

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
        handler = self.handler
        for record in batch:
            if record is _STOP:
                handler.flush()
                return False
            if type(record) is tuple:  # log_step's short lane
                if handler.level <= logging.INFO:
                    handler.emit_step(*record)
            elif record.levelno >= handler.level:
                handler.handle(record)
        self.handler.flush()
        return True


_writer: _Writer | None = None


LOG_FILE = "kernel.log"  # in the image directory; `batos logs` reads it
LOG_FILE_BYTES = 10 * 2**20  # rotated at this size...
LOG_FILE_BACKUPS = 5  # ...keeping kernel.log.1 .. kernel.log.5


class _RotatingFile:
    """A text stream onto a file that the standard library's rotating handler
    rolls over (kernel.log -> kernel.log.1 ...) before a write would pass its size."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self._files = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.max_bytes = max_bytes

    def write(self, text: str) -> None:
        files = self._files
        for line in text.splitlines(keepends=True):  # a batch may span a rollover
            if files.stream is None:
                files.stream = files._open()
            size = len(line.encode("utf-8", "replace"))
            if files.stream.tell() and files.stream.tell() + size > self.max_bytes:
                files.doRollover()
                files.stream = files.stream or files._open()
            files.stream.write(line)

    def flush(self) -> None:
        self._files.flush()


class _Tee:
    """Write to every stream; one that fails does not stop the others."""

    def __init__(self, *streams: Any) -> None:
        self.streams = streams

    def write(self, text: str) -> None:
        for stream in self.streams:
            with contextlib.suppress(OSError, ValueError):
                stream.write(text)

    def flush(self) -> None:
        for stream in self.streams:
            with contextlib.suppress(OSError, ValueError):
                stream.flush()


def configure(level: str = "INFO", as_json: bool = False, file: Path | None = None) -> None:
    """Log to stderr (and to `file`, rotated) from a writer thread; the caller's
    thread only enqueues."""
    global _writer
    if _writer is not None:
        _writer.stop()
    stream: Any = sys.stderr if file is None else _Tee(
        sys.stderr, _RotatingFile(file, LOG_FILE_BYTES, LOG_FILE_BACKUPS))
    handler = _Lines(stream)
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
    root.handlers[:] = [_writer.enqueue]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


class RateLimited:
    """Log lines that peers cause, at most `burst` per topic in each `window_s`.

    A peer can make the kernel log at the rate it sends (an unknown actor, a
    forbidden kind); past the burst a topic's lines are counted instead
    (`counters["log_lines_suppressed"]`) and one line says how many were left
    out when the window turns.
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, window_s: float = 10.0,
                 clock: Any = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, tuple[float, int]] = {}  # topic -> (start, lines)

    def emit(self, level: int, topic: str, text: str, args: tuple[Any, ...],
             counters: Any) -> None:
        if self.allow(topic, counters, level, text):
            self.logger.log(level, text, *args)

    def allow(self, topic: str, counters: Any, level: int = logging.INFO,
              text: str = "") -> bool:
        """One more line on `topic` may be written now (else it is counted)."""
        now = self.clock()
        start, lines = self._windows.get(topic, (now, 0))
        if now - start >= self.window_s:
            if lines > self.burst:
                self.logger.log(level, "%d more %s lines left out %s", lines - self.burst,
                                topic, text)
            start, lines = now, 0
        self._windows[topic] = (start, lines + 1)  # topics are a fixed, small set
        if lines < self.burst:
            return True
        counters.incr("log_lines_suppressed")
        return False
