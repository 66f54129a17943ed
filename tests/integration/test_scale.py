"""Several kernels on one shared image: a real `runzeo`, real `batos serve` processes,
missions of the tiny model.

Each kernel has its own directory (settings, socket, blob cache) whose
`image.zeo` names the one ZEO server. What the tests read back comes from the
image itself: the transaction log names the kernel that ran each step
(`kernel.leases.EXTENSION_KEY`) and the mailbox key it consumed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel import wire
from kernel.client import Client
from kernel.image import Image
from tests.helpers.zeo import ZeoServer, kernel_dir, step_log, zeo_server

RECEIVE_S = 120  # longest wait for one record (a tiny-model pass on a busy machine)
SETTLE_S = 60  # longest wait for leases to settle or an outage to be noticed
PIPELINE = ("router", "drafter", "critic", "synthesizer")


@pytest.fixture
def shared(tiny_image: Path, tmp_path: Path) -> Iterator[ZeoServer]:
    """The tiny image, served by runzeo."""
    with zeo_server(tiny_image, tmp_path / "zeo.log") as server:
        yield server


def leases_of(endpoint: str) -> dict[str, Any]:
    with Client(endpoint, timeout=RECEIVE_S) as client:
        return dict(client.status()["leases"])


def wait_for(endpoint: str, test: Any, what: str) -> dict[str, Any]:
    """Poll the kernel's lease view until `test(view)` holds."""
    deadline = time.monotonic() + SETTLE_S
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            view = leases_of(endpoint)
            if test(view):
                return view
        time.sleep(0.2)
    raise AssertionError(f"{what}: never so; last view {view}")


def mission_records(client: Client, record: wire.Mission) -> list[wire.Message]:
    return list(client.stream(record, ref=record.id, timeout=RECEIVE_S))


def assert_completed(mission_id: str, records: list[wire.Message]) -> None:
    assert isinstance(records[0], wire.Accepted) and records[0].ref == mission_id
    finals = [r for r in records if isinstance(r, wire.Result | wire.Error)]
    assert finals == [records[-1]], finals
    assert isinstance(records[-1], wire.Result), records[-1]
    assert records[-1].ref == mission_id
    assert isinstance(records[-1].value["answer"], str)


def read_shared(directory: Path) -> contextlib.AbstractContextManager[Any]:
    @contextlib.contextmanager
    def look() -> Iterator[Any]:
        with Image.open(directory, create=False, read_only=True) as image, \
                image.reading() as root:
            yield root
    return look()


def assert_steps_ran_once_on_their_holders(address: str, holder_of: Any) -> set[str]:
    """Every step names its kernel, that kernel held the actor, no key was consumed
    twice; the kernels that ran steps."""
    steps = step_log(address)
    assert steps, "no step in the transaction log"
    for step in steps:
        assert step.kernel is not None, step
        assert step.kernel == holder_of(step), step
    keys = [(step.actor, step.key) for step in steps]
    assert len(keys) == len(set(keys)), "a message was consumed twice"
    return {str(step.kernel) for step in steps}


def assert_streamed(records: list[wire.Message], name: str, chunked: bool) -> None:
    """The pass `name` was told as it ran: its start, its chunks in order, its end."""
    told = [r for r in records if isinstance(r, wire.Event) and r.event in ("pass", "chunk")
            and r.data.get("pass") == name]
    phases = [r.data.get("phase", "chunk") for r in told if r.data.get("round", 0) == 0]
    assert phases and phases[0] == "start" and phases[-1] == "end", phases
    chunks = [r.data["seq"] for r in told if r.event == "chunk"]
    assert chunks == sorted(set(chunks)), chunks  # in order, none twice
    assert bool(chunks) == chunked, chunks


@pytest.mark.slow
def test_two_kernels_split_the_actors_and_missions_complete_at_either(
        shared: ZeoServer, tmp_path: Path, serve: Any) -> None:
    a = kernel_dir(tmp_path / "a", shared.address, "a",
                   ("missions", "hippocampus", "router", "s*"))
    b = kernel_dir(tmp_path / "b", shared.address, "b", ("*",))
    with serve(a) as ka, serve(b) as kb:
        view = wait_for(kb.endpoint, lambda v: "drafter" in v["held"], "b holds the drafter")
        assert "router" not in view["held"] and "missions" not in view["held"]
        table = view["table"]
        assert {table[n]["kernel"] for n in PIPELINE} == {"a", "b"}
        wait_for(kb.endpoint, lambda v: "a" in v["relay"]["hears"], "b hears a's events")
        wait_for(ka.endpoint, lambda v: "b" in v["relay"]["hears"], "a hears b's events")
        results: dict[str, Any] = {}
        heard: dict[str, list[wire.Message]] = {}
        for endpoint, text in ((ka.endpoint, "What is the capital of France?"),
                               (kb.endpoint, "Name a prime number.")):
            record = wire.Mission(text=text)
            with Client(endpoint, timeout=RECEIVE_S) as client:
                records = mission_records(client, record)
            assert_completed(record.id, records)
            final = records[-1]
            assert isinstance(final, wire.Result)
            results[record.id] = final.value
            heard[endpoint] = records
        # each client heard, live and in order, the passes the other kernel ran
        assert_streamed(heard[ka.endpoint], "draft", chunked=True)  # the drafter is b's
        assert_streamed(heard[kb.endpoint], "cache", chunked=False)  # the hippocampus is a's
        for endpoint in (ka.endpoint, kb.endpoint):  # `watch` works from any kernel
            for mission_id, final in results.items():
                with Client(endpoint, timeout=RECEIVE_S) as client:
                    watch = wire.Watch(ref=mission_id)
                    seen = list(client.stream(watch, ref=mission_id, timeout=RECEIVE_S))
                last = seen[-1]
                assert isinstance(last, wire.Result) and last.value == final
        echo = wire.Send(actor="system", selector="echo", args=[1])
        with Client(kb.endpoint, timeout=RECEIVE_S) as client:  # `system` is a's
            assert client.send("system", "stats", "missions.")  # a read: any kernel answers
            for _ in range(2):  # a write goes to its holder, a; the resend is replayed
                answers = [r for r in client.stream(echo, ref=echo.id, timeout=RECEIVE_S)
                           if not isinstance(r, wire.Accepted)]
                assert [type(r) for r in answers] == [wire.Result]
                assert isinstance(answers[0], wire.Result)
                assert (answers[0].ref, answers[0].value) == (echo.id, 1)
        with Client(ka.endpoint, timeout=RECEIVE_S) as client:
            assert client.send("system", "echo", 2) == 2
        table = leases_of(ka.endpoint)["table"]
    ran = assert_steps_ran_once_on_their_holders(
        shared.address, lambda step: table[step.actor]["kernel"])
    assert ran == {"a", "b"}
    assert [s.kernel for s in step_log(shared.address) if s.key.endswith(echo.id)] == ["a"]
    with read_shared(a) as root:
        # the tiny embedder finds any two questions near-identical: the better answer stays
        assert len(root["memory"]) == 1 and set(root["memory"].keys()) <= set(results)
        for mission_id in results:
            assert root["missions"][mission_id].state_name == "COMPLETE"


@pytest.mark.slow
def test_kill_9_of_the_lease_holder_mid_mission_fails_over(
        shared: ZeoServer, tmp_path: Path, serve: Any) -> None:
    a = kernel_dir(tmp_path / "a", shared.address, "a")
    b = kernel_dir(tmp_path / "b", shared.address, "b")
    record = wire.Mission(text="What is the capital of France?")
    with serve(a) as ka:
        wait_for(ka.endpoint, lambda v: "drafter" in v["held"], "a holds every actor")
        with serve(b) as kb, Client(kb.endpoint, timeout=RECEIVE_S) as client:
            assert leases_of(kb.endpoint)["held"] == []
            client.send_record(record)
            records: list[wire.Message] = []
            while not any(isinstance(r, wire.Event) and r.data.get("state") == "DECOMPOSING"
                          for r in records):
                records.append(client.receive(RECEIVE_S))
            killed_at = time.time()
            ka.kill()  # SIGKILL while it runs the mission's steps
            while not isinstance(records[-1], wire.Result | wire.Error):
                records.append(client.receive(RECEIVE_S))
            assert_completed(record.id, records)
            view = leases_of(kb.endpoint)
            assert "drafter" in view["held"] and view["table"]["drafter"]["takeovers"] == 1
            with serve(a) as again:  # the dead kernel rejoins: every lease is held
                rejoined = wait_for(again.endpoint, lambda v: v["table"], "a renewed")
                assert rejoined["held"] == []
                assert leases_of(kb.endpoint)["held"] == view["held"]
    steps = step_log(shared.address)
    took = {name: row["since"] for name, row in view["table"].items()}
    keys = [(step.actor, step.key) for step in steps]
    assert len(keys) == len(set(keys)), "a message was consumed twice"
    for actor in {step.actor for step in steps}:  # a's steps, then (after the takeover) b's
        kernels = "".join(str(step.kernel) for step in steps if step.actor == actor)
        assert kernels == "".join(sorted(kernels)), (actor, kernels)  # never "ba"
    assert any(s.kernel == "b" and s.actor in PIPELINE for s in steps), "no takeover mid-mission"
    assert all(since >= killed_at - 1 for since in took.values())
    with read_shared(a) as root:
        assert list(root["memory"].keys()) == [record.id]  # memorized once
        assert root["missions"][record.id].memorized == {"outcome": "stored",
                                                          "key": record.id}


@pytest.mark.slow
def test_kill_9_of_the_zeo_server_refuses_new_work_then_goes_on(
        shared: ZeoServer, tmp_path: Path, serve: Any) -> None:
    a = kernel_dir(tmp_path / "a", shared.address, "a")
    first = wire.Mission(text="What is the capital of France?")
    second = wire.Mission(text="Name a prime number.")
    with serve(a) as ka, Client(ka.endpoint, timeout=RECEIVE_S) as client:
        wait_for(ka.endpoint, lambda v: "drafter" in v["held"], "a holds every actor")
        client.send_record(first)
        records = [client.receive(RECEIVE_S)]
        shared.kill()
        wait_for(ka.endpoint, lambda v: v["image"] == "unreachable", "the outage is seen")
        with Client(ka.endpoint, timeout=RECEIVE_S) as other:
            refused = list(other.stream(second, ref=second.id, timeout=RECEIVE_S))
        assert isinstance(refused[-1], wire.Error)
        assert refused[-1].code == wire.ErrorCode.UNAVAILABLE
        shared.start()
        wait_for(ka.endpoint, lambda v: v["image"] == "up", "the server is back")
        while not isinstance(records[-1], wire.Result | wire.Error):
            records.append(client.receive(RECEIVE_S))
        assert_completed(first.id, records)
        with Client(ka.endpoint, timeout=RECEIVE_S) as other:  # the same id, again
            assert_completed(second.id, mission_records(other, second))
    with read_shared(a) as root:
        assert len(root["memory"]) == 1 and set(root["memory"].keys()) <= {first.id, second.id}
        for mission_id in (first.id, second.id):
            assert root["missions"][mission_id].state_name == "COMPLETE"
