"""Mission ids as an operator types them: any unique prefix of the 32-hex id.

The CLI asks the mission entry actor (config `kernel.mission_entry`) which
ids start with the prefix: its `resolve(prefix, limit)` handler is part of the
entry actor's contract, like `watch` and `status`. One match is the id; none
leaves the text as typed (it may name a plain message, which the kernel then
finds or answers `not_found`); several are `AmbiguousRef`, carrying them.

A full id is used as given, without a question to the kernel, and so is any
ref when the key may not `send` (a `client` key over tcp): the kernel then
answers for the text as typed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kernel import config as config_mod
from kernel import wire
from kernel.client import Client, RemoteError
from kernel.errors import KernelError

FULL_ID = re.compile(r"[0-9a-f]{32}")
CANDIDATES_SHOWN = 10
DEFAULT_ENTRY = "missions"
PASS_THROUGH = frozenset({wire.ErrorCode.FORBIDDEN, wire.ErrorCode.UNKNOWN_ACTOR,
                          wire.ErrorCode.UNKNOWN_SELECTOR})


class RefError(KernelError):
    """A mission id the CLI could not make out."""


class AmbiguousRef(RefError):
    """Several missions start with the prefix; `candidates` are (some of) them."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        more = "" if len(candidates) <= CANDIDATES_SHOWN else ", ..."
        super().__init__(f"{prefix!r} names {'more than ' if more else ''}"
                         f"{min(len(candidates), CANDIDATES_SHOWN)} missions: "
                         + ", ".join(candidates[:CANDIDATES_SHOWN]) + more
                         + " (type more of the id)")
        self.prefix = prefix
        self.candidates = candidates[:CANDIDATES_SHOWN]


class EmptyRef(RefError):
    """An empty (or blank) id."""

    def __init__(self) -> None:
        super().__init__("an empty mission id (give the id, or any unique start of it)")


def mission_entry(image: Path) -> str:
    """The name of the mission entry actor of the image in `image`."""
    try:
        cfg = config_mod.load(image if (image / "Data.fs").exists() else None)
    except KernelError:
        return DEFAULT_ENTRY
    return str(cfg.get("kernel.mission_entry", DEFAULT_ENTRY))


def resolve_ref(client: Client, entry: str, ref: str) -> str:
    """The full mission id that `ref` starts, or `ref` itself (see the module note)."""
    text = ref.strip().lower()
    if not text:
        raise EmptyRef()
    if FULL_ID.fullmatch(text):
        return text
    try:
        found: Any = client.send(entry, "resolve", text, CANDIDATES_SHOWN)
    except RemoteError as exc:
        if exc.code in PASS_THROUGH:  # may not send, or an entry actor without `resolve`
            return ref
        raise
    ids = [str(i) for i in found or ()]
    if len(ids) == 1:
        return ids[0]
    if len(ids) > 1:
        raise AmbiguousRef(text, ids)
    return ref
