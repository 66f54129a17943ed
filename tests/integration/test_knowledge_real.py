"""A grounded mission with the real SmolLM2: ingested notes, `batos serve`, a cited source.

The image is a copy of the session's `batos init` image, so the other real
tests keep a catalog-free image. The model's wording is not asserted (it
samples), and neither is the router's decision: SmolLM2 sometimes answers
`needs_rag: false` in valid JSON, and then, by design, nothing is retrieved.
What must hold is the pipeline's side of either plan: when the router asked
(or its JSON was unusable) the retrieve pass ran right after it and the right
file is the first source, on the mission's result and in `batos mission`;
otherwise no source was retrieved. The tiny-model test in test_knowledge.py
covers the retrieving path deterministically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

NOTES = {
    "rocket.md": "# Rocket\n\nThe launch code of the rocket is ZEBRA-42. Only the pilot "
                 "knows the launch code, and it changes every spring.\n",
    "garden.txt": "Tomatoes need sun. Water them every morning. Basil grows well beside "
                  "them.\n",
}


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(1800)  # `batos init` (first real test of a session), then the passes on CPU
def test_a_real_mission_cites_the_ingested_note(real_image: Path, tmp_path: Path,
                                                serve: Any, cli: Any) -> None:
    image_dir = tmp_path / "image"
    shutil.copytree(real_image, image_dir)
    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text in NOTES.items():
        (folder / name).write_text(text)
    image = ("--image", str(image_dir))
    done = cli("knowledge", "ingest", str(folder), *image, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    with serve(image_dir):
        done = cli("mission", "Search my documents: what is the launch code of the rocket?",
                   *image, "--json", "--timeout", "900", timeout=1000)
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        status = cli("send", "missions", "status", json.dumps(summary["mission"]), *image,
                     "--json")
        plan = json.loads(status.stdout)["value"]["plan"]
    print(f"plan: {plan}")
    print(f"answer: {summary['answer']!r}")
    print(f"sources: {summary['sources']}")
    assert summary["state"] == "COMPLETE"
    passes = [p["pass"] for p in summary["passes"]]
    if plan["needs_rag"] or plan["parsed"] == "no_tools":
        assert passes[:3] == ["cache", "route", "retrieve"]
        assert Path(summary["sources"][0]["path"]).name == "rocket.md"
    else:
        assert "retrieve" not in passes and summary["sources"] == []
