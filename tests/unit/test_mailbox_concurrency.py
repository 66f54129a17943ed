"""Concurrent takes and posts on one mailbox commit without a conflict (real FileStorage).

Passes of different missions run at once on one pass actor (a scheduler lane
per mission), each step taking its own message from the actor's one mailbox
in its own transaction. A conflict there would make a pass generate again,
so these changes must merge: two connections change one mailbox, both
commit. Two takes of the same message still conflict (exactly-once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import transaction
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

from kernel import mailbox as mb
from kernel.errors import MessageGone
from kernel.image import Image
from kernel.mailbox import Envelope

Change = Callable[[mb.Mailbox, list[str]], Any]


def _posted(image: Image, count: int) -> list[str]:
    with image.transaction() as root:
        return [mb.post(root, Envelope("a", "note", (i,)), capacity=100) for i in range(count)]


@contextmanager
def _box(image: Image) -> Iterator[tuple[mb.Mailbox, transaction.TransactionManager]]:
    """Actor a's mailbox on a connection of its own (as a step worker has)."""
    tm = transaction.TransactionManager()
    conn = image.db.open(transaction_manager=tm)
    try:
        tm.begin()
        yield conn.root()["mailboxes"]["a"], tm
    finally:
        tm.abort()
        conn.close()


def _both(image: Image, keys: list[str], first: Change, second: Change) -> None:
    """`first` and `second` change the mailbox from one snapshot; both commit."""
    with _box(image) as (box1, tm1), _box(image) as (box2, tm2):
        first(box1, keys)
        second(box2, keys)
        tm1.commit()
        tm2.commit()


CASES: dict[str, tuple[int, Change, Change, list[int]]] = {
    # name: (messages, first change, second change, args left pending)
    "the oldest and the next": (2, lambda b, k: b.take(k[0]), lambda b, k: b.take(k[1]), []),
    "the oldest and the newest": (5, lambda b, k: b.take(k[0]), lambda b, k: b.take(k[4]),
                                  [1, 2, 3]),
    "two in the middle": (6, lambda b, k: b.take(k[2]), lambda b, k: b.take(k[3]),
                          [0, 1, 4, 5]),
    "the only one and a post": (1, lambda b, k: b.take(k[0]),
                                lambda b, k: b.post(Envelope("a", "note", (9,)), 100), [9]),
    "a take and a post each": (3, lambda b, k: (b.take(k[0]),
                                                b.post(Envelope("a", "note", (7,)), 100)),
                               lambda b, k: (b.take(k[1]),
                                             b.post(Envelope("a", "note", (8,)), 100)),
                               [2, 7, 8]),
    "two posts": (0, lambda b, k: b.post(Envelope("a", "note", (7,)), 100),
                  lambda b, k: b.post(Envelope("a", "note", (8,)), 100), [7, 8]),
    "an interruption and a take": (2, lambda b, k: b.interrupted(k[0]),
                                   lambda b, k: b.take(k[1]), [0]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_concurrent_changes_of_different_messages_merge(image: Image, name: str) -> None:
    count, first, second, left = CASES[name]
    with image.transaction() as root:
        mb.mailbox_for(root, "a")
    keys = _posted(image, count)
    _both(image, keys, first, second)
    with image.reading() as root:
        box = root["mailboxes"]["a"]
        assert sorted(box.peek(k).args[0] for k in box.keys()) == left
        assert len(box) == len(left)


def test_two_takes_of_one_message_conflict_and_the_retry_finds_it_gone(image: Image) -> None:
    [key] = _posted(image, 1)
    with _box(image) as (box1, tm1), _box(image) as (box2, tm2):
        box1.take(key)
        box2.take(key)
        tm1.commit()
        with pytest.raises(ConflictError):
            tm2.commit()
    with pytest.raises(MessageGone), image.transaction() as root:
        mb.mailbox_for(root, "a").take(key)


def test_a_mailbox_of_an_older_image_is_read_and_upgraded_by_the_next_post(
        image: Image) -> None:
    with image.transaction() as root:  # as older images stored it: dicts, no HEAD key
        box = mb.mailbox_for(root, "a")
        box.pending = OOBTree({"00000000000000000001.m1": Envelope("a", "old", (1,),
                                                                   id="m1").to_state()})
        box.size.change(1)
    with image.transaction() as root:
        box = mb.mailbox_for(root, "a")
        assert box.keys() == ["00000000000000000001.m1"] and len(box) == 1
        assert box.interrupted("00000000000000000001.m1") == 1
        key = mb.post(root, Envelope("a", "new", (2,)), capacity=10)
        assert mb.HEAD in box.pending
    with image.transaction() as root:
        box = mb.mailbox_for(root, "a")
        old = box.take("00000000000000000001.m1")
        assert (old.selector, old.attempt) == ("old", 1)
        assert box.take(key).args == (2,) and len(box) == 0 and box.keys() == []
