"""When an eviction's readings prove the LLM's memory came back (a table of cases)."""

from __future__ import annotations

import pytest

from actors.video.lease import MEASURABLE_BYTES, Handover, Reading

MB = 1 << 20
BIG = MEASURABLE_BYTES * 2


def cuda(used: int, allocated: int) -> Reading:
    return Reading("cuda", used, "cuda.mem_get_info", allocated)


@pytest.mark.parametrize(("before", "after", "weights", "expected"), [
    # tensors gone, device reading down: fine
    (cuda(2 * BIG, BIG), cuda(BIG, 0), BIG, None),
    # a tiny model: tensors gone, its segments shared (device reading flat): fine
    (cuda(500 * MB, 3 * MB), cuda(500 * MB, MB), 2 * MB, None),
    # tensors still held (a stray reference): refused whatever the size
    (cuda(500 * MB, 3 * MB), cuda(500 * MB, 3 * MB), 2 * MB,
     ("cuda.memory_allocated", 0, MB)),
    # a big model whose tensors went but whose memory stayed cached: refused
    (cuda(2 * BIG, BIG), cuda(2 * BIG, 0), BIG, ("cuda.mem_get_info", 0, BIG // 2)),
    # CPU: RSS is reported, never required
    (Reading("cpu", BIG, "rss"), Reading("cpu", BIG, "rss"), BIG, None),
])
def test_the_shortfall_of_an_eviction(before: Reading, after: Reading, weights: int,
                                      expected: tuple[str, int, int] | None) -> None:
    handover = Handover(before, after, weights, 0.1)
    assert handover.shortfall() == expected
    assert handover.as_dict()["freed_tensors"] == before.allocated_bytes - after.allocated_bytes
