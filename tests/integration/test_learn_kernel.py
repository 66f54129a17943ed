"""An admin-enabled actor learns a method from a `send`, through a real kernel and the CLI.

The code writer is scripted (by selector); everything else is real: the
ZeroMQ kernel on ipc, the ZODB image, the `batos methods` commands as
subprocesses talking to the kernel's learner.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import llm
from kernel import wire
from kernel.client import Client, RemoteError, endpoint_for
from kernel.image import Image
from prototypes import UvmObject
from tests.helpers.kernel import running_kernel
from tests.integration.test_repl import Repl

SOURCES = {
    "double": "def double(self, n):\n    return n * 2 + self.bias\n",
    "halve": "def halve(self, n):\n    import os\n    return n / 2\n",
}


class CodeBySelector:
    """Writes the method the prompt asks for from `SOURCES`."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        prompt = request.messages[-1].content
        selector = next(name for name in SOURCES if f"Write `def {name}(self" in prompt)
        with self._lock:
            self.calls.append(selector)
        return llm.Generation(text=SOURCES[selector], tokens=8, mean_logprob=-1.0,
                              seconds=0.0)


@pytest.fixture
def writer() -> Iterator[CodeBySelector]:
    scripted = CodeBySelector()
    llm.install_engine(scripted, None)
    yield scripted
    llm.install_engine(None, None)


def send_records(endpoint: str, actor: str, selector: str, *args: Any) -> list[wire.Message]:
    record = wire.Send(actor=actor, selector=selector, args=list(args), kwargs={})
    with Client(endpoint, timeout=30) as client:
        return list(client.stream(record))


def test_an_admin_enabled_actor_learns_from_a_send(image_dir: Path, writer: CodeBySelector,
                                                    cli: Any) -> None:
    with Image.open(image_dir) as image, image.transaction() as root:
        root["actors"]["calc"] = UvmObject(bias=1)
    image_opt = ("--image", str(image_dir))
    with running_kernel(image_dir) as kernel:
        endpoint = endpoint_for(image_dir)
        with Client(endpoint, timeout=30) as client, pytest.raises(RemoteError) as off:
            client.send("calc", "double", 20)
        assert off.value.code == "unknown_selector" and writer.calls == []

        enabled = cli("methods", "generative", "actors/calc", "--on", *image_opt)
        assert enabled.returncode == 0, enabled.stderr[-2000:]

        records = send_records(endpoint, "calc", "double", 20)
        assert isinstance(records[-1], wire.Result) and records[-1].value == 41
        learn = [r.data for r in records if isinstance(r, wire.Event) and r.event == "learn"]
        assert [d["phase"] for d in learn] == ["attempt", "installed"]
        with Client(endpoint, timeout=30) as client:
            assert client.send("calc", "double", 1) == 3
        assert writer.calls == ["double"]

        listed = cli("methods", "--json", *image_opt)
        assert listed.returncode == 0, listed.stderr[-2000:]
        rows = json.loads(listed.stdout)
        assert [(r["owner"], r["selector"], r["mission"]) for r in rows] == [
            ("actors/calc", "double", records[-1].ref)]
        shown = json.loads(cli("methods", "show", "actors/calc", "double", "--json",
                               *image_opt).stdout)
        assert shown["source"] == SOURCES["double"] and shown["model"] == "CodeBySelector"

        with Client(endpoint, timeout=30) as client, pytest.raises(RemoteError) as refused:
            client.send("calc", "halve", 8)
        assert refused.value.code == "does_not_understand"
        gone = cli("methods", "rm", "actors/calc", "double", *image_opt)
        assert gone.returncode == 0, gone.stderr[-2000:]
        with kernel.image.reading() as root:
            calc = root["actors"]["calc"]
            assert not calc.has_slot("double") and not calc.has_slot("halve")
        relearned = send_records(endpoint, "calc", "double", 5)  # a second version
        assert isinstance(relearned[-1], wire.Result) and relearned[-1].value == 11
        with kernel.image.reading() as root:
            counters = root["metrics"].snapshot()
            refusals = list(root["actors"]["learner"].refusals)
    assert counters["methods.generated.accepted"] == 2
    assert counters["methods.generated.removed"] == 1
    assert counters["methods.generated.rejected"] == 3
    assert counters["guardian.rejected.import"] == 3
    assert [r["selector"] for r in refusals] == ["halve"]

    # the REPL's `history` shows the method's versions: learned, removed, learned again
    repl = Repl(image_dir)
    try:
        lines = repl.run('history(actors["calc"])').splitlines()
    finally:
        repl.quit()
    changes = [line for line in lines if "actor=calc selector=double" in line
               or "actor=learner selector=forget" in line]
    assert ["selector=double" in line for line in changes] == [True, False, True], lines
