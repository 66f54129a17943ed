"""Naming missions: the rows of `batos missions`, prefixes, short ids, ages.

`mission_list` runs on a real image's `missions` BTree holding real `Mission`
objects (their states set as genesis's state prototypes); `resolve_ref` runs
against a stand-in for the client (it only needs `send`).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from actors import mission_list
from actors.cli_missions import age, short_ids
from actors.mission import Mission, state_prototype
from kernel import wire
from kernel.cli_refs import AmbiguousRef, EmptyRef, resolve_ref
from kernel.client import RemoteError
from kernel.image import Image

STATES = ["IDLE", "DELEGATING", "COMPLETE", "FAILED"]


def fill(image: Image, rng: random.Random, count: int) -> list[tuple[str, str, float]]:
    """`count` missions with random ids, states and creation times."""
    made = []
    with image.transaction() as root:
        for n in range(count):
            mission_id = f"{rng.getrandbits(128):032x}"
            mission = Mission(mission_id, f"question {n}", {})
            state = rng.choice(STATES)
            mission.set_slot("state*", state_prototype(root, state))
            mission.created = rng.uniform(0, 1e6)
            root["missions"][mission_id] = mission
            made.append((mission_id, state, mission.created))
    return made


def test_recent_is_newest_first_filtered_and_limited(image: Image,
                                                     rng: random.Random) -> None:
    made = fill(image, rng, 30)
    newest = sorted(made, key=lambda m: m[2], reverse=True)
    with image.reading() as root:
        rows = mission_list.recent(root["missions"], None, 7)
        assert [r["id"] for r in rows] == [m[0] for m in newest[:7]]
        done = mission_list.recent(root["missions"], "complete", 100)
        assert [r["id"] for r in done] == [m[0] for m in newest if m[1] == "COMPLETE"]
        running = mission_list.recent(root["missions"], "running", 100)
        assert {r["id"] for r in running} == {m[0] for m in made
                                             if m[1] not in ("COMPLETE", "FAILED")}


def test_matching_walks_only_the_prefix_range(image: Image, rng: random.Random) -> None:
    made = fill(image, rng, 40)
    ids = sorted(m[0] for m in made)
    with image.reading() as root:
        for mission_id in ids:
            assert mission_list.matching(root["missions"], mission_id[:12]) == [mission_id]
        first = ids[0][0]
        expected = [i for i in ids if i.startswith(first)]
        assert mission_list.matching(root["missions"], first, 100) == expected
        assert len(mission_list.matching(root["missions"], "", 3)) == 0
        assert mission_list.matching(root["missions"], first.upper(), 100) == expected


class Answers:
    """What the entry actor's `resolve` answers, or the error it raises."""

    def __init__(self, value: Any = None, error: wire.ErrorCode | None = None) -> None:
        self.value, self.error, self.asked = value, error, 0

    def send(self, actor: str, selector: str, *args: Any) -> Any:
        self.asked += 1
        if self.error is not None:
            raise RemoteError(wire.Error(code=self.error, message="x", ref="r"))
        return self.value


FULL = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("ref", "answers", "expected", "asked"), [
    (FULL, Answers([]), FULL, 0),                       # a full id: no question
    ("0123", Answers([FULL]), FULL, 1),                 # one match
    ("feed", Answers([]), "feed", 1),                   # no mission: left as typed
    ("0123", Answers(error=wire.ErrorCode.FORBIDDEN), "0123", 1),  # may not send
    ("0123", Answers(error=wire.ErrorCode.UNKNOWN_SELECTOR), "0123", 1),
])
def test_resolve_ref(ref: str, answers: Answers, expected: str, asked: int) -> None:
    assert resolve_ref(answers, "missions", ref) == expected  # type: ignore[arg-type]
    assert answers.asked == asked


def test_resolve_ref_refuses_ambiguous_and_empty_and_passes_other_errors() -> None:
    other = FULL[:-1] + "0"
    with pytest.raises(AmbiguousRef) as caught:
        resolve_ref(Answers([FULL, other]), "missions", "01")  # type: ignore[arg-type]
    assert caught.value.candidates == [FULL, other] and caught.value.prefix == "01"
    with pytest.raises(EmptyRef):
        resolve_ref(Answers([FULL]), "missions", "  ")  # type: ignore[arg-type]
    with pytest.raises(RemoteError):
        resolve_ref(Answers(error=wire.ErrorCode.OVERLOADED), "missions",  # type: ignore[arg-type]
                    "01")


def test_short_ids_are_unique_starts_and_ages_read_well() -> None:
    ids = [FULL, FULL[:10] + "f" * 22, "f" * 32]
    shorts = short_ids(ids)
    assert shorts == {FULL: FULL[:11], ids[1]: ids[1][:11], ids[2]: "f" * 8}
    assert [age(s) for s in (0, 59, 60, 3599, 3600, 86400 * 3, -5)] == \
        ["0s", "59s", "1m", "59m", "1h", "3d", "0s"]
