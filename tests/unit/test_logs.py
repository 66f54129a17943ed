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


@pytest.mark.parametrize("formatter", [logs.ReadableFormatter(), logs.JsonFormatter()],
                         ids=["readable", "json"])
def test_the_short_lane_writes_the_line_a_record_makes(formatter: logging.Formatter) -> None:
    step = {"actor": "a", "selector": "s", "message_id": "m1", "ok": True,
            "duration_ms": 0.25, "error": None}
    record = logging.getLogger("batos.test").makeRecord(
        "batos.test", logging.INFO, __file__, 0, "step", (), None, extra={"step": step})
    short = formatter.format_step(record.created, "batos.test", step)  # type: ignore[attr-defined]
    assert short == formatter.format(record)


def test_another_handler_on_the_way_gets_the_step_record(capsys: Capture) -> None:
    logs.configure("INFO", as_json=False)
    log = logging.getLogger("batos.test.extra")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    log.addHandler(Keep())
    try:
        logs.log_step(log, {"actor": "a", "message_id": "m9"})
    finally:
        log.handlers.clear()
    lines = _lines(capsys)
    assert [r.step for r in seen] == [{"actor": "a", "message_id": "m9"}]  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].endswith("step actor=a message_id=m9")
