"""The answer ledger: the durable record that a `send` id was answered."""

from __future__ import annotations

import transaction
import ZODB
from ZODB.MappingStorage import MappingStorage

from kernel import answers
from kernel.answers import AlreadyAnswered, Answer, AnswerLedger
from kernel.errors import StepFailed


def test_an_answer_survives_a_commit_and_a_new_connection() -> None:
    db = ZODB.DB(MappingStorage())
    with db.transaction() as conn:
        answers.install(conn.root())
        answers.ledger_of(conn.root()).record("m1", Answer(True, {"x": [1, 2]}), limit=10)
    with db.transaction() as conn:
        assert answers.ledger_of(conn.root()).recall("m1") == Answer(True, {"x": [1, 2]})
        assert answers.ledger_of(conn.root()).recall("m2") is None
    db.close()


def test_a_known_id_raises_already_answered_with_its_answer() -> None:
    root: dict[str, AnswerLedger] = {}
    assert answers.install(root) and not answers.install(root)
    failure = StepFailed("recorder", "explode", "m1", "RuntimeError: boom")
    root["answers"].record("m1", Answer.failed(failure, "KEY"), limit=10)
    try:
        answers.check_new(root, "m1")
    except AlreadyAnswered as known:
        error = known.answer.error(known.message_id)
        assert isinstance(error, StepFailed)
        assert (error.actor, error.selector, error.message_id, error.cause) == (
            "recorder", "explode", "m1", "RuntimeError: boom")
        assert known.answer.owner == "KEY"
    else:
        raise AssertionError("a recorded id was taken as new")
    answers.check_new(root, "m2")  # unknown: no error


def test_the_first_answer_stands() -> None:
    ledger = AnswerLedger()
    ledger.record("m1", Answer(True, "first"), limit=10)
    ledger.record("m1", Answer(True, "second"), limit=10)
    assert ledger.recall("m1") == Answer(True, "first") and len(ledger) == 1


def test_the_ledger_keeps_only_the_newest_entries() -> None:
    ledger = AnswerLedger()
    for n in range(50):
        ledger.record(f"m{n:02d}", Answer(True, n), limit=20)
    assert len(ledger) == 20 == len(ledger.by_id) == len(ledger.by_age)
    assert ledger.recall("m29") is None
    assert ledger.recall("m30") == Answer(True, 30)
    assert ledger.recall("m49") == Answer(True, 49)
    transaction.abort()
