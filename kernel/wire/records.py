"""One frozen record per message kind, the kind table and the direction tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias, get_type_hints

from kernel.wire.fields import (
    HEARTBEAT_INTERVAL_MS,
    Attempt,
    Check,
    Flag,
    HeartbeatMs,
    MsgId,
    Name,
    Names,
    OptMsgId,
    OptStr,
    Seconds,
    Str,
    Text,
    WireList,
    WireMap,
    WireValue,
    _Invalid,
    new_id,
)

# -- records: one frozen class per kind -----------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """Base of every message record; ``id`` is required on the wire."""

    kind: ClassVar[str]
    id: MsgId = field(default_factory=new_id)  # required on the wire all the same


# client -> kernel


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Record):
    """Liveness probe from any peer; answered by ``pong``."""

    kind: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True, kw_only=True)
class Mission(Record):
    """Start a mission: the mission entry actor gets ``text``; its id is this ``id``."""

    kind: ClassVar[str] = "mission"
    text: Text
    options: WireMap = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Send(Record):
    """Send ``selector`` with arguments to a named actor (admin only)."""

    kind: ClassVar[str] = "send"
    actor: Name
    selector: Name
    args: WireList = field(default_factory=list)
    kwargs: WireMap = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Watch(Record):
    """Stream a mission's events (or a message's outcome) to this peer."""

    kind: ClassVar[str] = "watch"
    ref: MsgId


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel(Record):
    """Cancel a mission or a pending message."""

    kind: ClassVar[str] = "cancel"
    ref: MsgId


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Record):
    """State of one mission or message, or of the kernel when ``ref`` is nil."""

    kind: ClassVar[str] = "status"
    ref: OptMsgId = None


# kernel -> client


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted(Record):
    """The kernel took the message ``ref`` in hand."""

    kind: ClassVar[str] = "accepted"
    ref: MsgId


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Record):
    """One step of a mission ``ref``: a named event and its data."""

    kind: ClassVar[str] = "event"
    ref: MsgId
    event: Name
    data: WireMap = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result(Record):
    """The final value for ``ref``; nothing more follows for it."""

    kind: ClassVar[str] = "result"
    ref: MsgId
    value: WireValue = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Error(Record):
    """A typed failure, about ``ref`` when the offending id could be read."""

    kind: ClassVar[str] = "error"
    code: Name  # an ErrorCode value; peers treat unknown codes as internal
    message: Str
    ref: OptMsgId = None
    details: WireMap = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(Record):
    """Answer to ``ping``: the kernel's wall clock, seconds since the epoch."""

    kind: ClassVar[str] = "pong"
    time: Seconds
    ref: OptMsgId = None  # the ping's id


# actor -> kernel (and Heartbeat both ways)


@dataclass(frozen=True, slots=True, kw_only=True)
class Register(Record):
    """Attach an external actor: its name, the selectors it handles, its beat."""

    kind: ClassVar[str] = "register"
    name: Name
    selectors: Names
    heartbeat_ms: HeartbeatMs = HEARTBEAT_INTERVAL_MS


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(Record):
    """I am alive (actor <-> kernel); any message counts as one too."""

    kind: ClassVar[str] = "heartbeat"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply(Record):
    """An actor's outcome for the ``deliver`` whose id is ``ref``."""

    kind: ClassVar[str] = "reply"
    ref: MsgId  # the deliver's id
    ok: Flag
    value: WireValue = None
    error: OptStr = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregister(Record):
    """Detach an external actor; its pending deliveries return to the mailbox."""

    kind: ClassVar[str] = "unregister"
    name: Name


# kernel -> actor


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver(Record):
    """Run ``selector`` on the attached actor; ``id`` is the idempotency key."""

    kind: ClassVar[str] = "deliver"
    actor: Name
    selector: Name
    args: WireList = field(default_factory=list)
    kwargs: WireMap = field(default_factory=dict)
    attempt: Attempt = 1


Message: TypeAlias = (
    Ping | Mission | Send | Watch | Cancel | Status
    | Accepted | Event | Result | Error | Pong
    | Register | Heartbeat | Reply | Unregister | Deliver
)  # fmt: skip

_RECORDS: tuple[type[Record], ...] = (
    Ping, Mission, Send, Watch, Cancel, Status,
    Accepted, Event, Result, Error, Pong,
    Register, Heartbeat, Reply, Unregister, Deliver,
)  # fmt: skip
KINDS: Mapping[str, type[Record]] = MappingProxyType({cls.kind: cls for cls in _RECORDS})

# Who may send which kind (roles narrow this further, in the kernel).
CLIENT_KINDS = frozenset({"ping", "mission", "send", "watch", "cancel", "status"})
ACTOR_KINDS = frozenset({"register", "heartbeat", "reply", "unregister", "ping"})
KERNEL_TO_CLIENT = frozenset({"accepted", "event", "result", "error", "pong"})
# accepted / error / pong answer an actor's register, unregister, bad input and ping.
KERNEL_TO_ACTOR = frozenset({"deliver", "heartbeat", "error", "accepted", "pong"})


def _reply_rule(values: dict[str, Any]) -> None:
    if values["ok"] is (values.get("error") is not None):
        raise _Invalid("required when ok is false, nil when ok is true")


def _specs(cls: type[Record]) -> tuple[tuple[str, Check, bool], ...]:
    """``(name, check, required on the wire)`` per field, from the annotations."""
    hints = get_type_hints(cls, include_extras=True)
    return tuple(
        (
            f.name,
            hints[f.name].__metadata__[0],
            f.name == "id" or (f.default is MISSING and f.default_factory is MISSING),
        )
        for f in fields(cls)
    )


_SPECS: dict[type[Record], tuple[tuple[str, Check, bool], ...]] = {
    cls: _specs(cls) for cls in _RECORDS
}
_RULES: dict[type[Record], tuple[str, Callable[[dict[str, Any]], None]]] = {
    Reply: ("error", _reply_rule),
}
_FIELD_NAMES: dict[type[Record], frozenset[str]] = {
    cls: frozenset(name for name, _, _ in specs) | {"kind"} for cls, specs in _SPECS.items()
}
_WIRE_NAMES: dict[type[Record], tuple[str, ...]] = {
    cls: tuple(name for name, _, _ in specs) for cls, specs in _SPECS.items()
}


