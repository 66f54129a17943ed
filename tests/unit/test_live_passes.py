"""The passes generating now (`batos ps`): registered around a generation, the
adapter worn read from the steward at the first piece, gone afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from actors import live_passes, steward
from actors.cli_ps import _running_pass, memory_line


@dataclass
class Worn:
    name: str


@dataclass
class StewardDouble:
    """Only what `live_passes.worn_now` reads: the adapter on the model."""

    active: Worn | None


@pytest.fixture
def double() -> Iterator[StewardDouble]:
    fake = StewardDouble(active=None)
    old = steward.install(fake)  # type: ignore[arg-type]
    yield fake
    steward.install(old)


def test_a_pass_is_listed_while_it_generates_with_the_adapter_worn(
        double: StewardDouble) -> None:
    with live_passes.running("m1", "draft", 0, "drafter"):
        before = live_passes.snapshot("m1")
        double.active = Worn("drafter")
        live_passes.streamed("m1", 3)
        double.active = Worn("critic")  # later swaps do not rewrite what this pass wore
        live_passes.streamed("m1", 2)
        live_passes.streamed("m1")  # a generator that does not count tokens adds none
        during = live_passes.snapshot("m1")
    assert before is not None and during is not None
    assert (before["pass"], before["wanted"], before["adapter"], before["pieces"],
            before["tokens"]) == ("draft", "drafter", None, 0, 0)
    assert (during["adapter"], during["pieces"], during["tokens"]) == ("drafter", 3, 5)
    assert live_passes.snapshot("m1") is None


def test_the_bare_model_and_a_failed_generation(double: StewardDouble) -> None:
    with pytest.raises(RuntimeError), live_passes.running("m2", "route", 0, "router"):
        live_passes.streamed("m2")
        assert live_passes.snapshot("m2")["adapter"] is None  # type: ignore[index]
        raise RuntimeError("the engine failed")
    assert live_passes.snapshot("m2") is None


@pytest.mark.parametrize(("entry", "shown"), [
    (None, ("-", "-")),
    ({"pass": "draft", "round": 0, "wanted": "drafter", "adapter": None, "pieces": 0,
      "started": 100.0}, ("draft 5s", "drafter (asked)")),
    ({"pass": "critique", "round": 1, "wanted": "critic", "adapter": "critic", "pieces": 3,
      "started": 40.0}, ("critique r1 1m", "critic")),
    ({"pass": "draft", "round": 0, "wanted": "drafter", "adapter": "drafter", "pieces": 9,
      "tokens": 26, "started": 101.0}, ("draft 4s 6.5 tok/s", "drafter")),
    ({"pass": "route", "round": 0, "wanted": "router", "adapter": None, "pieces": 3,
      "started": 105.0}, ("route 0s", "bare model")),
])
def test_ps_names_the_pass_now_and_its_adapter(entry: object, shown: tuple[str, str]) -> None:
    assert _running_pass(entry, 105.0) == shown


def test_ps_memory_line() -> None:
    assert memory_line({"rss_bytes": 3 << 20, "vram": None}) == "rss 3.0 MiB"
    assert memory_line({"rss_bytes": 1 << 30, "vram": {"reserved_bytes": 2 << 30,
                                                       "total_bytes": 80 << 30}}) == \
        "rss 1.0 GiB   vram 2.0 GiB reserved of 80.0 GiB"
    assert memory_line({}) == "rss -"
