"""A grounded mission with the real SmolLM2: ingested notes, `batos serve`, a cited file.

The image is a copy of the session's `batos init` image, so the other real
tests keep a catalog-free image. The model's wording is not asserted (it
samples), and neither is the router's decision: whatever it plans, the
catalog holds a note relevant to the question, so the pipeline retrieves it
(the retrieve pass right after the router, the note the first source), and
the cite pass attributes the answer to it: the answer carries its [n] and a
"Sources:" footer naming rocket.md, and `citations` name no other file. The
tiny-model test in test_knowledge.py covers the same path deterministically.
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
    assert passes[:3] == ["cache", "route", "retrieve"]
    assert passes[-2:] == ["cite", "memorize"]
    sources = {s["n"]: Path(s["path"]).name for s in summary["sources"]}
    assert sources[1] == "rocket.md"
    cited = {sources[c["n"]] for c in summary["citations"]}
    assert cited == {"rocket.md"}, summary["citations"]
    body, footer = summary["answer"].rsplit("\n\nSources:\n", 1)
    assert "rocket.md" in footer and "garden.txt" not in footer
    assert any(f"[{c['n']}]" in body for c in summary["citations"])
