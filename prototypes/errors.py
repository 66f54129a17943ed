"""The root of every batos exception, and the object model's own errors.

Every package area has one root below `BatosError`; children carry the data a
caller needs (selector, receiver, line number) as attributes, so nobody has to
parse a message string.
"""

from __future__ import annotations


class BatosError(Exception):
    """Root of all errors raised by batos code."""


class PrototypeError(BatosError):
    """Root of the object model's errors (slots, delegation, methods, guardian)."""


class DoesNotUnderstand(PrototypeError, AttributeError):
    """A lookup walked the whole delegation chain without finding `selector`.

    It is an `AttributeError` too, so `hasattr()` and `getattr(obj, name, default)`
    behave as they do for any Python object.
    """

    def __init__(self, selector: str, receiver: object, args: tuple[object, ...] = ()) -> None:
        self._message = f"{_safe_repr(receiver)} does not understand {selector!r}"
        AttributeError.__init__(self, self._message, name=selector, obj=receiver)
        self.selector = selector
        self.receiver = receiver
        # `args` holds the message's arguments (Self's sense), not the exception's
        # constructor arguments; __str__ and __reduce__ make up for that.
        self.args = tuple(args)

    def __str__(self) -> str:
        return self._message

    def __repr__(self) -> str:
        return f"DoesNotUnderstand({self.selector!r}, receiver={_safe_repr(self.receiver)})"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.selector, self.receiver, self.args))


class SlotNotFound(PrototypeError, AttributeError):
    """An explicit slot operation (`get_slot`, `del_slot`, `del obj.x`) named a missing slot."""

    def __init__(self, name: str, receiver: object) -> None:
        super().__init__(f"{_safe_repr(receiver)} has no slot {name!r}")
        self.name = name
        self.receiver = receiver


class ReservedSlotName(PrototypeError, ValueError):
    """A slot name that is reserved for the object model's own protocol or for persistence."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"{name!r} cannot be used as a slot name")


class InvalidParent(PrototypeError, TypeError):
    """A parent slot (name ending in '*') was given a value that is not a UvmObject."""

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        self.value_type = type(value).__name__
        super().__init__(f"parent slot {name!r} must hold a UvmObject, not {self.value_type}")


class GuardianError(PrototypeError):
    """Method source was refused by the guardian; `lineno` and `rule` say where and why."""

    def __init__(self, lineno: int, rule: str, detail: str) -> None:
        self.lineno = lineno
        self.rule = rule
        self.detail = detail
        super().__init__(f"line {lineno}: {detail} (rule {rule!r})")


class MalformedMethod(GuardianError):
    """The source does not parse, or is not exactly one `def name(self, ...)`."""


class CovenantViolation(GuardianError):
    """The source breaks the persistence covenant (mutation without `_p_changed`)."""


class SafetyViolation(GuardianError):
    """Generated source uses something outside the safety allowlist."""


def _safe_repr(obj: object) -> str:
    """`repr(obj)` that never raises, for use inside error messages."""
    try:
        return repr(obj)
    except Exception:
        return f"<{type(obj).__name__} object>"
