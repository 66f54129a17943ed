"""The kernel's log file: written beside stderr and rotated (`kernel.logs`), read
back by `batos logs` (`tail`) and followed across a rotation (`follow_file`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import logs
from kernel.cli_console import follow_file, tail

Capture = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if logs._writer is not None:
        logs._writer.stop()
        logs._writer = None
    root.handlers[:] = handlers
    root.setLevel(level)


def test_the_log_goes_to_the_file_too_and_rotates(tmp_path: Path, capsys: Capture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "LOG_FILE_BYTES", 4000)
    monkeypatch.setattr(logs, "LOG_FILE_BACKUPS", 2)
    path = tmp_path / logs.LOG_FILE
    logs.configure("INFO", file=path)
    log = logging.getLogger("batos.test")
    for n in range(200):
        log.info("line %04d %s", n, "x" * 40)
    assert logs._writer is not None
    logs._writer.stop()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 200
    files = [path, path.with_name("kernel.log.1"), path.with_name("kernel.log.2")]
    assert all(f.exists() and f.stat().st_size <= 4000 for f in files)
    assert not path.with_name("kernel.log.3").exists()
    kept = [line for f in reversed(files) for line in f.read_text().splitlines()]
    assert kept == err[-len(kept):]  # the newest lines, in order, as on stderr
    assert tail(path, 3) == [line + "\n" for line in err[-3:]]


def test_tail_reads_only_the_end(tmp_path: Path) -> None:
    path = tmp_path / "kernel.log"
    path.write_text("".join(f"{n}\n" for n in range(10_000)))
    assert tail(path, 2) == ["9998\n", "9999\n"]
    assert tail(path, 0) == [] and tail(tmp_path / "none.log", 5) == []
    assert len(tail(path, 20_000)) == 10_000


def test_follow_starts_at_the_end_and_survives_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "kernel.log"
    path.write_text("old\n")
    lines = follow_file(path, poll_s=0.01)
    with path.open("a") as handle:
        handle.write("one\n")
    assert next(lines) == "one\n"
    with path.open("a") as handle:
        handle.write("two\n")  # written just before the rotation
    path.rename(tmp_path / "kernel.log.1")
    path.write_text("three\n")
    assert [next(lines), next(lines)] == ["two\n", "three\n"]
    lines.close()
