"""Missions answered by the real embedded model (SmolLM2) through `batos serve`.

Both tests share one image made by `batos init` (the GGUF is converted once
per session). The first asks a question twice: the second ask must come
from memory, as a hit or a soft hit depending on the first answer's
confidence. The second SIGKILLs the kernel in the middle of a mission and
checks that a new kernel finishes it without redoing or repeating anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.memory import HIT_SIMILARITY
from kernel import mailbox, wire
from kernel.client import Client
from tests.integration.test_missions import (
    RECEIVE_S,
    check_completed_stream,
    check_state_chain,
    events,
    expected_marks,
    pass_marks,
    read_image,
    run_mission,
    states,
)

QUESTION = "What is the capital of France?"
RESUMED_QUESTION = "Name the three primary colours."


def cache_pass(records: list[wire.Message]) -> dict[str, Any]:
    [end] = [d for d in events(records, "pass") if d["pass"] == "cache" and d["phase"] == "end"]
    return end


@pytest.mark.model
@pytest.mark.slow
def test_an_answered_question_is_answered_from_memory(real_image: Path, serve: Any) -> None:
    with serve(real_image) as served:
        first_id, first = run_mission(served.endpoint, QUESTION)
        answer = check_completed_stream(first_id, first)
        assert cache_pass(first)["outcome"] == "miss"
        print(f"first answer (confidence {answer['confidence']}): {answer['answer']!r}")

        second_id, second = run_mission(served.endpoint, QUESTION)
        with Client(served.endpoint, timeout=RECEIVE_S) as client:
            recalled = client.send("missions", "status", second_id)["recalled"]

    cache = cache_pass(second)
    assert cache["similarity"] >= HIT_SIMILARITY
    assert cache["similarity"] == pytest.approx(1.0, abs=1e-5)  # the very same question
    assert recalled["key"] == first_id and recalled["answer"] == answer["answer"]
    final = second[-1]
    assert isinstance(final, wire.Result) and final.ref == second_id
    if answer["trusted"]:  # answered at once, from memory
        assert cache["outcome"] == "hit"
        assert final.value["cached"] is True
        assert (final.value["answer"], final.value["confidence"]) == (
            answer["answer"], answer["confidence"])
        assert states(second) == ["IDLE", "COMPLETE"]
        check_state_chain(second)
        assert pass_marks(second) == [("cache", "start", 0), ("cache", "end", 0)]
    else:  # the old answer is context for a fresh run of the passes
        assert cache["outcome"] == "soft_hit"
        assert check_completed_stream(second_id, second)["cached"] is False


@pytest.mark.model
@pytest.mark.slow
def test_a_mission_survives_sigkill_of_its_kernel(real_image: Path, serve: Any,
                                                  cli: Any) -> None:
    record = wire.Mission(text=RESUMED_QUESTION)
    with serve(real_image) as first, Client(first.endpoint, timeout=RECEIVE_S) as client:
        for message in client.stream(record, ref=record.id):
            if isinstance(message, wire.Event) and message.event == "pass" and \
                    (message.data["pass"], message.data["phase"]) == ("draft", "end"):
                break
            assert not isinstance(message, wire.Result | wire.Error), message
        first.kill()  # the draft is committed; the critique is running or about to

    with serve(real_image):
        watched = cli("watch", record.id, "--image", str(real_image), "--json",
                        "--timeout", str(RECEIVE_S))
    assert watched.returncode == 0, watched.stderr[-4000:]
    result = json.loads(watched.stdout)
    assert (result["mission"], result["state"]) == (record.id, "COMPLETE")
    assert isinstance(result["answer"], str) and result["answer"].strip()

    with read_image(real_image) as root:
        mission = root["missions"][record.id]
        assert mission.state_name == "COMPLETE" and mission.answer == result["answer"]
        names = [p["pass"] for p in mission.passes]
        assert names.count("route") == 1 and names.count("draft") == 1
        attempts = len(mission.candidates)
        revised = {p["round"] for p in mission.passes if p["pass"] == "synthesize"}
        assert names == [m[0] for m in expected_marks(attempts, revised) if m[1] == "end"]
        assert [p["pass"] for p in result["passes"]] == names
        assert mission.memorized == {"outcome": "stored", "key": record.id}
        mine = [key for key, entry in root["memory"].items() if entry.mission == record.id]
        assert mine == [record.id]
        assert list(mailbox.pending(root)) == []
