"""The object model: slots, delegation, methods, cloning, genesis — over a real ZODB."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import ZODB
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping
from ZODB.FileStorage import FileStorage

from prototypes import (
    BatosError,
    DoesNotUnderstand,
    Method,
    PrototypeError,
    SafetyViolation,
    SlotNotFound,
    UvmObject,
    genesis,
    install,
    new_object,
)
from prototypes.errors import InvalidParent, ReservedSlotName


class FileImage:
    """A FileStorage database in a temporary folder that tests can close and reopen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: ZODB.DB | None = None

    def open(self) -> Any:
        """Open the database (again) and return a fresh connection's root."""
        self.close()
        self.db = ZODB.DB(FileStorage(str(self.path)))
        return self.db.open().root()

    def close(self) -> None:
        transaction.abort()
        if self.db is not None:
            self.db.close()
            self.db = None


@pytest.fixture
def image(tmp_path: Path) -> Iterator[FileImage]:
    files = FileImage(tmp_path / "Data.fs")
    yield files
    files.close()


def method(*lines: str, generated: bool = False) -> Method:
    return Method("\n".join(lines) + "\n", generated=generated)


def parent(obj: UvmObject, *parents: UvmObject) -> UvmObject:
    for index, item in enumerate(parents):
        obj.set_slot(f"p{index}*", item)
    return obj


# -- slots ------------------------------------------------------------------------------


def test_attribute_syntax_reads_and_writes_slots() -> None:
    obj = UvmObject(a=1)
    obj.b = [2]
    assert (obj.a, obj.b, obj.get_slot("b")) == (1, [2], [2])
    assert obj.slot_names() == ["a", "b"]
    assert obj.__getstate__() == {"_slots": {"a": 1, "b": [2]}}
    del obj.a
    assert not obj.has_slot("a")
    with pytest.raises(SlotNotFound):
        del obj.a


def test_volatile_and_persistence_names_bypass_slots() -> None:
    obj = UvmObject()
    obj._v_cache = 5
    assert obj._v_cache == 5
    assert obj.slot_names() == []
    assert obj._p_changed is False
    assert "_v_cache" not in obj.__getstate__()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("clone", 1, ReservedSlotName),
        ("set_slot", 1, ReservedSlotName),
        ("_p_x", 1, ReservedSlotName),
        ("_v_x", 1, ReservedSlotName),
        ("__x__", 1, ReservedSlotName),
        ("_slots", 1, ReservedSlotName),
        ("parent*", 42, InvalidParent),
    ],
)
def test_set_slot_refuses(name: str, value: Any, error: type[PrototypeError]) -> None:
    with pytest.raises(error):
        UvmObject().set_slot(name, value)


def test_slot_write_marks_changed_and_commits(image: FileImage) -> None:
    root = image.open()
    root["obj"] = obj = UvmObject(x=1)
    transaction.commit()
    obj.x = 2
    assert obj._p_changed is True
    transaction.commit()
    assert image.open()["obj"].x == 2


def test_ghost_is_activated_by_slot_read(image: FileImage) -> None:
    root = image.open()
    root["obj"] = UvmObject(x="hello")
    transaction.commit()
    obj = image.open()["obj"]
    assert obj._p_status == "ghost"
    assert "ghost" in repr(obj)
    assert obj._p_status == "ghost"  # repr does not activate
    assert obj.x == "hello"
    assert obj._p_status == "saved"


def test_data_descriptor_on_subclass_is_not_a_slot() -> None:
    class Temperature(UvmObject):
        @property
        def kelvin(self) -> float:
            return self.celsius + 273.15

        @kelvin.setter
        def kelvin(self, value: float) -> None:
            self.celsius = value - 273.15

    obj = Temperature()
    obj.kelvin = 300.0
    assert obj.slot_names() == ["celsius"]
    assert obj.kelvin == pytest.approx(300.0)


# -- delegation -------------------------------------------------------------------------


def own() -> UvmObject:
    return UvmObject(x="own")


def from_parent() -> UvmObject:
    return parent(UvmObject(), UvmObject(x="parent"))


def from_grandparent() -> UvmObject:
    return parent(UvmObject(), parent(UvmObject(), UvmObject(x="grandparent")))


def depth_first() -> UvmObject:
    first = parent(UvmObject(), UvmObject(x="first-deep"))
    return parent(UvmObject(), first, UvmObject(x="second"))


def shadowing() -> UvmObject:
    return parent(UvmObject(x="own"), UvmObject(x="parent"))


def cycle() -> UvmObject:
    a, b = UvmObject(), UvmObject(x="in-cycle")
    a.set_slot("p*", b)
    b.set_slot("p*", a)
    return a


def diamond() -> UvmObject:
    top = UvmObject(x="top")
    left, right = parent(UvmObject(), top), parent(UvmObject(x="right"), top)
    return parent(UvmObject(), left, right)


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (own, "own"),
        (from_parent, "parent"),
        (from_grandparent, "grandparent"),
        (depth_first, "first-deep"),
        (shadowing, "own"),
        (cycle, "in-cycle"),
        (diamond, "top"),
    ],
)
def test_lookup_order(build: Callable[[], UvmObject], expected: str) -> None:
    obj = build()
    assert obj.x == expected
    assert obj.has_slot("x", inherited=True)
    with pytest.raises(DoesNotUnderstand):
        _ = obj.missing


def test_ancestors_visit_each_object_once() -> None:
    obj = cycle()
    assert obj.ancestors() == [obj.get_slot("p*")]


def test_does_not_understand_carries_selector_and_receiver() -> None:
    obj = UvmObject()
    with pytest.raises(DoesNotUnderstand) as info:
        _ = obj.frobnicate
    err = info.value
    assert (err.selector, err.receiver, err.args) == ("frobnicate", obj, ())
    assert all(isinstance(err, kind) for kind in (AttributeError, PrototypeError, BatosError))
    assert not hasattr(obj, "frobnicate")
    assert getattr(obj, "frobnicate", "default") == "default"


def test_dunder_lookups_never_reach_does_not_understand() -> None:
    class Recording(UvmObject):
        def _doesNotUnderstand_(self, selector: str, args: tuple[Any, ...]) -> Any:
            raise AssertionError(selector)

    obj = Recording()
    assert not hasattr(obj, "__nonexistent__")
    assert repr(obj).startswith("<Recording")


def test_subclass_overrides_does_not_understand() -> None:
    class Forgiving(UvmObject):
        def _doesNotUnderstand_(self, selector: str, args: tuple[Any, ...]) -> Any:
            return f"?{selector}{args}"

    assert Forgiving().anything == "?anything()"


@pytest.mark.parametrize("where", ["own", "inherited"])
def test_slot_overrides_does_not_understand(where: str) -> None:
    handler = method(
        "def _doesNotUnderstand_(self, selector, args):", "    return self.tag + selector"
    )
    obj = UvmObject(tag="me:")
    holder = obj if where == "own" else UvmObject()
    holder.set_slot("_doesNotUnderstand_", handler)
    if where == "inherited":
        obj.set_slot("traits*", holder)
    assert obj.whatever == "me:whatever"


# -- methods ----------------------------------------------------------------------------


def test_method_binds_to_original_receiver() -> None:
    base = UvmObject(
        name="base",
        greet=method("def greet(self, who):", "    return self.name + ' greets ' + who"),
    )
    child = parent(UvmObject(name="child"), base)
    assert child.greet("you") == "child greets you"
    assert base.greet("you") == "base greets you"


def test_method_compiles_once_and_recompiles_on_new_source() -> None:
    m = method("def f(self):", "    return 1")
    obj = UvmObject(f=m)
    assert m._v_compiled is None
    assert obj.f() == 1
    first = m.function()
    assert obj.f.__func__ is first and m.function() is first
    m.source = "def f(self):\n    return 2\n"
    assert obj.f() == 2
    assert m.function() is not first


def test_rejected_source_leaves_method_unchanged() -> None:
    m = method("def f(self):", "    return 1", generated=True)
    with pytest.raises(SafetyViolation):
        m.source = "def f(self):\n    import os\n"
    assert m.source == "def f(self):\n    return 1\n"
    with pytest.raises(SafetyViolation):
        method("def f(self):", "    return open('x')", generated=True)


def test_generated_method_gets_only_allowlisted_builtins() -> None:
    m = method("def f(self, xs):", "    return len(xs)", generated=True)
    assert m(UvmObject(), [1, 2]) == 2
    namespace = m.function().__globals__["__builtins__"]
    assert "len" in namespace and "open" not in namespace


def test_method_survives_commit_and_reopen(image: FileImage) -> None:
    root = image.open()
    root["obj"] = obj = UvmObject(count=0, items=[])
    obj.set_slot(
        "bump",
        method(
            "def bump(self, x):",
            "    self.count += 1",
            "    self.items.append(x)",
            "    self._p_changed = True",
            "    return self.count",
        ),
    )
    assert obj.bump("a") == 1
    transaction.commit()
    stored = obj.get_slot("bump")
    assert set(stored.__getstate__()) == {"_generated", "_source", "name"}
    obj = image.open()["obj"]
    assert obj.get_slot("bump")._v_compiled is None
    assert obj.bump("b") == 2
    transaction.commit()
    assert image.open()["obj"].items == ["a", "b"]


# -- cloning ----------------------------------------------------------------------------


def _append_nested(value: Any) -> None:
    value[1].append("clone")


def _set_nested(value: Any) -> None:
    value["inner"]["k"] = "clone"


CLONE_CASES = [
    ("nested-list", lambda: [1, [2]], _append_nested),
    ("nested-dict", lambda: {"inner": {"k": "orig"}}, _set_nested),
    ("mapping-of-dict", lambda: PersistentMapping({"inner": {"k": "orig"}}), _set_nested),
    ("persistent-list", lambda: PersistentList([1, [2]]), _append_nested),
    (
        "list-of-mapping",
        lambda: [PersistentMapping({"k": "orig"})],
        lambda v: v[0].update(k="clone"),
    ),
]


@pytest.mark.parametrize(
    ("make", "mutate"), [pytest.param(*row[1:], id=row[0]) for row in CLONE_CASES]
)
def test_clone_mutation_never_reaches_original(
    image: FileImage, make: Callable[[], Any], mutate: Callable[[Any], None]
) -> None:
    root = image.open()
    root["orig"] = orig = UvmObject(value=make())
    transaction.commit()
    expected = copy.deepcopy(orig.value)
    root["clone"] = clone = orig.clone()
    mutate(clone.value)
    clone._p_changed = True
    assert orig.value == expected
    transaction.commit()
    mutate(clone.value)
    transaction.commit()
    root = image.open()
    assert root["orig"].value == expected
    assert root["clone"].value != expected


def test_clone_shares_parents_and_objects_copies_methods(image: FileImage) -> None:
    root = image.open()
    traits, friend = UvmObject(), UvmObject()
    m = method("def f(self):", "    return 1")
    root["orig"] = orig = UvmObject(friend=friend, f=m, **{"traits*": traits})
    transaction.commit()
    clone = orig.clone()
    assert clone is not orig and type(clone) is UvmObject
    assert clone.get_slot("traits*") is traits and clone.friend is friend
    assert clone.get_slot("f") is not m
    clone.get_slot("f").source = "def f(self):\n    return 2\n"
    assert (orig.f(), clone.f()) == (1, 2)
    assert clone._p_jar is orig._p_jar and clone._p_oid is not None
    transaction.commit()
    assert clone._p_status == "saved"


def test_clone_without_jar_stays_unsaved() -> None:
    clone = UvmObject(x=[1]).clone()
    assert clone._p_jar is None and clone.x == [1]


# -- describing -------------------------------------------------------------------------


def test_describe_lists_slots_parents_methods(image: FileImage) -> None:
    root = image.open()
    root["obj"] = obj = UvmObject(count=3, go=method("def go(self, n):", "    return n"))
    obj.set_slot("traits*", UvmObject())
    transaction.commit()
    text = obj.describe()
    assert text.splitlines()[0].startswith("UvmObject oid=0x")
    assert "  count: 3" in text
    assert "go: method  def go(self, n):" in text
    assert "traits*:" in text and "(parent)" in text


def test_repr_never_raises_and_dir_lists_slots() -> None:
    broken = UvmObject.__new__(UvmObject)
    assert repr(broken).startswith("<UvmObject")
    obj = parent(UvmObject(a=1), UvmObject(b=2))
    assert repr(obj) == "<UvmObject slots: a, p0*>"
    assert {"a", "b", "clone"} <= set(dir(obj))


# -- genesis ----------------------------------------------------------------------------


def test_install_is_idempotent_and_persistent(image: FileImage) -> None:
    root = image.open()
    root["prototypes"] = container = PersistentMapping()
    install(container)
    traits, base = container["traits"], container["object"]
    install(container)
    assert (container["traits"], container["object"]) == (traits, base)
    transaction.commit()
    container = image.open()["prototypes"]
    install(container)
    obj = new_object(container, colour="red")
    # A clone shares its prototype's parents; it does not delegate to the prototype.
    assert obj.colour == "red" and not obj.is_a(container["object"])
    assert obj.is_a(container["traits"])
    assert obj.responds_to("colour") and obj.responds_to("is_a")
    assert not obj.responds_to("size")
    assert obj.describe_slots() == {"traits*": "UvmObject", "colour": "str"}
    assert obj._p_jar is not None


def test_traits_copy_method() -> None:
    container: dict[str, Any] = {}
    install(container)
    original = new_object(container, n=1)
    twin = original.copy(n=2)
    assert (original.n, twin.n) == (1, 2)
    assert twin.get_slot("traits*") is container[genesis.TRAITS_KEY]
