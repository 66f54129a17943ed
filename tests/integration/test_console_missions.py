"""`batos missions`, id prefixes and `batos cancel` through the real CLI.

A real kernel (on a thread of this process, real ZeroMQ over ipc, real ZODB)
runs missions on the scripted model; the router's pass of one mission waits
on an event, so that mission is in flight while the CLI lists, resolves and
cancels it. Each CLI call is a real `batos` process.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import llm
from actors.cli_missions import short_ids
from actors.llm import GenerationRequest
from kernel import wire
from kernel.client import Client, endpoint_for
from tests.helpers.kernel import BATOS, running_kernel
from tests.helpers.scripted import ROUTE_JSON, ScriptedModel

WAIT_S = 60  # longest wait for one record or one CLI call on a busy machine
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def batos(image_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BATOS, *args, "--image", str(image_dir)], capture_output=True,
                          text=True, env=ENV, timeout=WAIT_S * 2, check=False)


@pytest.fixture
def held() -> Iterator[threading.Event]:
    """Released when the test is done: until then a question with HOLD in it stays
    in its router pass."""
    release = threading.Event()

    def route(request: GenerationRequest) -> str:
        if "HOLD" in request.messages[-1].content:
            release.wait(WAIT_S)
        return ROUTE_JSON

    model = ScriptedModel()
    model.scripts["router"] = route
    llm.install_engine(model, model)
    yield release
    release.set()
    llm.install_engine(None, None)


def finish(endpoint: str, text: str, mission_id: str | None = None) -> str:
    record = wire.Mission(text=text, **({"id": mission_id} if mission_id else {}))
    with Client(endpoint, timeout=WAIT_S) as client:
        list(client.stream(record, ref=record.id))
    return record.id


def start(endpoint: str, text: str) -> str:
    record = wire.Mission(text=text)
    with Client(endpoint, timeout=WAIT_S) as client:
        for msg in client.stream(record, ref=record.id):
            if isinstance(msg, wire.Event) and msg.data.get("pass") == "route":
                return record.id
    raise AssertionError("the mission ended before its route pass")


def listed(image_dir: Path, *args: str) -> list[dict[str, object]]:
    done = batos(image_dir, "missions", "--json", *args)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


def test_missions_lists_filters_and_names_them_by_prefix(
        image_dir: Path, held: threading.Event) -> None:
    with running_kernel(image_dir):
        endpoint = endpoint_for(image_dir)
        done_id = finish(endpoint, "What is the capital of France?")
        running_id = start(endpoint, "HOLD this one, please")

        rows = listed(image_dir)
        assert [r["id"] for r in rows] == [running_id, done_id]  # newest first
        assert rows[1]["state"] == "COMPLETE" and rows[1]["confidence"] is not None
        assert rows[0]["question"] == "HOLD this one, please"
        assert [r["id"] for r in listed(image_dir, "--state", "running")] == [running_id]
        assert [r["id"] for r in listed(image_dir, "--state", "complete")] == [done_id]
        assert [r["id"] for r in listed(image_dir, "--limit", "1")] == [running_id]

        short = short_ids([running_id, done_id])  # what the table shows: unique starts
        assert all(len(s) < len(i) for i, s in short.items())
        table = batos(image_dir, "missions")
        assert table.returncode == 0, table.stderr
        assert short[running_id] in table.stdout and short[done_id] in table.stdout

        status = batos(image_dir, "status", short[done_id], "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["ref"] == done_id

        cancelled = batos(image_dir, "cancel", short[running_id], "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        assert json.loads(cancelled.stdout)["cancelled"] == running_id
        held.set()
        with Client(endpoint, timeout=WAIT_S) as client:
            assert client.send("missions", "status", running_id)["state"] == "FAILED"


def test_an_ambiguous_prefix_is_refused_with_its_candidates(
        image_dir: Path, held: threading.Event) -> None:
    with running_kernel(image_dir):
        endpoint = endpoint_for(image_dir)
        common = wire.new_id()[:16]  # two missions whose ids start alike
        ids = [finish(endpoint, f"question {n}", common + wire.new_id()[:16])
               for n in range(2)]
        for command in ("status", "watch", "cancel"):
            done = batos(image_dir, command, common)
            assert done.returncode == 2, (command, done.stderr)
            assert all(i in done.stderr for i in ids), done.stderr
            assert "Traceback" not in done.stderr


def test_missions_reads_the_image_when_no_kernel_runs(
        image_dir: Path, held: threading.Event) -> None:
    with running_kernel(image_dir):
        done_id = finish(endpoint_for(image_dir), "What is the capital of France?")
    rows = listed(image_dir)
    assert [(r["id"], r["state"]) for r in rows] == [(done_id, "COMPLETE")]
    refused = batos(image_dir, "missions", "--state", "bogus")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_ps_shows_the_mission_in_flight_and_the_kernel(
        image_dir: Path, held: threading.Event) -> None:
    with running_kernel(image_dir):
        endpoint = endpoint_for(image_dir)
        finish(endpoint, "What is the capital of France?")
        running_id = start(endpoint, "HOLD this one, please")
        done = batos(image_dir, "ps", "--json")
        assert done.returncode == 0, done.stderr
        snapshot = json.loads(done.stdout)
        assert [(m["id"], m["state"], m["pass"]) for m in snapshot["missions"]] == \
            [(running_id, "DECOMPOSING", "cache")]
        assert snapshot["running_steps"] >= 1 and snapshot["uptime_s"] > 0
        table = batos(image_dir, "ps")
        assert table.returncode == 0, table.stderr
        assert short_ids([running_id])[running_id] in table.stdout
        held.set()
