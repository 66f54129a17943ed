"""The VRAM lease on a real (small, random) LLM engine: evict, wait, reload lazily.

Runs on the CPU, or on the device named by TEST_VIDEO_DEVICE (then the
readings are CUDA's `mem_get_info` and the eviction must free the weights).
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import llm
from actors.engine import Engine
from actors.video.errors import LeaseHeld
from actors.video.lease import LazyGenerator, VramLease
from tests.helpers.video import DEVICE, build_small_llm_dir, one_thread

REQUEST = llm.GenerationRequest(
    messages=(llm.ChatMessage("user", "the quick brown fox"),), max_new_tokens=4,
    temperature=0.0)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    one_thread()
    loaded = Engine.load(build_small_llm_dir(tmp_path / "llm"), device=DEVICE)
    loaded.install()
    yield loaded
    llm.install_engine(None, None)


def test_the_lease_evicts_the_llm_and_it_reloads_on_the_next_pass(engine: Engine) -> None:
    lease = VramLease()
    before = engine.generate(REQUEST).text
    handover = lease.acquire("job-1", DEVICE)
    assert handover is not None
    assert engine.model is None
    assert isinstance(llm.generator(), LazyGenerator)
    assert handover.weight_bytes > 0
    if DEVICE.startswith("cuda"):
        assert handover.before.source == "cuda.mem_get_info"
        assert handover.freed_bytes >= handover.weight_bytes // 2
    lease.release("job-1")
    after = llm.generator().generate(REQUEST).text
    assert lease.reloads == 1
    assert engine.model is not None
    assert llm.generator() is engine
    assert after == before  # the same weights came back


def test_the_eviction_frees_the_weights_without_a_garbage_collection(engine: Engine) -> None:
    """On the CPU the eviction makes no full collection: reference counting alone
    must free every parameter of the model, also after a pass ran."""
    engine.generate(REQUEST)
    assert engine.model is not None
    params = [weakref.ref(p) for p in engine.model.parameters()]
    lease = VramLease()
    gc.disable()
    try:
        lease.acquire("job-1", DEVICE)
        alive = sum(ref() is not None for ref in params)
    finally:
        gc.enable()
        lease.release("job-1")
    assert params and alive == 0


def test_a_pass_during_the_lease_waits_for_its_release(engine: Engine) -> None:
    lease = VramLease()
    lease.acquire("job-1", DEVICE)
    answered = threading.Event()
    results: list[str] = []

    def mission_pass() -> None:
        results.append(llm.generator().generate(REQUEST).text)
        answered.set()

    waiter = threading.Thread(target=mission_pass)
    waiter.start()
    assert not answered.wait(0.5)  # held: the pass waits, nothing loads
    assert engine.model is None
    lease.release("job-1")
    waiter.join(120)
    assert answered.is_set() and len(results) == 1
    assert lease.reloads == 1


def test_the_lease_is_exclusive_and_released_on_failure(engine: Engine) -> None:
    lease = VramLease()
    with pytest.raises(RuntimeError), lease.held("job-1", DEVICE):
        with pytest.raises(LeaseHeld) as caught:
            lease.acquire("job-2", DEVICE)
        assert (caught.value.holder, caught.value.wanted_by) == ("job-1", "job-2")
        assert lease.acquire("job-1", DEVICE) is None  # a resumed job: already held
        raise RuntimeError("the job failed")
    assert lease.holder is None
    assert lease.acquire("job-2", DEVICE) is None  # the LLM is still out: nothing to evict
    lease.release("job-2")


def test_without_an_engine_there_is_nothing_to_evict() -> None:
    llm.install_engine(None, None)
    lease = VramLease()
    assert lease.acquire("job-1", DEVICE) is None
    assert lease.release("job-1")


def test_the_reloaded_engine_gets_its_steward_back_or_serves_without(engine: Engine) -> None:
    attached: list[Engine] = []

    def reattach(reloaded: Engine) -> None:
        attached.append(reloaded)
        raise RuntimeError("the image is gone")  # the steward cannot come back

    lease = VramLease()
    lease.set_reattach(reattach)
    lease.acquire("job-1", DEVICE)
    lease.release("job-1")
    assert llm.generator().generate(REQUEST).tokens > 0
    assert attached == [engine]
    assert llm.generator() is engine  # serving, bare
