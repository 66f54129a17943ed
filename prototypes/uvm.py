"""`UvmObject`: a persistent prototype object whose state and behaviour are slots.

Theory of operation
-------------------
* Slots live in one plain dict, `_slots`, which is part of the object's pickled
  state; every mutation through the slot API sets `_p_changed`. `obj.x = v` and
  `set_slot("x", v)` write a slot; `obj.x` reads one. Names starting with `_p_` or
  `_v_`, dunder names and `_slots` itself never touch slots: the attribute hooks
  hand them to `Persistent` first (`_p_getattr`/`_p_setattr`/`_p_delattr`, which
  also activate a ghost), exactly as persistent's own attribute-hook examples do.
* A slot whose name ends in `*` is a parent. Reading `obj.x` looks in, in order:
  the object's own slots; the attributes of its Python class (the primitives
  below, properties, subclass methods); then the parents' slots, depth-first in
  slot insertion order, each object visited once, so cycles are harmless. A
  parent contributes its slots only, never its Python class attributes.
* A `Method` found by a lookup is returned bound to the original receiver, not
  to the parent that held it (Self semantics). `get_slot` returns it unbound.
* When the chain is exhausted, `_doesNotUnderstand_(selector, args)` is called.
  Attribute access cannot know the call's arguments, so lookups pass `()`; the
  default raises `DoesNotUnderstand`, an `AttributeError`, so `hasattr` and
  `getattr(obj, name, default)` work. A `_doesNotUnderstand_` slot (own or
  inherited) or a subclass method may override it; whatever it returns is the
  result of the lookup.
* Assignment always writes the receiver's own slot (it may shadow a parent's).
  The primitive selectors (`RESERVED_SELECTORS`) cannot be slot names.
* `clone()` shares parents, deep-copies the other slots (plain containers and
  non-UvmObject persistent values such as `PersistentMapping` are copied; a
  `Method` is copied; a `UvmObject` held in a slot is shared, it is an identity)
  and adds the clone to the original's jar, in the current transaction.
"""

from __future__ import annotations

import copy
import reprlib
from collections.abc import Iterator
from typing import Any, cast

from persistent import Persistent

from prototypes.errors import (
    DoesNotUnderstand,
    InvalidParent,
    ReservedSlotName,
    SlotNotFound,
)
from prototypes.method import Method

_MISSING: Any = object()
_INTERNAL = frozenset({"_slots"})
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60


def is_parent_name(name: str) -> bool:
    """Whether `name` is a parent slot name (Self convention: it ends in '*')."""
    return name.endswith("*")


def _bypasses_slots(name: str) -> bool:
    """Names that always belong to the persistence machinery or to Python."""
    dunder = name.startswith("__") and name.endswith("__")
    return dunder or name.startswith(("_p_", "_v_")) or name in _INTERNAL


class UvmObject(Persistent):
    """A persistent prototype object: slots, parent slots, delegation, cloning.

    Keyword arguments become the first slots: `UvmObject(x=1, **{"parent*": p})`.
    """

    def __init__(self, **slots: Any) -> None:
        Persistent.__setattr__(self, "_slots", {})
        for name, value in slots.items():
            self.set_slot(name, value)

    # -- attribute hooks ------------------------------------------------------------

    def __getattribute__(self, name: str) -> Any:
        if Persistent._p_getattr(self, name) or _bypasses_slots(name):
            return Persistent.__getattribute__(self, name)
        slots = _slots_of(self)
        if name in slots:
            return _bind(slots[name], self)
        if hasattr(type(self), name):
            return Persistent.__getattribute__(self, name)
        found = _find_in_parents(self, name)
        if found is not _MISSING:
            return _bind(found[1], self)
        return _dispatch_not_understood(self, name, ())

    def __setattr__(self, name: str, value: Any) -> None:
        if Persistent._p_setattr(self, name, value):
            return
        if _bypasses_slots(name) or _is_data_descriptor(type(self), name):
            Persistent.__setattr__(self, name, value)
        else:
            self.set_slot(name, value)

    def __delattr__(self, name: str) -> None:
        if Persistent._p_delattr(self, name):
            return
        if _bypasses_slots(name) or _is_data_descriptor(type(self), name):
            Persistent.__delattr__(self, name)
        else:
            self.del_slot(name)

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        names.update(n for n in _slots_of(self) if not is_parent_name(n))
        for ancestor in _ancestors(self):
            names.update(n for n in _slots_of(ancestor) if not is_parent_name(n))
        return sorted(names)

    # -- slot primitives ------------------------------------------------------------

    def set_slot(self, name: str, value: Any) -> None:
        """Create or replace the own slot `name`; a `*` name must hold a UvmObject."""
        if not name or _bypasses_slots(name) or name in RESERVED_SELECTORS:
            raise ReservedSlotName(name)
        if is_parent_name(name) and not isinstance(value, UvmObject):
            raise InvalidParent(name, value)
        _slots_of(self)[name] = value
        self._p_changed = True

    def get_slot(self, name: str, default: Any = _MISSING) -> Any:
        """The raw value of the own slot `name` (a `Method` is returned unbound)."""
        slots = _slots_of(self)
        if name in slots:
            return slots[name]
        if default is _MISSING:
            raise SlotNotFound(name, self)
        return default

    def has_slot(self, name: str, *, inherited: bool = False) -> bool:
        """Whether the object (or, with `inherited`, its delegation chain) has slot `name`."""
        if name in _slots_of(self):
            return True
        return inherited and _find_in_parents(self, name) is not _MISSING

    def del_slot(self, name: str) -> None:
        """Remove the own slot `name`; raise `SlotNotFound` if there is none."""
        slots = _slots_of(self)
        if name not in slots:
            raise SlotNotFound(name, self)
        del slots[name]
        self._p_changed = True

    def slot_names(self) -> list[str]:
        """Own slot names, in insertion order (parent slots included)."""
        return list(_slots_of(self))

    def parents(self) -> list[UvmObject]:
        """Own parent objects, in slot insertion order."""
        return _parents_of(self)

    def ancestors(self) -> list[UvmObject]:
        """Every object on the delegation chain, depth-first, each once, self excluded."""
        return list(_ancestors(self))

    def lookup_slot(self, name: str) -> tuple[UvmObject, Any]:
        """`(holder, raw value)` for `name` along the chain; `SlotNotFound` if absent."""
        slots = _slots_of(self)
        if name in slots:
            return self, slots[name]
        found = _find_in_parents(self, name)
        if found is _MISSING:
            raise SlotNotFound(name, self)
        return found

    # -- messages that fail, cloning, describing ----------------------------------

    def _doesNotUnderstand_(self, selector: str, args: tuple[Any, ...]) -> Any:
        """Called when a lookup exhausts the delegation chain; raises `DoesNotUnderstand`."""
        raise DoesNotUnderstand(selector, self, tuple(args))

    def clone(self) -> UvmObject:
        """A new object sharing parents and copying its own slots (see module docstring)."""
        cls = type(self)
        new = cls.__new__(cls)
        memo: dict[int, Any] = {}
        state = cast(dict[str, Any], self.__getstate__())
        new.__setstate__({key: _copy_state(key, value, memo) for key, value in state.items()})
        jar = self._p_jar
        if jar is not None:
            jar.add(new)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> UvmObject:
        # A UvmObject is an identity: values that contain one share it when copied.
        return self

    def describe(self) -> str:
        """A readable, multi-line listing of the object's slots."""
        lines = [f"{type(self).__name__}{_oid_text(self)}"]
        for name, value in _slots_of(self).items():
            lines.append(f"  {name}: {_describe_value(name, value)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        try:
            return _repr(self)
        except Exception:
            return f"<{type(self).__name__} object>"


RESERVED_SELECTORS: frozenset[str] = frozenset(
    name for name in vars(UvmObject) if not name.startswith("_")
)


# -- lookup helpers (they read other objects' slots without binding) --------------------


def _slots_of(obj: UvmObject) -> dict[str, Any]:
    """The slot dict of `obj`, activating it if it is a ghost."""
    return Persistent.__getattribute__(obj, "_slots")


def _parents_of(obj: UvmObject) -> list[UvmObject]:
    return [value for name, value in _slots_of(obj).items() if is_parent_name(name)]


def _ancestors(obj: UvmObject) -> Iterator[UvmObject]:
    """Depth-first, pre-order walk of the parents of `obj`; each object once."""
    seen = {id(obj)}
    stack = list(reversed(_parents_of(obj)))
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(reversed(_parents_of(current)))


def _find_in_parents(obj: UvmObject, name: str) -> Any:
    """`(holder, value)` of the first ancestor slot called `name`, else `_MISSING`."""
    for ancestor in _ancestors(obj):
        slots = _slots_of(ancestor)
        if name in slots:
            return ancestor, slots[name]
    return _MISSING


def _bind(value: Any, receiver: UvmObject) -> Any:
    return value.bind(receiver) if isinstance(value, Method) else value


def _dispatch_not_understood(receiver: UvmObject, selector: str, args: tuple[Any, ...]) -> Any:
    """Call the receiver's `_doesNotUnderstand_`: a slot (own or inherited) or the class's."""
    name = "_doesNotUnderstand_"
    slots = _slots_of(receiver)
    found = (receiver, slots[name]) if name in slots else _find_in_parents(receiver, name)
    if found is not _MISSING:
        return _bind(found[1], receiver)(selector, args)
    return type(receiver)._doesNotUnderstand_(receiver, selector, args)


def _is_data_descriptor(cls: type, name: str) -> bool:
    attr = getattr(cls, name, None)
    return attr is not None and hasattr(type(attr), "__set__")


# -- cloning and describing -------------------------------------------------------------


def _copy_state(key: str, value: Any, memo: dict[int, Any]) -> Any:
    if key != "_slots":
        return copy.deepcopy(value, memo)
    return {
        name: slot if is_parent_name(name) else copy.deepcopy(slot, memo)
        for name, slot in value.items()
    }


def _oid_text(obj: Persistent) -> str:
    oid = obj._p_oid
    return f" oid=0x{int.from_bytes(oid, 'big'):x}" if oid is not None else ""


def _describe_value(name: str, value: Any) -> str:
    if is_parent_name(name):
        return f"{_short.repr(value)}  (parent)"
    if isinstance(value, Method):
        return f"method  {value.first_line()}"
    return _short.repr(value)


def _repr(obj: UvmObject) -> str:
    """Short and side-effect free: it never activates a ghost nor runs a lookup."""
    cls = type(obj).__name__
    oid = _oid_text(obj)
    if obj._p_status == "ghost":
        return f"<{cls}{oid} (ghost)>"
    names = list(Persistent.__getattribute__(obj, "__dict__").get("_slots", {}))
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"<{cls}{oid} slots: {shown}>"
