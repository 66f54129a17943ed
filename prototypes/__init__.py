"""The batos object model: prototype objects whose slots live in ZODB.

See `prototypes.uvm` for the theory of operation, `prototypes.guardian` for the
checks every method source passes, and `prototypes.genesis` for the root objects.
"""

from __future__ import annotations

from prototypes.errors import (
    BatosError,
    CovenantViolation,
    DoesNotUnderstand,
    GuardianError,
    MalformedMethod,
    PrototypeError,
    SafetyViolation,
    SlotNotFound,
)
from prototypes.genesis import install, new_object
from prototypes.guardian import check_source
from prototypes.method import Method
from prototypes.uvm import UvmObject

__all__ = [
    "BatosError",
    "CovenantViolation",
    "DoesNotUnderstand",
    "GuardianError",
    "MalformedMethod",
    "Method",
    "PrototypeError",
    "SafetyViolation",
    "SlotNotFound",
    "UvmObject",
    "check_source",
    "install",
    "new_object",
]
