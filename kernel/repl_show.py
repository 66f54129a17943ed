"""What the REPL shows of an object: `ls` (entries or slots) and `inspect`
(slots, parents and method sources; or class, oid and attributes).

Listings stop at `LISTING_LIMIT` entries and say how many more there are;
values are shortened with `reprlib`, so a large BTree or a long text never
floods the terminal.

`describe` is how the REPL shows a value (its display hook, and every value
in a listing): a UvmObject by its kind and name (the key it has under
`root["prototypes"]` or `root["actors"]`, learned by `learn_names`, else its
`name`, `id` or `state_name` slot) and, for a mission, its state, loaded
rather than shown as a ghost; a float that reads as a time since the epoch
(years 2001 to 2096) with its date beside it.
"""

from __future__ import annotations

import datetime as dt
import reprlib
from typing import Any

from persistent import Persistent

from kernel.errors import NotStored
from prototypes.method import Method
from prototypes.uvm import UvmObject, is_parent_name

LISTING_LIMIT = 100  # entries `ls` and `inspect` print before summarising the rest

EPOCH_RANGE = (1e9, 4e9)  # 2001-09-09 .. 2096-10-02: floats shown with their date
NAME_SLOTS = ("name", "id", "state_name")
_names: dict[bytes, str] = {}  # oid -> where the object is registered (learn_names)

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 70


def ls(obj: Any) -> None:
    """List the entries of a mapping or BTree, or the slots of a UvmObject."""
    print(label_of(obj))
    for line in _listing(obj):
        print(f"  {line}")


def inspect(obj: Any) -> None:
    """Print a UvmObject's slots, parents and method sources; else class, oid, attributes."""
    if isinstance(obj, UvmObject):
        _inspect_uvm(obj)
        return
    print(f"class: {type(obj).__module__}.{type(obj).__qualname__}")
    if isinstance(obj, Persistent):
        print(f"oid:   {_oid_text(obj)}")
    if _is_mapping(obj):
        print(f"{counted(len(obj), 'entry', 'entries')}:")
        lines = _mapping_lines(obj)
    else:
        print("attributes:")
        lines = _attribute_lines(obj)
    for line in lines:
        print(f"  {line}")


def _inspect_uvm(obj: UvmObject) -> None:
    print(f"{type(obj).__name__} oid {_oid_text(obj)}")
    parents = obj.parents()
    print("parents: " + (", ".join(_short_value(p) for p in parents) if parents else "(none)"))
    print("slots:")
    for line in _slot_lines(obj):
        print(f"  {line}")
    inherited = sorted({name for ancestor in obj.ancestors() for name in ancestor.slot_names()
                        if not is_parent_name(name)} - set(obj.slot_names()))
    if inherited:
        print("inherited: " + ", ".join(inherited))
    for name in obj.slot_names():
        value = obj.get_slot(name)
        if isinstance(value, Method):
            print(f"\n--- method {name} ---\n{value.source.rstrip()}")


def _listing(obj: Any) -> list[str]:
    if isinstance(obj, UvmObject):
        return _slot_lines(obj)
    if _is_mapping(obj):
        return _mapping_lines(obj)
    if isinstance(obj, list | tuple) or type(obj).__name__ == "PersistentList":
        return _limited(f"[{i}] {_short_value(v)}" for i, v in enumerate(obj))
    return _attribute_lines(obj)


def _slot_lines(obj: UvmObject) -> list[str]:
    names = obj.slot_names()
    width = max((len(n) for n in names), default=0)
    return _limited(f"{n.ljust(width)}  {_slot_value(n, obj.get_slot(n))}" for n in names)


def _slot_value(name: str, value: Any) -> str:
    if is_parent_name(name):
        return f"{_short_value(value)}  (parent)"
    if isinstance(value, Method):
        return f"method  {value.first_line()}"
    return _short_value(value)


def _mapping_lines(obj: Any) -> list[str]:
    return _limited(f"{_short.repr(k)}: {_short_value(v)}" for k, v in obj.items())


def _attribute_lines(obj: Any) -> list[str]:
    state = _state_of(obj)
    if isinstance(state, dict):
        return _limited(f"{k}: {_short_value(v)}" for k, v in state.items())
    return [_short_value(state)]


def _state_of(obj: Any) -> Any:
    if isinstance(obj, Persistent):
        obj._p_activate()
        state = obj.__getstate__()
        # Persistent classes with both __dict__ and __slots__ give (dict, slots).
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            return {**state[0], **(state[1] or {})}
        return state
    return getattr(obj, "__dict__", obj)


def _limited(lines: Any) -> list[str]:
    out: list[str] = []
    extra = 0
    for line in lines:
        if len(out) < LISTING_LIMIT:
            out.append(line)
        else:
            extra += 1
    if extra:
        out.append(f"... and {extra} more")
    return out


def learn_names(root: Any) -> None:
    """Remember the names of the prototypes and actors, to show objects by them."""
    for area in ("prototypes", "actors"):
        for key, obj in (root.get(area) or {}).items():
            oid = getattr(obj, "_p_oid", None)
            if oid is not None:
                _names[oid] = f"{area}[{key!r}]"


def describe(value: Any) -> str:
    """How the REPL shows `value` (see the module note)."""
    if isinstance(value, UvmObject):
        return _describe_uvm(value)
    if isinstance(value, float) and EPOCH_RANGE[0] <= value <= EPOCH_RANGE[1]:
        return f"{value!r}  ({as_date(value)})"
    if isinstance(value, Persistent) and value._p_oid in _names:
        return f"<{type(value).__name__} {_names[value._p_oid]} oid {_oid_text(value)}>"
    return _short_value(value) if isinstance(value, Persistent) else repr(value)


def as_date(seconds: float) -> str:
    """Seconds since the epoch as a UTC date."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe_uvm(obj: UvmObject) -> str:
    obj._p_activate()  # a ghost says nothing; loading it only reads
    kind = type(obj).__name__
    name = _names.get(obj._p_oid) if obj._p_oid is not None else None
    if name is None:
        found = next((obj.get_slot(n) for n in NAME_SLOTS if obj.has_slot(n)), None)
        name = _short.repr(found) if found is not None else None
    state = None
    if obj.has_slot("state*"):
        parent = obj.get_slot("state*")
        if isinstance(parent, UvmObject) and parent.has_slot("state_name"):
            state = parent.get_slot("state_name")
    parts = [p for p in (name, None if state is None else f"state {state}") if p]
    return f"<{kind} {' '.join(parts) + ', ' if parts else ''}oid {_oid_text(obj)}>"


def _short_value(value: Any) -> str:
    if isinstance(value, UvmObject) or (
            isinstance(value, float) and EPOCH_RANGE[0] <= value <= EPOCH_RANGE[1]):
        return describe(value)
    if isinstance(value, Method):
        return repr(value)
    if isinstance(value, Persistent):
        kind = type(value).__name__
        size = f", {counted(len(value), 'entry', 'entries')}" if _is_mapping(value) else ""
        return f"<{kind} oid {_oid_text(value)}{size}>"
    return _short.repr(value)


def counted(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _is_mapping(obj: Any) -> bool:
    return not isinstance(obj, UvmObject) and all(
        hasattr(obj, name) for name in ("keys", "items", "__len__"))


def label_of(obj: Any) -> str:
    if isinstance(obj, int):
        return f"oid 0x{obj:x}"
    return _short_value(obj)


def _oid_text(obj: Persistent) -> str:
    oid = obj._p_oid
    return f"0x{int.from_bytes(oid, 'big'):x}" if oid is not None else "(not stored yet)"


def oid_of(obj: Any) -> bytes:
    oid = getattr(obj, "_p_oid", None) if isinstance(obj, Persistent) else None
    if oid is None:
        raise NotStored(label_of(obj))
    return oid


# -- consoles ----------------------------------------------------------------------------
