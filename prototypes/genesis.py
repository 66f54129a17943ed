"""Genesis prototypes: the root traits object and the base `object` prototype.

`install(container)` is what image genesis calls. It is idempotent: it only
creates what is absent, so calling it on every start is safe. Every other
prototype (and every new object) delegates, directly or not, to "traits".
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from prototypes.method import Method
from prototypes.uvm import UvmObject

TRAITS_KEY = "traits"
OBJECT_KEY = "object"

TRAITS_METHODS: tuple[str, ...] = (
    '''def describe_slots(self):
    """Own slot names mapped to the type name of their values."""
    return {name: type(self.get_slot(name)).__name__ for name in self.slot_names()}
''',
    '''def responds_to(self, selector):
    """Whether a lookup of `selector` would find a slot on the delegation chain."""
    return self.has_slot(selector, inherited=True)
''',
    '''def is_a(self, prototype):
    """Whether `prototype` is this object or on its delegation chain."""
    return prototype is self or any(a is prototype for a in self.ancestors())
''',
    '''def copy(self, **slots):
    """A clone of this object with `slots` set on it."""
    new = self.clone()
    for name, value in slots.items():
        new.set_slot(name, value)
    return new
''',
)


def make_traits() -> UvmObject:
    """The root traits object: universal behaviour as `Method` slots, no parents."""
    traits = UvmObject()
    for source in TRAITS_METHODS:
        method = Method(source)
        traits.set_slot(method.name, method)
    return traits


def make_prototypes(traits: UvmObject) -> dict[str, UvmObject]:
    """The named base prototypes, each delegating to `traits`."""
    return {OBJECT_KEY: UvmObject(**{"traits*": traits})}


def install(prototypes_container: MutableMapping[str, Any]) -> None:
    """Create "traits" and the base prototypes in the container, unless already there."""
    if TRAITS_KEY not in prototypes_container:
        prototypes_container[TRAITS_KEY] = make_traits()
    traits = prototypes_container[TRAITS_KEY]
    for key, prototype in make_prototypes(traits).items():
        if key not in prototypes_container:
            prototypes_container[key] = prototype


def new_object(prototypes_container: MutableMapping[str, Any], **slots: Any) -> UvmObject:
    """A clone of the installed "object" prototype with `slots` set on it."""
    new = prototypes_container[OBJECT_KEY].clone()
    for name, value in slots.items():
        new.set_slot(name, value)
    return new
