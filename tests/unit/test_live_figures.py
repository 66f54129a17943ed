"""`status`'s live figures (`kernel.live`) and how `batos ps` shows the passes generating now."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from actors import cli_ps
from actors.engine_stats import LIVE_PASSES
from kernel import live


class Boom(RuntimeError):
    """A provider that fails."""


@pytest.fixture
def providers() -> Iterator[None]:
    yield
    for name in ("a", "b", LIVE_PASSES):
        live.register(name, None)


def test_collect_reads_every_provider_now(providers: None) -> None:
    count = iter(range(10))
    live.register("a", lambda: next(count))
    live.register("b", lambda: {"x": 1})
    assert live.collect() == {"a": 0, "b": {"x": 1}}
    assert live.collect()["a"] == 1  # read at each status, not stored
    live.register("a", None)
    assert live.collect() == {"b": {"x": 1}}


def test_a_failing_provider_is_named_and_the_rest_still_answer(providers: None) -> None:
    def fails() -> Any:
        raise Boom()

    live.register("a", fails)
    live.register("b", lambda: 2)
    assert live.collect() == {"a": {"error": "Boom"}, "b": 2}


class StatusClient:
    """What `ps` reads from a kernel: one status, one mission list."""

    def __init__(self, status: dict[str, Any]) -> None:
        self._status = status

    def status(self, _what: Any) -> dict[str, Any]:
        return self._status

    def send(self, *_args: Any) -> list[dict[str, Any]]:
        return []


@pytest.mark.parametrize(("passes", "shown"), [
    ([], "none generating"),
    ([{"persona": "drafter", "tokens": 40, "tokens_per_s": 51.5, "seconds": 1.2},
      {"persona": None, "tokens": 3, "tokens_per_s": 12.0, "seconds": 0.4}],
     "drafter 40 tokens 51.5 tokens/s  bare 3 tokens 12.0 tokens/s"),
])
def test_ps_shows_each_pass_generating_with_its_rate(passes: list[dict[str, Any]],
                                                     shown: str) -> None:
    status = {"counters": {"engine.backend.llama": 1, "engine.threads": 1},
              "live": {LIVE_PASSES: passes}, "uptime_s": 5}
    snapshot = cli_ps.take(StatusClient(status), "mission")
    assert snapshot["passes"] == passes
    assert snapshot["engine"]["backend"] == "llama"
    texts = [str(part) for part in cli_ps.render(snapshot, 0.0).renderables]
    assert f"passes  {shown}" in texts
