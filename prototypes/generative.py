"""The generative doesNotUnderstand, as far as the object model knows it.

An object is *generative* when its `generative` slot, own or inherited, holds
`True`: a message it does not understand then asks the image's learner to
write the missing method instead of failing. It is off unless an admin sets
the slot on an actor or on a prototype. The flag's holder is where a learned
method is installed: the actor itself, or the prototype whose children all
learn together.

Only a selector that can be a method name is learnable: an identifier, not
`_`-prefixed, not one of the object model's primitives, not an attribute of
the object's Python class. Everything else stays an unknown selector.
"""

from __future__ import annotations

from typing import Any

from prototypes.uvm import RESERVED_SELECTORS, UvmObject

GENERATIVE = "generative"


def is_generative(obj: Any) -> bool:
    """Whether `obj` is a UvmObject whose `generative` slot (own or inherited) is True."""
    if not isinstance(obj, UvmObject) or not obj.has_slot(GENERATIVE, inherited=True):
        return False
    return obj.lookup_slot(GENERATIVE)[1] is True


def learning_target(obj: UvmObject) -> UvmObject:
    """The object that holds the `generative` flag: a learned method is installed there."""
    holder, _flag = obj.lookup_slot(GENERATIVE)
    return holder


def learnable(obj: Any, selector: str) -> bool:
    """Whether `selector` may become a method of generative `obj`."""
    return (is_generative(obj) and selector.isidentifier() and not selector.startswith("_")
            and selector not in RESERVED_SELECTORS and not hasattr(type(obj), selector)
            and selector != GENERATIVE)
