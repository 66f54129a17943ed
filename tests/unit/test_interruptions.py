"""Steps cut short by a stopping kernel: pending again, counted, dead letters at the limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel import mailbox as mb
from kernel.errors import InterruptedTooOften, StepInterrupted
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepResult, StepRunner
from tests.helpers.actors import Stopper


def _run(image: Image, key: str) -> StepResult:
    conn = image.connection()
    try:
        return StepRunner(conn, image.config).run("stopper", key)
    finally:
        conn.close()


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_an_interrupted_message_waits_until_it_was_cut_short_too_often(
        image_dir: Path, limit: int) -> None:
    with Image.open(image_dir, overrides={"steps.max_interruptions": limit}) as image:
        with image.transaction() as root:
            root["actors"]["stopper"] = Stopper()
            key = mb.post(root, Envelope("stopper", "work", mission="m1"), capacity=10)

        for time_ in range(1, limit + 1):
            result = _run(image, key)
            assert not result.ok and isinstance(result.error, StepInterrupted)
            with image.reading() as root:
                box = root["mailboxes"]["stopper"]
                assert box.peek(key).attempt == time_  # still pending, counted
                assert len(box.dead) == 0
                assert root["actors"]["stopper"].calls == 0  # its writes rolled back

        result = _run(image, key)
        assert isinstance(result.error, InterruptedTooOften)
        assert result.error.times == limit + 1
        with image.reading() as root:
            box = root["mailboxes"]["stopper"]
            assert key not in box.pending and key in box.dead
            assert box.dead[key]["error"]["error"] == "InterruptedTooOften"


def test_a_direct_send_that_is_interrupted_leaves_nothing(image: Image) -> None:
    with image.transaction() as root:
        root["actors"]["stopper"] = Stopper()
    conn = image.connection()
    try:
        result = StepRunner(conn, image.config).run_message(Envelope("stopper", "work"))
    finally:
        conn.close()
    assert isinstance(result.error, StepInterrupted)
    with image.reading() as root:
        box = root["mailboxes"].get("stopper")
        assert box is None or (len(box), len(box.dead)) == (0, 0)


class _StoppedGenerator:
    """A generator double that finds the kernel stopping, as the engine does."""

    def generate(self, request: object, **kwargs: object) -> object:
        from actors.llm import Generation

        return Generation("half an assess", 3, -1.0, 0.1, stopped_by="cancel")


def test_an_audit_cut_short_by_a_stop_writes_no_report(image: Image) -> None:
    from actors import llm

    llm.install_engine(_StoppedGenerator(), None)  # type: ignore[arg-type]
    try:
        with image.transaction() as root:
            key = mb.post(root, Envelope("auditor", "audit"), capacity=10)
        result = _run_actor(image, "auditor", key)
    finally:
        llm.install_engine(None, None)
    assert isinstance(result.error, StepInterrupted)
    with image.reading() as root:
        assert len(root["audits"]) == 0
        assert root["mailboxes"]["auditor"].peek(key).attempt == 1


def _run_actor(image: Image, actor: str, key: str) -> StepResult:
    conn = image.connection()
    try:
        return StepRunner(conn, image.config).run(actor, key)
    finally:
        conn.close()
