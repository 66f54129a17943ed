"""`batos chat` in a real terminal (a pseudo-terminal), on a real kernel.

Most tests run the kernel on a thread of the test (real ZeroMQ over ipc, real
ZODB) with the scripted model, so the test can see the prompts each pass
received: a follow-up question must reach the passes with the earlier turn
as context. One runs `batos serve` with the tiny random model, end to end.
The drafter holds any question containing "HOLD" until released, so Ctrl-C
comes while that answer is being written.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from actors import conversation, llm
from actors.chat_stream import WAITING
from actors.llm import GenerationRequest
from kernel.client import Client, endpoint_for
from kernel.image import Image
from tests.helpers.kernel import BATOS, running_kernel
from tests.helpers.scripted import ANSWER, DRAFT, ScriptedModel

WAIT_S = 60
PROMPT = ">>> "


@pytest.fixture
def chat_model() -> Iterator[tuple[ScriptedModel, threading.Event, threading.Event]]:
    """(model, release, reached): a HOLD question's draft waits for `release`."""
    release = threading.Event()
    reached = threading.Event()
    model = ScriptedModel()

    def draft(request: GenerationRequest) -> str:
        if "HOLD" in request.messages[-1].content:
            reached.set()
            release.wait(WAIT_S)
        return DRAFT

    model.scripts["drafter"] = draft
    llm.install_engine(model, model)
    yield model, release, reached
    release.set()
    llm.install_engine(None, None)


def spawn_chat(image_dir: Path) -> pexpect.spawn:
    return pexpect.spawn(BATOS[0], [*BATOS[1:], "chat", "--image", str(image_dir)],
                         env={**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm"},
                         encoding="utf-8", timeout=WAIT_S, dimensions=(40, 200))


def ask(child: pexpect.spawn, line: str) -> str:
    """Send a question; the text printed up to its confidence line."""
    child.sendline(line)
    child.expect(r"confidence \d\.\d\d")
    shown = str(child.before)
    child.expect_exact(PROMPT)
    return shown


def ctrl_d(child: pexpect.spawn) -> None:
    """Ctrl-D at the prompt; the chat must end. A ^D that reaches the terminal while
    readline switches its mode can be dropped by the line discipline, so it is sent
    again, at most twice more (a chat that ignores Ctrl-D still fails)."""
    for _ in range(3):
        child.sendeof()
        if child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=5) == 0:
            return
    raise AssertionError(f"Ctrl-D did not end the chat: {child.before!r}")


def test_chat_streams_answers_keeps_context_cancels_and_leaves(
        image_dir: Path,
        chat_model: tuple[ScriptedModel, threading.Event, threading.Event]) -> None:
    model, release, reached = chat_model
    with running_kernel(image_dir):
        child = spawn_chat(image_dir)
        child.expect_exact(PROMPT)
        child.sendline("/help")
        child.expect_exact("/adapters")
        child.expect_exact(PROMPT)

        shown = ask(child, "What is the capital of France?")
        assert ANSWER in shown  # the synthesis, streamed
        assert "tokens/s" in shown
        ask(child, "And which river runs through it?")
        follow_up = model.requests_for("drafter")[-1].messages[-1].content
        assert conversation.TITLE in follow_up
        assert "User: What is the capital of France?" in follow_up
        assert f"Assistant: {ANSWER}" in follow_up

        child.sendline("HOLD this one")
        assert reached.wait(WAIT_S)
        child.sendintr()
        child.expect_exact("cancelled")
        child.expect_exact(PROMPT)
        release.set()  # the held step finishes; then the mission is marked FAILED
        deadline = time.monotonic() + WAIT_S
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            held = client.send("missions", "list", None, 1)[0]
            while held["state"] != "FAILED" and time.monotonic() < deadline:
                time.sleep(0.1)
                held = client.send("missions", "list", None, 1)[0]
        assert (held["question"], held["state"], held["error"]) == \
            ("HOLD this one", "FAILED", "cancelled")
        with Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
            ids = [row["id"] for row in client.send("missions", "list", None, 3)]
        assert len({i[:8] for i in ids}) == 3  # one chat's missions differ from the start

        child.sendline("/memory")
        child.expect_exact("What is the capital of France?")
        child.expect_exact(PROMPT)
        child.sendline("/nonsense")
        child.expect_exact("unknown command /nonsense")
        ctrl_d(child)
        child.close()
        assert child.exitstatus == 0


def test_history_is_owner_only_and_comes_back_next_session(
        image_dir: Path,
        chat_model: tuple[ScriptedModel, threading.Event, threading.Event]) -> None:
    with running_kernel(image_dir):
        child = spawn_chat(image_dir)
        child.expect_exact(PROMPT)
        child.sendline("/clear")
        child.expect_exact("conversation cleared")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        history = image_dir / "chat_history"
        assert stat.S_IMODE(history.stat().st_mode) == 0o600
        assert "/clear" in history.read_text()

        again = spawn_chat(image_dir)
        again.expect_exact(PROMPT)
        again.send("\x1b[A\x1b[A")  # up twice: past /quit to /clear
        again.send("\r")
        again.expect_exact("conversation cleared")
        ctrl_d(again)
        again.close()
        assert again.exitstatus == 0


def test_chat_without_a_kernel_fails_at_once_with_its_exit_code(image_dir: Path) -> None:
    from kernel import cli_errors
    from kernel.endpoints import NoSocket

    image_dir.mkdir(parents=True)
    child = spawn_chat(image_dir)
    child.expect_exact("error:")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == dict(cli_errors.BY_TYPE)[NoSocket]


@pytest.mark.slow
def test_chat_with_the_tiny_model_through_batos_serve(tiny_image: Path, serve: Any) -> None:
    question = "What is the capital of France?"
    with serve(tiny_image, "--set", "engine.threads=1"):
        child = spawn_chat(tiny_image)
        child.timeout = 300  # the tiny model on a busy shared CPU
        child.expect_exact(PROMPT)
        shown = ask(child, question)
        assert WAITING in shown and "tokens/s" in shown
        ask(child, "And which river runs through it?")
        ctrl_d(child)
        child.close()
        assert child.exitstatus == 0
    with Image.open(tiny_image, create=False, read_only=True) as image, \
            image.reading() as root:
        missions = sorted(root["missions"].values(), key=lambda m: m.created)
        first, second = (m.summary() for m in missions)
    assert first["state"] == second["state"] == "COMPLETE"
    (block,) = [b for b in second["context"] if b.get("kind") == conversation.OPTION]
    assert block["text"] == conversation.render(
        [{"question": question, "answer": first["answer"]}])


def test_a_malformed_conversation_fails_the_mission_with_its_reason(
        image_dir: Path,
        chat_model: tuple[ScriptedModel, threading.Event, threading.Event]) -> None:
    from kernel import wire

    model, _, _ = chat_model
    with running_kernel(image_dir), Client(endpoint_for(image_dir), timeout=WAIT_S) as client:
        record = wire.Mission(text="Why?", options={conversation.OPTION: [{"question": 1}]})
        final = list(client.stream(record, ref=record.id))[-1]
    assert isinstance(final, wire.Error) and final.code == wire.ErrorCode.STEP_FAILED
    assert final.details["reason"] == conversation.REASON
    assert model.requests == []  # no pass ran
