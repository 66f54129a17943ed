"""Generated methods in the image: list, show, remove; the `generative` switch.

An *owner* names an object by where it lives: `actors/NAME` or
`prototypes/NAME`. These functions take the image root, so the learner's
handlers (through a running kernel) and the CLI (on an image no kernel
holds) share them.
"""

from __future__ import annotations

from typing import Any

from actors.code.errors import LearnError
from prototypes import Method, UvmObject
from prototypes.generative import GENERATIVE

CONTAINERS = ("actors", "prototypes")


class UnknownOwner(LearnError):
    """No actor or prototype is stored under this owner name."""

    def __init__(self, owner: str) -> None:
        super().__init__(f"no object {owner!r} (expected actors/NAME or prototypes/NAME)")
        self.owner = owner


class NoGeneratedMethod(LearnError):
    """The owner has no generated method with this selector."""

    def __init__(self, owner: str, selector: str) -> None:
        super().__init__(f"{owner} has no generated method {selector!r}")
        self.owner = owner
        self.selector = selector


def owned(root: Any) -> list[tuple[str, UvmObject]]:
    """Every UvmObject among the actors and prototypes, with its owner name."""
    found = []
    for container in CONTAINERS:
        for name, obj in root[container].items():
            if isinstance(obj, UvmObject):
                found.append((f"{container}/{name}", obj))
    return found


def owner_of(root: Any, target: UvmObject) -> str:
    """The owner name of `target`, or its oid when it is neither actor nor prototype."""
    for owner, obj in owned(root):
        if obj is target:
            return owner
    oid = target._p_oid
    return f"oid 0x{int.from_bytes(oid, 'big'):x}" if oid else "unsaved object"


def lookup(root: Any, owner: str) -> UvmObject:
    container, _, name = owner.partition("/")
    obj = root[container].get(name) if container in CONTAINERS else None
    if not isinstance(obj, UvmObject):
        raise UnknownOwner(owner)
    return obj


def rows(root: Any) -> list[dict[str, Any]]:
    """One row per generated method: owner, selector, provenance, first line."""
    found = []
    for owner, obj in owned(root):
        for selector in obj.slot_names():
            method = obj.get_slot(selector)
            if isinstance(method, Method) and method.generated:
                found.append({"owner": owner, "selector": selector, **_provenance(method),
                              "first_line": method.first_line()})
    return found


def show(root: Any, owner: str, selector: str) -> dict[str, Any]:
    method = _generated(lookup(root, owner), owner, selector)
    return {"owner": owner, "selector": selector, **_provenance(method),
            "source": method.source, "oid": _oid(method)}


def remove(root: Any, owner: str, selector: str) -> dict[str, Any]:
    """Delete the slot; the method's earlier versions stay in the image's history."""
    obj = lookup(root, owner)
    shown = show(root, owner, selector)
    obj.del_slot(selector)
    root["metrics"].incr("methods.generated.removed")
    return {**shown, "removed": True}


def set_generative(root: Any, owner: str, on: bool) -> dict[str, Any]:
    obj = lookup(root, owner)
    if on:
        obj.set_slot(GENERATIVE, True)
    elif GENERATIVE in obj.slot_names():
        obj.del_slot(GENERATIVE)
    return {"owner": owner, "generative": on}


def _generated(obj: UvmObject, owner: str, selector: str) -> Method:
    method = obj.get_slot(selector, None)
    if not isinstance(method, Method) or not method.generated:
        raise NoGeneratedMethod(owner, selector)
    return method


def _provenance(method: Method) -> dict[str, Any]:
    info = dict(method.provenance or {})
    return {"mission": info.get("mission"), "model": info.get("model"),
            "time": info.get("time"), "attempt": info.get("attempt")}


def _oid(obj: Any) -> str | None:
    oid = obj._p_oid
    return f"0x{int.from_bytes(oid, 'big'):x}" if oid else None
