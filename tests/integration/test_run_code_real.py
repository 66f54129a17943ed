"""The issue's "done when", with the real SmolLM2 through `batos serve` (llama.cpp on CPU).

"What is 2**100? Use Python." must run model-written code in the sandbox and
the answer must use its output. Nothing is scripted: the router (its JSON
persona), the coder's code request (the bare model), the drafter, critic and
synthesizer are the embedded model; the sandbox is bubblewrap. The 135M
model's prose usually ignores the number, so the answer's use of it is the
grounding step's doing (`actors.code.grounding`), which the events show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kernel import wire
from tests.integration.test_missions import events, pass_marks, run_mission

QUESTION = "What is 2**100? Use Python."


@pytest.mark.model
@pytest.mark.slow
def test_the_answer_uses_the_output_of_the_code_the_model_wrote(real_image: Path,
                                                                  serve: Any) -> None:
    with serve(real_image) as served:
        mission_id, records = run_mission(served.endpoint, QUESTION)

    final = records[-1]
    assert isinstance(final, wire.Result) and final.ref == mission_id, final
    ends = [name for name, phase, _ in pass_marks(records) if phase == "end"]
    assert ends[:4] == ["cache", "route", "run_code", "draft"], ends
    code = {data["phase"]: data for data in events(records, "code")}
    print("code events:", code)
    print("answer:", final.value["answer"])
    assert code["check"]["ok"] is True
    run = code["run"]
    assert (run["outcome"], run["stdout"]) == ("ok", f"{2**100}\n"), run
    assert str(2**100) in final.value["answer"].replace(",", "")
