"""Fixtures of the mission tests: images that hold models, `batos serve`, the CLI.

`tiny_image` is a fresh image holding the tiny random models of
`tests.helpers.tiny_model` as "base" and "embedding" (a copy of one built
per session); `real_image` is one image per session made by `batos init`
(the embedded SmolLM2, converted once). `serve` runs `batos serve` as a
child process with torch seeded (the seed is printed), its log in a file;
`cli` runs `batos ARGS` and returns the finished process.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel.client import Client, endpoint_for
from kernel.image import Image
from tests.helpers.kernel import BATOS

READY_S = 120  # engine load in a fresh interpreter on a busy 2-core machine
CLI_TIMEOUT_S = 300


@dataclass
class Served:
    """A running `batos serve`: its process and its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    endpoint: str

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown, no index written, whatever step is running dies."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


ServeFactory = Callable[..., contextlib.AbstractContextManager[Served]]
RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def torch_seed(request: pytest.FixtureRequest) -> int:
    """The seed of torch's sampling in every kernel this test runs (printed)."""
    seed = int(os.environ.get("TEST_SEED", random.randrange(2**32)))
    print(f"torch seed for {request.node.name}: {seed}")
    return seed


@pytest.fixture
def serve(tmp_path: Path, torch_seed: int) -> Iterator[ServeFactory]:
    """Start `batos serve --image DIR ARGS` (a context manager; SIGTERM on exit)."""
    started: list[Served] = []

    @contextlib.contextmanager
    def start(image_dir: Path, *args: str) -> Iterator[Served]:
        served = _spawn(image_dir, args, tmp_path / f"serve-{len(started)}.log", torch_seed)
        started.append(served)
        try:
            yield served
        finally:
            _stop(served)

    yield start
    for served in started:  # a test that failed inside `with` already stopped its kernel
        _stop(served)


def _spawn(image_dir: Path, args: tuple[str, ...], log: Path, seed: int) -> Served:
    code = f"import torch; torch.manual_seed({seed}); from kernel.cli import main; main()"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--image", str(image_dir), *args],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    served = Served(proc, log, endpoint_for(image_dir))
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"batos serve exited with {proc.returncode}:\n"
                               f"{served.log_tail()}")
        with contextlib.suppress(Exception), Client(served.endpoint, timeout=0.5) as client:
            client.ping()
            return served
        time.sleep(0.2)
    _stop(served)
    raise TimeoutError(f"batos serve did not answer in {READY_S}s:\n{served.log_tail()}")


def _stop(served: Served) -> None:
    if served.proc.poll() is not None:
        return
    served.proc.terminate()
    try:
        served.proc.wait(60)
    except subprocess.TimeoutExpired:
        served.proc.kill()
        served.proc.wait()


@pytest.fixture(scope="session")
def cli() -> RunCli:
    """Run `batos ARGS` to completion; stdout and stderr captured as text."""
    def run(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*BATOS, *args], capture_output=True, text=True,
                              timeout=timeout, check=False, env=dict(os.environ))
    return run


# -- images -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny causal LM and the tiny sentence embedder, built once."""
    from tests.helpers.tiny_model import build_tiny_embedding_dir, build_tiny_model_dir

    root = tmp_path_factory.mktemp("tiny-models")
    return build_tiny_model_dir(root / "lm"), build_tiny_embedding_dir(root / "emb")


@pytest.fixture(scope="session")
def tiny_image_template(tmp_path_factory: pytest.TempPathFactory,
                        tiny_model_dirs: tuple[Path, Path]) -> Path:
    """An image with the tiny models ingested; never served, only copied."""
    from actors.models import ingest_model_dir

    directory = tmp_path_factory.mktemp("tiny-image-template") / "image"
    lm, emb = tiny_model_dirs
    with Image.open(directory) as image:
        ingest_model_dir(image, lm, "base", progress=lambda line: None)
        ingest_model_dir(image, emb, "embedding", kind="embedding", progress=lambda line: None)
    return directory


@pytest.fixture
def tiny_image(tiny_image_template: Path, tmp_path: Path) -> Path:
    """A fresh image of this test's own, holding the tiny models."""
    directory = tmp_path / "image"
    shutil.copytree(tiny_image_template, directory)
    return directory


@pytest.fixture(scope="session")
def real_image(tmp_path_factory: pytest.TempPathFactory, cli: RunCli) -> Path:
    """One image per session made by `batos init` (SmolLM2 converted from its GGUF)."""
    directory = tmp_path_factory.mktemp("real-image") / "image"
    done = cli("init", "--image", str(directory), "--json", timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return directory
