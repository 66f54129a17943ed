"""Answered sends, kept in the transaction log: written with the step, read at start."""

from __future__ import annotations

from pathlib import Path

import ZODB
import ZODB.FileStorage
from ZODB.MappingStorage import MappingStorage

from kernel import answers
from kernel.answers import Answer
from kernel.errors import StepFailed


def commit_with(db: ZODB.DB, *noted: tuple[str, Answer]) -> None:
    """One transaction per answer, each touching the root as a step would."""
    for message_id, answer in noted:
        with db.transaction() as conn:
            conn.root()[message_id] = 1
            answers.note(conn.transaction_manager.get(), message_id, answer)


def test_answers_come_back_oldest_first_from_a_reopened_storage(tmp_path: Path) -> None:
    path = str(tmp_path / "Data.fs")
    failure = StepFailed("recorder", "explode", "m2", "RuntimeError: boom", "RuntimeError")
    db = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    commit_with(db, ("m1", Answer(True, {"x": [1, 2]}, "KEY")),
                ("m2", Answer.failed(failure, "")))
    with db.transaction() as conn:  # a transaction with no answer is skipped
        conn.root()["other"] = 2
    db.close()
    reopened = ZODB.DB(ZODB.FileStorage.FileStorage(path))
    found = answers.recorded(reopened)
    reopened.close()
    assert [message_id for message_id, _ in found] == ["m1", "m2"]
    assert found[0][1] == Answer(True, {"x": [1, 2]}, "KEY")
    error = found[1][1].error("m2")
    assert isinstance(error, StepFailed)
    assert (error.actor, error.selector, error.cause, error.error_type) == (
        "recorder", "explode", "RuntimeError: boom", "RuntimeError")


def test_only_the_newest_transactions_are_read(tmp_path: Path) -> None:
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs")))
    commit_with(db, *[(f"m{n}", Answer(True, n)) for n in range(10)])
    found = answers.recorded(db, transactions=4)
    db.close()
    assert [message_id for message_id, _ in found] == ["m6", "m7", "m8", "m9"]


def test_a_value_the_wire_cannot_carry_is_not_kept(tmp_path: Path) -> None:
    db = ZODB.DB(ZODB.FileStorage.FileStorage(str(tmp_path / "Data.fs")))
    commit_with(db, ("odd", Answer(True, object())), ("fine", Answer(True, "ok")))
    found = answers.recorded(db)
    db.close()
    assert [message_id for message_id, _ in found] == ["fine"]


def test_a_storage_without_a_log_gives_no_answers() -> None:
    db = ZODB.DB(MappingStorage())
    commit_with(db, ("m1", Answer(True, 1)))
    assert answers.recorded(db) == []
    db.close()
