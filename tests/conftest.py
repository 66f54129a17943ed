"""Shared fixtures: a real FileStorage image in a temporary directory."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

import actors  # noqa: F401  (first: OpenMP's passive wait policy, before any test loads torch)
from kernel.image import Image

# Settings from the developer's environment must not leak into tests.
for _var in [v for v in os.environ if v.startswith("BATOS_")]:
    del os.environ[_var]


@pytest.fixture(autouse=True)
def _process_state_reset() -> Iterator[None]:
    """A test leaves no process-level state behind: no stop flag raised, no adapter
    steward installed (a closed one would serve the next test's passes)."""
    yield
    from actors import steward
    from kernel import stopping

    stopping.end_stop()
    left = steward.install(None)
    if left is not None:
        left.close()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return tmp_path / "image"


@pytest.fixture
def image(image_dir: Path) -> Iterator[Image]:
    img = Image.open(image_dir)
    try:
        yield img
    finally:
        img.close()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A seeded random generator; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("TEST_SEED", random.randrange(2**32)))
    print(f"random seed for {request.node.name}: {seed}")
    return random.Random(seed)
