"""Which actors run in lanes (one per mission): the pass actors, and none with
`steps.lanes` off."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel.image import Image
from kernel.serving import Worker

PASS_ACTORS = frozenset({"router", "drafter", "critic", "synthesizer"})


@pytest.mark.parametrize("on", [True, False])
def test_the_pass_actors_run_in_lanes_unless_steps_lanes_is_off(image_dir: Path,
                                                               on: bool) -> None:
    with Image.open(image_dir, overrides={"steps.lanes": on}) as image:
        worker = Worker(image)
        try:
            lanes = worker.mission_lanes()
        finally:
            worker.conn.close()
    assert lanes == (PASS_ACTORS if on else frozenset())
