"""Durable bounded mailboxes."""

from __future__ import annotations

import pytest

from kernel import mailbox as mb
from kernel.actions import Address
from kernel.errors import MessageGone, Overloaded
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.serving import Worker
from tests.helpers.actors import Recorder


def test_post_take_order_and_survival_across_reopen(image: Image) -> None:
    with image.transaction() as root:
        keys = [mb.post(root, Envelope("a", "note", (i,)), capacity=10) for i in range(3)]
    directory = image.directory
    image.close()
    with Image.open(directory) as again, again.transaction() as root:
        assert [actor for actor, _ in mb.pending(root)] == ["a", "a", "a"]
        box = mb.mailbox_for(root, "a")
        assert box.keys() == sorted(keys)
        assert [box.take(k).args for k in keys] == [(0,), (1,), (2,)]
        assert len(box) == 0


def test_full_mailbox_is_overloaded_and_unchanged(image: Image) -> None:
    with image.transaction() as root:
        for i in range(2):
            mb.post(root, Envelope("a", "note", (i,)), capacity=2)
    with pytest.raises(Overloaded) as info, image.transaction() as root:
        mb.post(root, Envelope("a", "note", (9,)), capacity=2)
    assert info.value.actor == "a" and info.value.capacity == 2
    with image.reading() as root:
        assert len(root["mailboxes"]["a"]) == 2


def test_take_twice_is_message_gone(image: Image) -> None:
    with image.transaction() as root:
        key = mb.post(root, Envelope("a", "note"), capacity=5)
    with image.transaction() as root:
        root["mailboxes"]["a"].take(key)
    with pytest.raises(MessageGone), image.transaction() as root:
        root["mailboxes"]["a"].take(key)


def test_bury_and_requeue_keep_the_message(image: Image) -> None:
    env = Envelope("a", "note", ("x",), {"k": 1}, reply_to="ab", mission="m1")
    with image.transaction() as root:
        key = mb.post(root, env, capacity=5)
        root["mailboxes"]["a"].bury(key, {"error": "RuntimeError"})
    with image.transaction() as root:
        box = root["mailboxes"]["a"]
        assert len(box) == 0 and box.dead[key]["error"] == {"error": "RuntimeError"}
        box.requeue(key)
    with image.reading() as root:
        assert root["mailboxes"]["a"].peek(key) == env


def test_envelope_state_round_trip() -> None:
    env = Envelope("a", "s", (1, [2]), {"x": None}, reply_to="id", mission="m", attempt=2)
    assert Envelope.from_state(env.to_state()) == env


def test_a_resent_client_send_still_pending_is_admitted_once(image: Image) -> None:
    """A send forwarded to another kernel's actor and resent (to this kernel after a
    restart, or to another kernel) is the same pending message, not a second one."""
    with image.transaction() as root:
        root["actors"]["relay"] = Recorder()
    worker = Worker(image)
    sent = Envelope("relay", "note", (1,), reply_to=Address(0, b"c", "", 1).encode(),
                    origin="a")
    first = worker.admit(sent)
    assert worker.admit(sent) == first
    assert worker.admit(Envelope("relay", "note", (1,), id=sent.id, mission="m")) != first
    with image.reading() as root:
        box = root["mailboxes"]["relay"]
        assert len(box) == 2 and box.key_of(sent.id) == first
        assert box.key_of("unknown") is None
    worker.conn.close()
