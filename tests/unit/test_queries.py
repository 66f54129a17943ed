"""Read-only queries (`kernel.queries`): answered from the committed image, no step,
nothing written; a handler that is not a `@query` is left to the ordinary step."""

from __future__ import annotations

from typing import Any

import pytest
from persistent import Persistent

from kernel import mailbox as mb
from kernel import queries
from kernel.errors import QueryWrote, StepFailed
from kernel.handler import QUERY_SELECTORS, handler, query
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepContext


class Ledger(Persistent):
    """An actor with queries that behave and queries that misbehave."""

    def __init__(self) -> None:
        self.entries: dict[str, int] = {}

    @query
    def look(self, step: StepContext, name: str) -> int | None:
        return self.entries.get(name)

    @query
    def scribble(self, step: StepContext, name: str) -> None:
        self.entries = {**self.entries, name: -1}

    @query
    def chatter(self, step: StepContext) -> None:
        step.send("ledger", "put", "x", 1)

    @query
    def shout(self, step: StepContext) -> None:
        step.emit("progress", k=1)

    @query
    def missing(self, step: StepContext, name: str) -> int:
        raise KeyError(name)

    @handler
    def put(self, step: StepContext, name: str, value: int) -> None:
        self.entries = {**self.entries, name: value}


@pytest.fixture
def ledger(image: Image) -> Image:
    with image.transaction() as root:
        root["actors"]["ledger"] = Ledger()
        root["actors"]["ledger"].entries = {"a": 1}
    return image


def ask(image: Image, selector: str, *args: Any, actor: str = "ledger") -> Any:
    conn = image.connection()
    try:
        return queries.answer(conn, Envelope(actor, selector, args))
    finally:
        conn.close()


def test_the_marked_names_are_known_before_the_image_is_read() -> None:
    assert {"look", "scribble", "missing"} <= QUERY_SELECTORS
    assert "put" not in QUERY_SELECTORS


def test_a_query_answers_from_the_committed_image(ledger: Image) -> None:
    result = ask(ledger, "look", "a")
    assert result.ok and result.value == 1
    assert result.key.startswith(queries.KEY_PREFIX)
    assert (result.outbox, result.events) == ((), ())
    with ledger.transaction() as root:
        root["actors"]["ledger"].entries = {"a": 2}
    assert ask(ledger, "look", "a").value == 2


def test_a_query_leaves_no_trace_in_the_image(ledger: Image) -> None:
    before = ledger.db.lastTransaction()
    ask(ledger, "look", "a")
    ask(ledger, "missing", "z")
    assert ledger.db.lastTransaction() == before
    with ledger.reading() as root:
        assert list(mb.pending(root)) == []


@pytest.mark.parametrize("selector", ["put", "nothing_here"])
def test_a_handler_that_is_not_a_query_is_left_to_the_step(ledger: Image,
                                                           selector: str) -> None:
    assert ask(ledger, selector, "a", 3) is None
    with ledger.reading() as root:
        assert root["actors"]["ledger"].entries == {"a": 1}


def test_an_unknown_actor_is_left_to_the_step(ledger: Image) -> None:
    assert ask(ledger, "look", "a", actor="nobody") is None


@pytest.mark.parametrize(("selector", "args"), [
    ("scribble", ("a",)),  # changes the actor
    ("chatter", ()),  # posts a message
    ("shout", ()),  # emits an event
])
def test_a_query_that_writes_is_refused_and_changes_nothing(ledger: Image, selector: str,
                                                             args: tuple[Any, ...]) -> None:
    result = ask(ledger, selector, *args)
    assert not result.ok
    assert isinstance(result.error, StepFailed)
    assert isinstance(result.error.__cause__, QueryWrote)
    assert (result.error.__cause__.actor, result.error.__cause__.selector) == \
        ("ledger", selector)
    with ledger.reading() as root:
        assert root["actors"]["ledger"].entries == {"a": 1}
        assert list(mb.pending(root)) == []


def test_what_a_query_raises_reaches_the_client_typed(ledger: Image) -> None:
    result = ask(ledger, "missing", "z")
    assert not result.ok
    assert isinstance(result.error, StepFailed)
    assert result.error.error_type == "KeyError"
    assert (result.error.actor, result.error.selector) == ("ledger", "missing")
