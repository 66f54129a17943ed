"""The section schedule: keyframes first, the anti-drift guidance table, the context."""

from __future__ import annotations

import pytest

from actors.video import schedule as sch

# (sections, running order)
ORDERS = [
    (1, [0]),
    (2, [0, 1]),
    (3, [0, 2, 1]),
    (5, [0, 4, 1, 3, 2]),
    (6, [0, 5, 1, 4, 2, 3]),
]


@pytest.mark.parametrize(("n", "order"), ORDERS)
def test_keyframes_run_first_then_the_middle_outside_in(n: int, order: list[int]) -> None:
    assert sch.section_order(n) == order
    plan = sch.schedule(n, 7.0, 0.7)
    assert [s.index for s in plan] == order
    assert [s.turn for s in plan] == list(range(n))
    assert {s.index for s in plan if s.keyframe} == {0, n - 1}


# (section, sections, cfg_scale, drift_strength, guidance), worked by hand from LA3 §5.3
GUIDANCE = [
    (0, 5, 7.0, 0.7, 7.0),  # keyframe: full
    (4, 5, 7.0, 0.7, 7.0),
    (2, 5, 7.0, 0.7, 4.9),  # midpoint: 70 %
    (1, 5, 7.0, 0.7, 5.95),  # distance 0.5: 0.85
    (3, 5, 7.0, 0.7, 5.95),
    (1, 3, 7.0, 0.7, 4.9),
    (1, 4, 7.0, 0.7, 7.0 * (0.7 + 0.3 / 3)),  # distance 1/3
    (2, 5, 6.0, 0.5, 3.0),
    (2, 5, 7.0, 1.0, 7.0),  # drift_strength 1: no rescaling
    (0, 1, 7.0, 0.7, 7.0),  # one section: a keyframe
]


@pytest.mark.parametrize(("i", "n", "cfg", "drift", "expected"), GUIDANCE)
def test_guidance_follows_the_anti_drift_formula(i: int, n: int, cfg: float, drift: float,
                                                  expected: float) -> None:
    assert sch.guidance(i, n, cfg, drift) == pytest.approx(expected)


# (frames wanted, window, sections, frames made)
SIZES = [(1, 2, 1, 9), (9, 2, 1, 9), (10, 2, 2, 17), (40, 2, 5, 41), (120, 9, 4, 145)]


@pytest.mark.parametrize(("frames", "window", "sections", "made"), SIZES)
def test_sections_cover_the_frames_asked_for(frames: int, window: int, sections: int,
                                            made: int) -> None:
    assert sch.section_count(frames, window) == sections
    assert sch.frame_count(sections, window) == made
    assert made >= frames


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        sch.section_count(0, 2)


# (section, finished, expected context)
CONTEXTS = [
    (0, set(), sch.Context(sch.START, 0, None, 0)),
    (4, {0}, sch.Context(0, 3, None, 0)),
    (1, {0, 4}, sch.Context(0, 0, 4, 2)),
    (3, {0, 1, 4}, sch.Context(1, 1, 4, 0)),
    (2, {0, 1, 3, 4}, sch.Context(1, 0, 3, 0)),
]


@pytest.mark.parametrize(("index", "done", "expected"), CONTEXTS)
def test_a_section_sees_its_nearest_finished_neighbours(index: int, done: set[int],
                                                       expected: sch.Context) -> None:
    assert sch.neighbours(index, done) == expected
