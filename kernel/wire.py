"""The batos wire protocol, sans-IO: bytes in, typed records out, and back.

Theory of operation
-------------------
Every message is one ZeroMQ multipart message. On the kernel's ROUTER socket
it reads ``[identity, b"", VERSION, payload]``; a DEALER peer sends and
receives ``[b"", VERSION, payload]``. The payload is one msgpack map with
string keys, always holding ``"kind"`` (which record) and ``"id"`` (the
sender's message id, the correlation and idempotency key).

Each kind is one frozen record class (``KINDS`` maps names to classes). The
inbound boundary is ``decode``: it unpacks under ``Limits``, walks the whole
tree once (wire value types, string keys, sizes, depth), then checks the
record's own fields (types, names, required, no unknown fields) and returns
the record. Anything else it meets becomes a ``ProtocolError`` child with a
stable ``code`` -- never another exception -- carrying the message id and the
peer identity when they could be read, so the caller can route a typed
``error`` reply. ``encode`` runs the same checks, so the kernel never sends
what a peer would reject.

This module moves no bytes: it imports neither zmq nor ZODB. The socket loop
calls it; role checks use the direction tables at the bottom.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, TypeAlias, get_type_hints

import msgpack

from kernel.errors import (
    KernelError,
    MessageGone,
    Overloaded,
    StepFailed,
    UnknownActor,
    UnknownObject,
    UnknownSelector,
)

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


_ID_PREFIX = os.urandom(8).hex()  # this process's; a new one after each fork
_id_counter = itertools.count()


def new_id() -> str:
    """A fresh message id: 32 hex characters, unique across processes and restarts.

    A random per-process prefix and a counter: ids are idempotency keys, not
    secrets, and a counter costs no system call per message.
    """
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _new_prefix() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_new_prefix)


# -- errors -------------------------------------------------------------------


class ErrorCode(StrEnum):
    """Stable codes carried by ``error`` replies; never renumbered or renamed."""

    BAD_FRAME = "bad_frame"
    BAD_VERSION = "bad_version"
    TOO_LARGE = "too_large"
    BAD_PAYLOAD = "bad_payload"
    BAD_KIND = "bad_kind"
    BAD_FIELD = "bad_field"
    UNKNOWN_ACTOR = "unknown_actor"
    UNKNOWN_SELECTOR = "unknown_selector"
    FORBIDDEN = "forbidden"
    OVERLOADED = "overloaded"
    STEP_FAILED = "step_failed"
    TIMEOUT = "timeout"
    NOT_FOUND = "not_found"
    CANCELLED = "cancelled"
    INTERNAL = "internal"
    DOES_NOT_UNDERSTAND = "does_not_understand"


class ProtocolError(KernelError):
    """Inbound bytes broke the protocol. Children fix ``code``.

    ``identity`` (the ROUTER routing id), ``msg_id`` and ``kind`` are filled
    in when they could be read, so the caller can route an error reply.
    """

    code: ClassVar[ErrorCode] = ErrorCode.BAD_PAYLOAD

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        identity: bytes | None = None,
        msg_id: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.identity = identity
        self.msg_id = msg_id
        self.kind = kind

    @property
    def ref(self) -> str | None:
        """The offending message's id: the ``ref`` of the error reply."""
        return self.msg_id


class BadFrame(ProtocolError):
    """Wrong number of frames, or a missing empty delimiter frame."""

    code = ErrorCode.BAD_FRAME


class BadVersion(ProtocolError):
    """The version frame is not ``VERSION``."""

    code = ErrorCode.BAD_VERSION


class TooLarge(ProtocolError):
    """A payload, string, container or nesting depth exceeds ``Limits``."""

    code = ErrorCode.TOO_LARGE


class BadPayload(ProtocolError):
    """Not one msgpack map of wire values with string keys."""

    code = ErrorCode.BAD_PAYLOAD


class BadKind(ProtocolError):
    """The ``kind`` names no message kind."""

    code = ErrorCode.BAD_KIND


class BadField(ProtocolError):
    """A field is missing, unknown, of the wrong type or out of range."""

    code = ErrorCode.BAD_FIELD


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


# -- the tree walk: wire value types, string keys, sizes, depth ---------------


def _tree_ok(value: Any, limits: Limits) -> bool:
    """The walk's fast path: True only where ``_check_tree`` would pass.

    It accepts exact wire types (what msgpack unpacks) far from every limit and
    answers False for anything else; the full walk then decides and names the
    culprit. So it changes the cost of a check, never its outcome.
    """
    return type(value) is dict and _container_ok(value, limits, 1)


def _container_ok(value: dict[Any, Any] | list[Any], limits: Limits, depth: int) -> bool:
    if depth > limits.max_depth or len(value) > limits.max_items:
        return False
    chars = limits.max_str_bytes >> 2  # at most 4 UTF-8 bytes a character
    items: Any = value
    if type(value) is dict:
        for key in value:
            if type(key) is not str or len(key) > chars:
                return False
        items = value.values()
    for item in items:  # the checks inline: a call per value would cost as much again
        kind = type(item)
        if kind is str:
            if len(item) > chars:
                return False
        elif kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                return False
        elif kind is dict or kind is list:
            # an empty container passes wherever its depth does
            if (item or depth >= limits.max_depth) and not _container_ok(item, limits,
                                                                         depth + 1):
                return False
        elif kind is bytes:
            if len(item) > limits.max_payload_bytes:
                return False
        elif not (item is None or kind is float or kind is bool):
            return False
    return True


def _check_tree(value: Any, limits: Limits, depth: int = 0) -> None:
    """Vet a value and all under it; an error's ``field`` is the path to the culprit."""
    if isinstance(value, dict | list):
        _check_container(value, limits, depth + 1)
    elif isinstance(value, str):
        _check_str(value, limits)
    elif value is None or isinstance(value, bool | float):
        pass
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise TooLarge("integer outside the 64-bit range")
    elif isinstance(value, bytes):
        if len(value) > limits.max_payload_bytes:
            raise TooLarge(f"binary of {len(value)} bytes")
    else:
        raise BadPayload(f"{type(value).__name__} is not a wire value")


def _check_str(value: str, limits: Limits) -> None:
    size = len(value)
    if size * 4 > limits.max_str_bytes:  # only long strings pay for measuring UTF-8
        size = len(value.encode("utf-8", "surrogatepass"))
    if size > limits.max_str_bytes:
        raise TooLarge(f"string of {size} bytes, over {limits.max_str_bytes}")


def _check_container(value: dict[Any, Any] | list[Any], limits: Limits, depth: int) -> None:
    if depth > limits.max_depth:
        raise TooLarge(f"nested deeper than {limits.max_depth}")
    if len(value) > limits.max_items:
        raise TooLarge(f"{len(value)} items, over {limits.max_items}")
    if isinstance(value, list):
        for index, item in enumerate(value):
            try:
                _check_tree(item, limits, depth)
            except ProtocolError as exc:
                exc.field = f"[{index}]{exc.field or ''}"
                raise
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise BadPayload(f"map key of type {_type_name(key)}; keys must be str")
        _check_str(key, limits)
        try:
            _check_tree(item, limits, depth)
        except ProtocolError as exc:
            step = key[:64] if depth == 1 else f".{key[:64]}"
            exc.field = f"{step}{exc.field or ''}"
            raise


# -- decoding and encoding ------------------------------------------------------


def _ext_hook(code: int, data: bytes) -> Any:
    raise BadPayload(f"msgpack extension type {code} is not allowed")


_STRICT_OPTIONS: dict[Limits, dict[str, Any]] = {}


def _unpackb(payload: bytes, limits: Limits, *, loose: bool) -> Any:
    cap = len(payload)  # loose: only what this buffer could hold, as msgpack's default
    if loose:
        return msgpack.unpackb(payload, max_ext_len=cap, **_unpack_options(cap, cap, cap))
    options = _STRICT_OPTIONS.get(limits) or _strict_options(limits)
    return msgpack.unpackb(payload, max_ext_len=cap, **options)


def _strict_options(limits: Limits) -> dict[str, Any]:
    """Built once per Limits: the keywords cost more than the unpacking."""
    if len(_STRICT_OPTIONS) > 64:  # a caller making Limits per call: do not grow
        _STRICT_OPTIONS.clear()
    options = _STRICT_OPTIONS[limits] = _unpack_options(
        limits.max_str_bytes, limits.max_payload_bytes, limits.max_items)
    return options


def _unpack_options(max_str: int, max_bin: int, max_items: int) -> dict[str, Any]:
    return {"raw": False, "strict_map_key": True, "use_list": True, "ext_hook": _ext_hook,
            "max_str_len": max_str, "max_bin_len": max_bin,
            "max_array_len": max_items, "max_map_len": max_items}


def _unpack(payload: bytes, limits: Limits) -> tuple[Any, bool]:
    """Unpack one object: ``(object, over_limit)``; raises only ``ProtocolError``."""
    try:
        return _unpackb(payload, limits, loose=False), False
    except ProtocolError:
        raise
    except msgpack.ExtraData as exc:
        raise BadPayload("trailing bytes after the msgpack object") from exc
    except msgpack.StackError as exc:
        raise TooLarge("nested too deeply to unpack") from exc
    except (msgpack.FormatError, UnicodeDecodeError) as exc:
        raise BadPayload(f"not msgpack: {type(exc).__name__}") from exc
    except ValueError:
        pass  # malformed, or over one of the caps: the loose retry tells which
    except Exception as exc:  # the boundary's promise: only ProtocolError leaves
        raise BadPayload(f"not msgpack: {type(exc).__name__}") from exc
    try:
        return _unpackb(payload, limits, loose=True), True
    except ProtocolError:
        raise
    except Exception as exc:
        raise BadPayload("not msgpack (malformed, truncated, or a non-str map key)") from exc


def _peek_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    return value if isinstance(value, str) and _ID_RE.fullmatch(value) else None


def _check_fields(cls: type[Record], obj: dict[str, Any]) -> dict[str, Any]:
    """The record's constructor arguments from ``obj``, each field checked."""
    known = _FIELD_NAMES[cls]
    unknown = () if known.issuperset(obj) else obj.keys() - known
    if unknown:
        name = min(unknown)[:64]
        raise BadField(f"unknown field {name!r} for kind {cls.kind!r}", field=name)
    values: dict[str, Any] = {}
    for name, check, required in _SPECS[cls]:
        try:
            if name in obj:
                values[name] = check(obj[name])
            elif required:
                raise _Invalid("missing")
        except _Invalid as exc:
            raise BadField(f"{name}: {exc}", field=name) from None
    ruled = _RULES.get(cls)
    if ruled is not None:
        name, rule = ruled
        try:
            rule(values)
        except _Invalid as exc:
            raise BadField(f"{name}: {exc}", field=name) from None
    return values


def _record_class(obj: dict[str, Any]) -> type[Record]:
    kind = obj.get("kind")
    if not isinstance(kind, str):
        reason = "missing" if kind is None else f"expected str, got {_type_name(kind)}"
        raise BadField(f"kind: {reason}", field="kind")
    cls = KINDS.get(kind)
    if cls is None:
        raise BadKind(f"unknown kind {kind[:64]!r}")
    return cls


def decode(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode one payload into its record; raises only ``ProtocolError`` children.

    Checks run in order: size, msgpack, the tree walk (types, keys, limits),
    ``kind``, then the fields; the first failure is reported.
    """
    if type(payload) is not bytes:
        if not isinstance(payload, _BYTES_LIKE):
            raise BadPayload(f"payload must be bytes, got {_type_name(payload)}")
        payload = bytes(payload)
    if len(payload) > limits.max_payload_bytes:
        raise TooLarge(f"payload of {len(payload)} bytes, over {limits.max_payload_bytes}")
    obj, over_limit = _unpack(payload, limits)
    if not isinstance(obj, dict):
        raise BadPayload(f"payload must be a msgpack map, got {_type_name(obj)}")
    try:
        if not _tree_ok(obj, limits):
            _check_tree(obj, limits)
        if over_limit:  # unreachable while the walk mirrors the caps; kept as a backstop
            raise TooLarge("a string or container exceeds the limits")
        cls = _record_class(obj)
        return cls(**_check_fields(cls, obj))  # type: ignore[return-value]
    except ProtocolError as exc:
        exc.msg_id = _peek_id(obj)
        kind = obj.get("kind")
        exc.kind = kind if isinstance(kind, str) and kind in KINDS else None
        raise


_packers = threading.local()


def _pack(obj: dict[str, Any]) -> bytes:
    """``msgpack.packb``, less a new Packer per call (one per thread, reused)."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    payload: bytes = packer.pack(obj)  # a failed pack leaves the packer reset
    return payload


def encode(msg: Record, limits: Limits = DEFAULT_LIMITS, *, trusted: bool = False) -> bytes:
    """Encode a record, with the same checks ``decode`` applies on the other side.

    ``trusted`` skips the per-field checks for records the kernel built from
    fields it already validated; the walk over every value still runs, so a
    handler's result that the wire cannot carry is still refused.
    """
    cls = type(msg)
    names = _WIRE_NAMES.get(cls)
    if names is None:
        raise BadKind(f"{cls.__name__} is not a message record")
    obj = {"kind": cls.kind}
    for name in names:
        obj[name] = getattr(msg, name)
    try:
        if not _tree_ok(obj, limits):
            _check_tree(obj, limits)
        if not trusted:
            _check_fields(cls, obj)
        payload = _pack(obj)
    except ProtocolError as exc:
        exc.msg_id, exc.kind = _peek_id(obj), cls.kind
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. lone surrogates
        raise BadPayload(f"cannot pack: {exc}", msg_id=_peek_id(obj), kind=cls.kind) from exc
    if len(payload) > limits.max_payload_bytes:
        raise TooLarge(f"payload of {len(payload)} bytes", msg_id=msg.id, kind=cls.kind)
    return payload


# -- frames ---------------------------------------------------------------------


def _as_frames(frames: Any, count: int, identity: bytes | None = None) -> list[bytes]:
    if not isinstance(frames, list | tuple) or not all(
        isinstance(frame, _BYTES_LIKE) for frame in frames
    ):
        raise BadFrame("frames must be a list of bytes", identity=identity)
    if len(frames) != count:
        raise BadFrame(f"expected {count} frames, got {len(frames)}", identity=identity)
    return [bytes(frame) for frame in frames]


def _decode_body(delimiter: bytes, version: bytes, payload: bytes, limits: Limits) -> Message:
    if delimiter:
        raise BadFrame("the delimiter frame must be empty")
    if version != VERSION:
        raise BadVersion(f"version {version[:32]!r}, expected {VERSION!r}")
    return decode(payload, limits)


def split_router_frames(
    frames: list[bytes], limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes, Message]:
    """``[identity, b"", VERSION, payload]`` from the ROUTER -> ``(identity, record)``.

    Errors carry ``identity`` whenever the first frame was a usable one.
    """
    if type(frames) is list and len(frames) == 4:  # the socket's own output: no copies
        peer, empty, version, body = frames
        if (type(peer) is bytes and peer and type(empty) is bytes and not empty
                and type(version) is bytes and version == VERSION and type(body) is bytes):
            try:
                return peer, decode(body, limits)
            except ProtocolError as exc:
                exc.identity = peer
                raise
    first = frames[0] if isinstance(frames, list | tuple) and frames else None
    identity = bytes(first) if isinstance(first, _BYTES_LIKE) else None
    identity = identity or None  # ROUTER identities are never empty
    identity, delimiter, version, payload = _as_frames(frames, 4, identity)
    if not identity:
        raise BadFrame("empty identity frame")
    try:
        return identity, _decode_body(delimiter, version, payload, limits)
    except ProtocolError as exc:
        exc.identity = identity
        raise


def router_frames(identity: bytes, msg: Record, limits: Limits = DEFAULT_LIMITS,
                  *, trusted: bool = False) -> list[bytes]:
    """The ROUTER-side frames sending ``msg`` to the peer ``identity``."""
    return [identity, b"", VERSION, encode(msg, limits, trusted=trusted)]


def peer_frames(msg: Record, limits: Limits = DEFAULT_LIMITS) -> list[bytes]:
    """The frames a DEALER peer sends for ``msg``."""
    return [b"", VERSION, encode(msg, limits)]


def parse_peer_frames(frames: list[bytes], limits: Limits = DEFAULT_LIMITS) -> Message:
    """``[b"", VERSION, payload]`` received on a DEALER -> record."""
    if type(frames) is list and len(frames) == 3:  # the socket's own output: no copies
        empty, version, body = frames
        if (type(empty) is bytes and not empty and type(version) is bytes
                and version == VERSION and type(body) is bytes):
            return decode(body, limits)
    delimiter, version, payload = _as_frames(frames, 3)
    return _decode_body(delimiter, version, payload, limits)


# -- error replies ----------------------------------------------------------------

ERROR_MEANINGS: Mapping[ErrorCode, str] = MappingProxyType(
    {
        ErrorCode.BAD_FRAME: "the multipart message does not have the protocol's frames",
        ErrorCode.BAD_VERSION: "unsupported protocol version",
        ErrorCode.TOO_LARGE: "the payload exceeds a protocol limit",
        ErrorCode.BAD_PAYLOAD: "the payload is not a msgpack map of wire values",
        ErrorCode.BAD_KIND: "unknown or misdirected message kind",
        ErrorCode.BAD_FIELD: "a field is missing, unknown, or of the wrong type",
        ErrorCode.UNKNOWN_ACTOR: "no actor of that name",
        ErrorCode.UNKNOWN_SELECTOR: "the actor does not handle that selector",
        ErrorCode.DOES_NOT_UNDERSTAND: "a generative actor learned no method for the selector",
        ErrorCode.FORBIDDEN: "the sender's role may not do this",
        ErrorCode.OVERLOADED: "the kernel or the actor's mailbox is full; retry later",
        ErrorCode.STEP_FAILED: "the step raised; its transaction was aborted",
        ErrorCode.TIMEOUT: "no answer in time",
        ErrorCode.NOT_FOUND: "nothing known under that reference",
        ErrorCode.CANCELLED: "the mission or message was cancelled",
        ErrorCode.INTERNAL: "internal kernel error",
    }
)


_ERROR_CODES: tuple[tuple[type[BaseException], ErrorCode], ...] = (
    (Overloaded, ErrorCode.OVERLOADED),
    (UnknownActor, ErrorCode.UNKNOWN_ACTOR),
    (UnknownSelector, ErrorCode.UNKNOWN_SELECTOR),
    (StepFailed, ErrorCode.STEP_FAILED),
    (MessageGone, ErrorCode.NOT_FOUND),
    (UnknownObject, ErrorCode.NOT_FOUND),
    (TimeoutError, ErrorCode.TIMEOUT),
)


def error_code_of(exc: BaseException) -> ErrorCode:
    """The wire code for an exception: its own ``code``, its class, else ``internal``."""
    code = getattr(exc, "code", None)
    if isinstance(code, str) and code in ErrorCode.__members__.values():
        return ErrorCode(code)
    for cls, mapped in _ERROR_CODES:
        if isinstance(exc, cls):
            return mapped
    return ErrorCode.INTERNAL


def error_reply(
    problem: BaseException | ErrorCode | str,
    message: str | None = None,
    ref: str | None = None,
    *,
    msg_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Error:
    """The kernel's ``error`` record for an exception or a code.

    For a ``ProtocolError``, ``ref`` defaults to the offending message's id and
    ``details`` names the field. Only batos errors lend their text to the reply;
    any other exception is reported with the code's generic meaning.
    """
    details = dict(details or {})
    if isinstance(problem, BaseException):
        code = error_code_of(problem)
        if isinstance(problem, ProtocolError):
            ref = ref if ref is not None else problem.msg_id
            if problem.field is not None:
                details.setdefault("field", problem.field)
        if isinstance(problem, BadVersion):
            details.setdefault("supported", [VERSION.decode()])
        if message is None and isinstance(problem, KernelError):
            message = str(problem)
    else:
        code = ErrorCode(problem)
    return Error(
        id=msg_id or new_id(),
        code=code,
        message=message if message is not None else ERROR_MEANINGS[code],
        ref=ref,
        details=details,
    )
