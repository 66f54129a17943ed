"""Missions by name: the newest missions as rows, and the ids a prefix names.

Both read `root["missions"]` (an OOBTree keyed by the 32-hex mission id) and
change nothing. They serve the entry actor's `list` and `resolve` handlers
(`batos missions`, and the id prefixes every CLI command accepts) and, when no
kernel runs, `batos missions` on the image opened read-only.

A prefix is looked up as a key range (`keys(min=prefix)` until a key stops
starting with it), so resolving costs a few keys, not a scan. Listing sorts
by creation time and so reads every mission; that is bounded by the image's
missions, which the audit keeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

from actors import live_passes

FINAL_STATES = ("COMPLETE", "FAILED")
QUESTION_CHARS = 200  # a row carries the start of the question, not all of it


def mission_row(mission: Any) -> dict[str, Any]:
    """One mission as plain data: id, state, created, finished, pass, confidence, question."""
    passes = mission.get_slot("passes", []) or []
    last = passes[-1] if passes else None
    return {
        "id": mission.id,
        "state": mission.state_name if mission.has_slot("state*") else None,
        "created": mission.get_slot("created", None),
        "finished": mission.get_slot("finished", None),
        "pass": None if last is None else str(last.get("pass")),
        "round": mission.get_slot("round", 0),
        "confidence": mission.get_slot("confidence", None),
        "error": mission.get_slot("error", None),
        "question": str(mission.get_slot("text", ""))[:QUESTION_CHARS],
        "running_pass": live_passes.snapshot(mission.id),  # generating now, if any
    }


def recent(missions: Mapping[str, Any], state: str | None = None,
           limit: int = 20) -> list[dict[str, Any]]:
    """The newest `limit` missions (newest first), only those in `state` if given.

    `state` is a state name (IDLE ... FAILED), or "running" for every state
    that is not final.
    """
    chosen = (m for m in missions.values() if _in_state(m, state))
    newest = heapq.nlargest(max(0, int(limit)), chosen,
                            key=lambda m: float(m.get_slot("created", 0.0) or 0.0))
    return [mission_row(m) for m in newest]


def matching(missions: Any, prefix: str, limit: int = 10) -> list[str]:
    """The ids starting with `prefix`, at most `limit` + 1 of them (so a caller
    can tell "exactly `limit`" from "more")."""
    prefix = prefix.lower()
    if not prefix:
        return []
    return list(itertools.islice(_keys_from(missions, prefix), max(0, int(limit)) + 1))


def _keys_from(missions: Any, prefix: str) -> Iterator[str]:
    for key in missions.keys(min=prefix):
        if not str(key).startswith(prefix):
            return
        yield str(key)


def _in_state(mission: Any, state: str | None) -> bool:
    if state is None:
        return True
    name = mission.state_name if mission.has_slot("state*") else None
    if state.lower() == "running":
        return name not in FINAL_STATES
    return name == state.upper()
