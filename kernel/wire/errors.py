"""Error codes, the protocol error tree, and the kernel's `error` records."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, ClassVar

from kernel.errors import (
    KernelError,
    MessageGone,
    Overloaded,
    StepFailed,
    UnknownActor,
    UnknownObject,
    UnknownSelector,
)
from kernel.wire.fields import VERSION, new_id
from kernel.wire.records import Error

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
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting_down"
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
        ErrorCode.FORBIDDEN: "the sender's role may not do this",
        ErrorCode.OVERLOADED: "the kernel or the actor's mailbox is full; retry later",
        ErrorCode.STEP_FAILED: "the step raised; its transaction was aborted",
        ErrorCode.TIMEOUT: "no answer in time",
        ErrorCode.NOT_FOUND: "nothing known under that reference",
        ErrorCode.CANCELLED: "the mission or message was cancelled",
        ErrorCode.INTERNAL: "internal kernel error",
        ErrorCode.UNAVAILABLE: "the external actor is not attached; retry later",
        ErrorCode.SHUTTING_DOWN: "the kernel is shutting down; retry after it restarts",
        ErrorCode.DOES_NOT_UNDERSTAND: "a generative actor learned no method for the selector",
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
        if isinstance(problem, StepFailed):
            details.setdefault("actor", problem.actor)
            details.setdefault("selector", problem.selector)
            details.setdefault("error", problem.error_type)
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

