"""The step runner: commit, doom, conflict retry, exhaustion, concurrency."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest

from kernel import answers
from kernel import mailbox as mb
from kernel.actions import Address
from kernel.errors import RetriesExhausted, StepFailed, UnknownSelector
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepResult, StepRunner
from tests.helpers.actors import Recorder


def _setup(image: Image, *names: str) -> None:
    with image.transaction() as root:
        for name in names:
            root["actors"][name] = Recorder()


def _post(image: Image, env: Envelope) -> str:
    with image.transaction() as root:
        return mb.post(root, env, capacity=100)


def _run(image: Image, actor: str, key: str) -> StepResult:
    conn = image.connection()
    try:
        return StepRunner(conn, image.config).run(actor, key)
    finally:
        conn.close()


def _record(image: Image, oid: bytes) -> tuple[bytes, bytes]:
    data, serial = image.db.storage.load(oid)
    return hashlib.sha256(data).digest(), serial


def test_committed_step_consumes_and_posts(image: Image) -> None:
    _setup(image, "a", "b")
    key = _post(image, Envelope("a", "forward", ("b", 42), reply_to="client", mission="m1"))
    result = _run(image, "a", key)
    assert result.ok and result.value == "sent"
    assert [(out.actor, out.selector, out.args) for out, _ in result.outbox] == \
        [("b", "note", (42,))]
    assert (result.outbox[0][0].reply_to, result.outbox[0][0].mission) == ("client", "m1")
    assert result.events == (("forwarded", {"to": "b"}),)
    with image.reading() as root:
        assert len(root["mailboxes"]["a"]) == 0
        assert len(root["mailboxes"]["b"]) == 1
        assert root["actors"]["a"].calls == 1
        assert root["metrics"].value("steps.committed") == 1
        assert root["metrics"].value("steps.actor.a") == 1


def test_doomed_step_leaves_committed_state_unchanged(image: Image) -> None:
    _setup(image, "a")
    key = _post(image, Envelope("a", "explode", ("x",)))
    with image.reading() as root:
        actor_oid = root["actors"]["a"]._p_oid
        before = _record(image, actor_oid)
        mailboxes_before = len(root["mailboxes"])
    last_before = image.db.storage.lastTransaction()

    result = _run(image, "a", key)

    assert not result.ok and isinstance(result.error, StepFailed)
    assert isinstance(result.error.__cause__, RuntimeError)  # the handler's own error
    assert result.error.__cause__.args == ("boom x",) and result.error.error_type == "RuntimeError"
    assert result.outbox == () and result.events == ()
    assert _record(image, actor_oid) == before  # the actor's committed bytes: untouched
    new_txns = [(t.description, {rec.oid for rec in t})
                for t in image.db.storage.iterator(last_before) if t.tid != last_before]
    assert len(new_txns) == 1  # only the failure record, in its own transaction
    description, touched = new_txns[0]
    assert description.startswith(b"step failed a.explode")
    assert actor_oid not in touched
    with image.reading() as root:
        assert len(root["mailboxes"]) == mailboxes_before  # no 'elsewhere' mailbox
        box = root["mailboxes"]["a"]
        assert len(box) == 0 and key in box.dead  # kept as a dead letter, not lost
        assert root["metrics"].value("steps.doomed") == 1
        assert root["metrics"].recent_failures()[0]["detail"] == "RuntimeError: boom x"


@pytest.mark.parametrize(
    ("selector", "why"),
    [("not_a_handler", "plain method"), ("_p_activate", "private"), ("clone", "missing"),
     ("__class__", "dunder"), ("", "empty")],
)
def test_only_handlers_are_reachable(image: Image, selector: str, why: str) -> None:
    _setup(image, "a")
    key = _post(image, Envelope("a", selector))
    result = _run(image, "a", key)
    assert not result.ok, why
    assert isinstance(result.error, StepFailed)
    assert isinstance(result.error.__cause__, UnknownSelector)
    assert result.error.__cause__.selector == selector
    with image.reading() as root:
        assert root["actors"]["a"].calls == 0


def test_forced_conflict_is_retried_then_commits(image: Image) -> None:
    _setup(image, "a")
    key = _post(image, Envelope("a", "contend", (1,)))
    result = _run(image, "a", key)
    assert result.ok and result.attempts == 2
    with image.reading() as root:
        assert root["metrics"].value("steps.retries") == 1
        assert root["actors"]["a"].last == ("rival", 0)
        assert len(root["mailboxes"]["a"]) == 0


def test_exhausted_retries_are_reported_not_swallowed(image: Image) -> None:
    _setup(image, "a")
    key = _post(image, Envelope("a", "contend", (99,)))
    result = _run(image, "a", key)
    attempts = image.config["steps.max_attempts"]
    assert not result.ok and isinstance(result.error, RetriesExhausted)
    assert result.attempts == attempts == result.error.attempts
    with image.reading() as root:
        assert root["metrics"].value("steps.exhausted") == 1
        assert key in root["mailboxes"]["a"].dead


def test_concurrent_steps_on_different_actors_all_commit(image: Image) -> None:
    names = [f"actor{i}" for i in range(4)]
    _setup(image, *names)
    per_actor = 25
    keys = {n: [_post(image, Envelope(n, "note", (i,))) for i in range(per_actor)]
            for n in names}
    failures: list[Any] = []

    def worker(name: str) -> None:
        conn = image.connection()
        runner = StepRunner(conn, image.config)
        for key in keys[name]:
            result = runner.run(name, key)
            if not result.ok:
                failures.append(result.error)
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    with image.reading() as root:
        metrics = root["metrics"]
        assert metrics.value("steps.committed") == per_actor * len(names)
        for n in names:
            assert root["actors"][n].calls == per_actor
            assert metrics.value(f"steps.actor.{n}") == per_actor
            assert len(root["mailboxes"][n]) == 0


def test_unknown_selector_error_is_typed(image: Image) -> None:
    from kernel.dispatch import resolve_handler

    with pytest.raises(UnknownSelector) as info:
        resolve_handler(Recorder(), "a", "nope")
    assert (info.value.actor, info.value.selector) == ("a", "nope")


def test_a_send_forwarded_through_a_mailbox_keeps_its_answer_in_the_log(image: Image) -> None:
    """A client's send another kernel posted for this actor's holder: its answer (or
    its failure) is kept with the step, where that kernel reads it if the relay
    did not bring it (`kernel.routing_relay`); a mission's message keeps none."""
    _setup(image, "a", "b")
    client = Address(0, b"\x00c", "KEY", 1).encode()
    sent = Envelope("a", "forward", ("b", 1), reply_to=client, origin="k2")
    failing = Envelope("a", "explode", ("x",), reply_to=client, origin="k2")
    of_mission = Envelope("a", "forward", ("b", 2), reply_to=client, mission="m1")
    for env in (sent, failing, of_mission):
        _run(image, "a", _post(image, env))
    found = dict(answers.recorded(image.db))
    assert set(found) == {sent.id, failing.id}
    assert found[sent.id].ok and found[sent.id].value == "sent"
    assert found[sent.id].owner == "KEY"
    assert not found[failing.id].ok and found[failing.id].error_type == "RuntimeError"
