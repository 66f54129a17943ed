"""Bounded work through `batos serve`: an oversized question is refused when its mission
starts, and SIGTERM stops a kernel whose pass is generating within the documented bound,
the mission resuming at the next start.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kernel import wire
from kernel.client import Client
from tests.integration.test_missions import (
    RECEIVE_S,
    check_completed_stream,
    events,
    read_image,
    run_mission,
)

STOP_BOUND_S = 30  # docs/OPERATIONS.md §3: running steps get at most 30 s at a stop
LIMIT = 1024


def test_an_oversized_question_fails_when_started_and_blocks_nothing(tiny_image: Path,
                                                                     serve: Any) -> None:
    question = "why? " * 40_000  # 200,000 bytes: under the wire's limit, over the question's
    with serve(tiny_image, "--set", f"missions.max_question_bytes={LIMIT}") as served:
        record = wire.Mission(text=question)
        with Client(served.endpoint, timeout=RECEIVE_S) as client:
            records = list(client.stream(record, ref=record.id))
        final = records[-1]
        assert isinstance(final, wire.Error) and final.code == wire.ErrorCode.STEP_FAILED
        assert final.details["reason"] == "question_too_large"
        assert (final.details["bytes"], final.details["limit"]) == (len(question), LIMIT)
        assert events(records, "pass") == []  # no pass ever read the question

        mission_id, after = run_mission(served.endpoint, "What is the capital of France?")
        check_completed_stream(mission_id, after)  # the next mission runs as usual


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(900)  # the session's `batos init` may run inside this test
def test_sigterm_stops_a_generating_pass_in_time_and_the_mission_resumes(
        real_image: Path, serve: Any, tmp_path: Path) -> None:
    image = tmp_path / "image"  # a copy: the session's image stays free of this mission
    shutil.copytree(real_image, image)
    # the gpu profile's draft (1,024 tokens) takes far longer than the bound on a CPU
    record = wire.Mission(text="Describe the water cycle.", options={"profile": "gpu"})
    with serve(image) as first, Client(first.endpoint, timeout=RECEIVE_S) as client:
        for message in client.stream(record, ref=record.id):
            assert not isinstance(message, wire.Result | wire.Error), message
            if isinstance(message, wire.Event) and message.event == "chunk" and \
                    message.data["pass"] == "draft":
                break  # the draft pass is generating
        first.proc.send_signal(signal.SIGTERM)
        try:
            code = first.proc.wait(STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_BOUND_S} s after SIGTERM:\n{first.log_tail()}")
        assert code == 0, first.log_tail()

    with read_image(image) as root:
        assert root["missions"][record.id].state_name == "DELEGATING"
        box = root["mailboxes"]["drafter"]
        [key] = box.keys()  # kept for the next start
        kept = box.peek(key)
        assert (kept.mission, kept.selector, kept.attempt) == (record.id, "draft", 1)
        assert len(root["mailboxes"]["drafter"].dead) == 0

    with serve(image) as second, Client(second.endpoint, timeout=RECEIVE_S) as client:
        for message in client.stream(wire.Watch(ref=record.id), ref=record.id):
            assert not isinstance(message, wire.Error), message
            if isinstance(message, wire.Event) and message.event in ("pass", "chunk") and \
                    message.data["pass"] == "draft":
                break  # the draft runs again (its start or its text): the mission resumed
