"""Passes of different missions run at once (a scheduler lane per mission), so the engine
can decode them together.

Real kernel, real ZODB, the real tiny model through the real torch engine.
The generator in between lets the first pass of each of two missions (both
`route` passes, steps of the one `router` actor) go on only when both are
inside `generate` at the same time: if the kernel serialized the actor's
steps, the barrier would break and the missions fail. Both passes take their
message from the router's one mailbox at once: had their commits conflicted,
a route pass would have been retried and called the engine a third time.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch

from actors import llm
from actors.engine import Engine, load_from_image
from kernel import wire
from kernel.client import Client, endpoint_for
from kernel.image import Image
from tests.helpers.kernel import running_kernel

QUESTIONS = ("What is the capital of France?", "Name a primary colour.")
RECEIVE_S = 120
MEET_S = 60


class MeetingGenerator:
    """The engine, except that the first `parties` calls wait until all of them arrived."""

    def __init__(self, engine: Engine, parties: int) -> None:
        self.engine = engine
        self.barrier = threading.Barrier(parties, timeout=MEET_S)
        self.parties = parties
        self.calls: list[str | None] = []
        self._lock = threading.Lock()

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        with self._lock:
            self.calls.append(request.persona)
            meets = len(self.calls) <= self.parties
        if meets:
            self.barrier.wait()  # BrokenBarrierError (the pass fails) if they never meet
        return self.engine.generate(request, on_text=on_text, cancel=cancel)

    def embed(self, texts: Any) -> list[list[float]]:
        return self.engine.embed(texts)


def run_missions(endpoint: str) -> list[list[wire.Message]]:
    records: list[list[wire.Message]] = [[] for _ in QUESTIONS]

    def run(i: int) -> None:
        mission = wire.Mission(text=QUESTIONS[i])
        with Client(endpoint, timeout=RECEIVE_S) as client:
            records[i] = list(client.stream(mission, ref=mission.id))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(QUESTIONS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RECEIVE_S * 4)
    return records


def test_the_route_passes_of_two_missions_run_at_once(tiny_image: Path,
                                                      torch_seed: int) -> None:
    torch.manual_seed(torch_seed)
    with Image.open(tiny_image, create=False) as image:
        engine = load_from_image(image, device="cpu")
    meeting = MeetingGenerator(engine, parties=len(QUESTIONS))
    llm.install_engine(meeting, meeting)
    try:
        with running_kernel(tiny_image):
            records = run_missions(endpoint_for(tiny_image))
    finally:
        llm.install_engine(None, None)
    assert meeting.calls[:2] == ["router", "router"]
    assert meeting.calls.count("router") == len(QUESTIONS)  # no pass retried
    assert not meeting.barrier.broken
    for stream in records:
        assert stream and isinstance(stream[-1], wire.Result), stream[-1:]
