"""The backend choice (a table) and the engine's figures for `batos status`."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import transaction
from ZODB import DB
from ZODB.MappingStorage import MappingStorage

from actors import engine_stats, llm
from actors.backends import BackendUnavailable, UnknownBackend, choose
from actors.threads import ThreadBudget
from kernel.metrics import Metrics


@pytest.mark.parametrize(("setting", "device", "installed", "has_gguf", "expected"), [
    ("torch", "cpu", True, True, "torch"),
    ("torch", "cuda", False, False, "torch"),
    ("auto", "cpu", True, True, "llama"),
    ("auto", "cpu", False, True, "torch"),
    ("auto", "cpu", True, False, "torch"),
    ("auto", "cuda", True, True, "torch"),
    ("llama", "cpu", True, True, "llama"),
])
def test_choice_table(setting: str, device: str, installed: bool, has_gguf: bool,
                      expected: str) -> None:
    assert choose(setting, device, installed=installed, has_gguf=has_gguf) == expected


@pytest.mark.parametrize(("device", "installed", "has_gguf"), [
    ("cpu", False, True), ("cpu", True, False), ("cuda", True, True)])
def test_llama_where_it_cannot_run_is_a_typed_error(device: str, installed: bool,
                                                    has_gguf: bool) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        choose("llama", device, installed=installed, has_gguf=has_gguf)
    assert caught.value.backend == "llama"


def test_an_unknown_backend_is_a_typed_error() -> None:
    with pytest.raises(UnknownBackend) as caught:
        choose("vllm", "cpu", installed=True, has_gguf=True)
    assert caught.value.setting == "vllm"


class Fixed:
    """A generator double: a fixed number of tokens."""

    embedder = None

    def __init__(self, tokens: int, fail: bool = False) -> None:
        self.tokens, self.fail = tokens, fail

    def generate(self, request: llm.GenerationRequest, *, on_text: Any = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        if self.fail:
            raise llm.Cancelled("stopped")
        return llm.Generation("x" * self.tokens, self.tokens, -0.5, 0.01)


REQUEST = llm.GenerationRequest((llm.ChatMessage("user", "hi"),), 0.0, 8)


@pytest.fixture
def root() -> Any:
    db = DB(MappingStorage())
    conn = db.open()
    conn.root()["metrics"] = Metrics()
    engine_stats.flush_into(conn.root())  # take what earlier tests buffered
    conn.root()["metrics"] = Metrics()
    engine_stats.reset_gauges(conn.root())  # this image starts from zero
    transaction.commit()
    yield conn.root()
    transaction.abort()
    conn.close()
    db.close()


def test_metered_passes_reach_the_metrics_with_backend_and_threads(root: Any) -> None:
    engine_stats.started("llama", ThreadBudget(3, 4, "PASSIVE"))
    metered = engine_stats.Metered(Fixed(7))
    metered.generate(REQUEST)
    metered.generate(REQUEST)
    moved = engine_stats.flush_into(root)
    transaction.commit()
    metrics = root["metrics"]
    assert moved["engine.passes"] == 2 and moved["engine.tokens"] == 14
    assert metrics.value("engine.backend.llama") == 1 and metrics.value("engine.threads") == 3
    assert metrics.value("engine.tokens_per_s") > 0 and metrics.value("engine.running") == 0
    engine_stats.started("torch", ThreadBudget(1, 2, "PASSIVE"))
    engine_stats.flush_into(root)
    transaction.commit()
    assert metrics.value("engine.backend.torch") == 1
    assert metrics.value("engine.backend.llama") == 0
    assert metrics.value("engine.threads") == 1


def test_an_aborted_flush_moves_its_gauges_again(root: Any) -> None:
    engine_stats.started("llama", ThreadBudget(2, 4, "PASSIVE"))
    engine_stats.flush_into(root)
    transaction.abort()
    engine_stats.flush_into(root)
    transaction.commit()
    assert root["metrics"].value("engine.threads") == 2


def test_reset_zeroes_gauges_and_keeps_counters(root: Any) -> None:
    engine_stats.started("llama", ThreadBudget(2, 4, "PASSIVE"))
    engine_stats.Metered(Fixed(5)).generate(REQUEST)
    engine_stats.flush_into(root)
    transaction.commit()
    engine_stats.reset_gauges(root)
    transaction.commit()
    metrics = root["metrics"]
    assert metrics.value("engine.threads") == 0 and metrics.value("engine.backend.llama") == 0
    assert metrics.value("engine.passes") >= 1
    engine_stats.flush_into(root)  # the next flush sets them again
    transaction.commit()
    assert metrics.value("engine.threads") == 2


def test_counts_survive_an_aborted_flush(root: Any) -> None:
    engine_stats.flush_into(root)
    transaction.commit()
    before = root["metrics"].value("engine.passes")
    engine_stats.Metered(Fixed(3)).generate(REQUEST)
    engine_stats.flush_into(root)
    transaction.abort()
    engine_stats.flush_into(root)
    transaction.commit()
    assert root["metrics"].value("engine.passes") == before + 1


def test_a_failed_pass_is_not_left_running() -> None:
    with pytest.raises(llm.Cancelled):
        engine_stats.Metered(Fixed(1, fail=True)).generate(REQUEST)
    assert engine_stats.snapshot()["engine.running"] == 0


@pytest.fixture
def clean_registry() -> Any:
    yield
    llm.install_engine(None, None)


def test_install_registers_the_metered_engine(clean_registry: None) -> None:
    metered = engine_stats.install(Fixed(2))
    assert llm.generator() is metered
    with pytest.raises(llm.NoEngine):
        llm.embedder()
