"""The log writer: every record reaches the stream, in order."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from kernel import logs

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    flags = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
    yield
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags
    if logs._writer is not None:
        logs._writer.stop()
        logs._writer = None
    root.handlers[:] = handlers
    root.setLevel(level)


def _lines(capsys: Capture) -> list[str]:
    assert logs._writer is not None
    logs._writer.stop()  # writes whatever is queued
    return capsys.readouterr().err.splitlines()


def test_records_arrive_in_order_with_step_data(capsys: Capture) -> None:
    logs.configure("INFO", as_json=False)
    log = logging.getLogger("batos.test")
    for i in range(500):
        logs.log_step(log, {"actor": "a", "selector": "s", "message_id": f"m{i}", "ok": True})
    log.debug("hidden")
    log.warning("last")
    lines = _lines(capsys)
    assert len(lines) == 501
    assert all(f"message_id=m{i} " in line for i, line in enumerate(lines[:500]))
    assert lines[0].split(" ", 1)[1].startswith("INFO    batos.test: step actor=a")
    assert "WARNING" in lines[-1] and lines[-1].endswith("last")


def test_json_lines_carry_the_step(capsys: Capture) -> None:
    logs.configure("INFO", as_json=True)
    logs.log_step(logging.getLogger("batos.test"), {"actor": "a", "duration_ms": 1.5})
    record = json.loads(_lines(capsys)[0])
    assert record["message"] == "step" and record["step"] == {"actor": "a", "duration_ms": 1.5}


def test_log_step_respects_the_level(capsys: Capture) -> None:
    logs.configure("WARNING", as_json=False)
    logs.log_step(logging.getLogger("batos.test"), {"actor": "a"})
    assert _lines(capsys) == []
