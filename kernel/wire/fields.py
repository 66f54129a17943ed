"""Wire constants, limits, message ids and the checks of each field type."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeAlias

# -- protocol constants -------------------------------------------------------

VERSION = b"batos/1"
HEARTBEAT_INTERVAL_MS = 1000  # default interval, both directions
HEARTBEAT_LIVENESS = 3  # a peer is dead after this many silent intervals
MAX_ID_LEN = 64
MAX_HEARTBEAT_MS = 3_600_000

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_ID_RE = re.compile(rf"[!-~]{{1,{MAX_ID_LEN}}}")  # visible ASCII, no spaces
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack can carry
_BYTES_LIKE = (bytes, bytearray, memoryview)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied to every inbound (and outbound) payload."""

    max_payload_bytes: int = 1 << 20
    max_depth: int = 32  # containers enclosing a value, the payload map counts
    max_str_bytes: int = 256 << 10  # UTF-8 bytes, keys included
    max_items: int = 10_000  # per list or map

    def __post_init__(self) -> None:
        # the tree walk recurses once per level; keep it far from Python's stack limit
        if not 1 <= self.max_depth <= 256:
            raise ValueError("max_depth must be in 1..256")
        if min(self.max_payload_bytes, self.max_str_bytes, self.max_items) < 1:
            raise ValueError("limits must be positive")


DEFAULT_LIMITS = Limits()


def new_id() -> str:
    """A fresh message id: 32 random hex characters (128 bits).

    Random throughout, so any start of an id names it as well in one process
    as across processes and kernels (`batos` accepts a unique prefix of a
    mission id). Nothing orders by id: missions are listed by their `created`
    time, mailbox and audit keys begin with `time_ns`. Ids are idempotency
    keys, not secrets; `secrets` is the standard library's reader of the
    system's random source, safe across `fork`.
    """
    return secrets.token_hex(16)


class _Invalid(Exception):
    """A field check failed; always converted to ``BadField`` here."""


# -- field checks: each returns the (possibly normalized) value or raises -----

Check: TypeAlias = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


def _expect(value: Any, types: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, types) or (isinstance(value, bool) and types is not bool):
        raise _Invalid(f"expected {what}, got {_type_name(value)}")
    return value


def _any(value: Any) -> Any:
    return value  # the tree walk already vetted it


# Each check lets the exact wire type through first (what msgpack produces);
# anything else takes the general test, which decides alike and words the error.


def _str(value: Any) -> str:
    if type(value) is str:
        return value
    return _expect(value, str, "str")


def _text(value: Any) -> str:
    if not _str(value):
        raise _Invalid("must not be empty")
    return value


def _msg_id(value: Any) -> str:
    if type(value) is str and _ID_RE.fullmatch(value):
        return value
    if not _ID_RE.fullmatch(_str(value)):
        raise _Invalid(f"must be 1..{MAX_ID_LEN} visible ASCII characters")
    return value


def _name(value: Any) -> str:
    if type(value) is str and _NAME_RE.fullmatch(value):
        return value
    if not _NAME_RE.fullmatch(_str(value)):
        raise _Invalid("must match [A-Za-z_][A-Za-z0-9_.-]{0,63}")
    return value


def _names(value: Any) -> list[str]:
    for item in _expect(value, list, "list of names"):
        _name(item)
    if len(set(value)) != len(value):
        raise _Invalid("names must be unique")
    return value


def _map(value: Any) -> dict[str, Any]:
    if type(value) is dict:
        return value
    return _expect(value, dict, "map")


def _list(value: Any) -> list[Any]:
    if type(value) is list:
        return value
    return _expect(value, list, "list")


def _bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    return _expect(value, bool, "bool")


def _float(value: Any) -> float:
    if type(value) is float:
        return value
    return float(_expect(value, (int, float), "float"))


def _int_in(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if not low <= _expect(value, int, "int") <= high:
            raise _Invalid(f"must be in {low}..{high}")
        return value

    return check


def _optional(check: Check) -> Check:
    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


# Field types: the annotation's metadata is the check decode and encode apply.
MsgId: TypeAlias = Annotated[str, _msg_id]
OptMsgId: TypeAlias = Annotated[str | None, _optional(_msg_id)]
Name: TypeAlias = Annotated[str, _name]
Names: TypeAlias = Annotated[list[str], _names]
Text: TypeAlias = Annotated[str, _text]
Str: TypeAlias = Annotated[str, _str]
OptStr: TypeAlias = Annotated[str | None, _optional(_str)]
Flag: TypeAlias = Annotated[bool, _bool]
Seconds: TypeAlias = Annotated[float, _float]
HeartbeatMs: TypeAlias = Annotated[int, _int_in(1, MAX_HEARTBEAT_MS)]
Attempt: TypeAlias = Annotated[int, _int_in(1, 2**31 - 1)]
WireMap: TypeAlias = Annotated[dict[str, Any], _map]
WireList: TypeAlias = Annotated[list[Any], _list]
WireValue: TypeAlias = Annotated[Any, _any]  # nil, bool, int, float, str, bin, list, map


