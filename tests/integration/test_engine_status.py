"""`batos serve` reports its engine in `batos status`: backend, threads, tokens per second."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kernel import wire
from kernel.client import Client

RECEIVE_S = 120.0


def test_status_names_the_backend_threads_and_rates_after_a_mission(tiny_image: Path,
                                                                    serve: Any) -> None:
    """The tiny image holds no GGUF, so `auto` serves it with torch, on the configured threads."""
    with serve(tiny_image, "--set", "engine.threads=1") as served, \
            Client(served.endpoint, timeout=RECEIVE_S) as client:
        record = wire.Mission(text="What is the capital of France?")
        final = list(client.stream(record, ref=record.id))[-1]
        assert isinstance(final, wire.Result)
        counters = client.status()["counters"]
    assert counters["engine.backend.torch"] == 1
    assert counters.get("engine.backend.llama", 0) == 0
    assert counters["engine.threads"] == 1
    assert counters["engine.passes"] >= 3  # route, draft, critique (synthesize flushes next)
    assert counters["engine.tokens"] > 0 and counters["engine.decode_ms"] > 0
    assert counters["engine.tokens_per_s"] > 0
    assert counters.get("engine.running", 0) == 0
