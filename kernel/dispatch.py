"""What a message reaches: the actor it names and the handler for its selector.

An actor offers a selector either as a `Method` slot (the object model's
persistent methods; a model-written one is called with the message's
arguments only, never with the step, so it cannot reach the image) or as a
Python method marked `@handler` (`kernel.handler`). Nothing else is reachable:
an unknown, empty or `_`-prefixed selector is `UnknownSelector`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kernel.errors import UnknownActor, UnknownSelector
from kernel.handler import is_handler
from prototypes import Method, UvmObject


def lookup_actor(root: Any, name: str) -> Any:
    """The actor object called `name` in the image."""
    actor = root["actors"].get(name)
    if actor is None:
        raise UnknownActor(name)
    return actor


def resolve_handler(actor: Any, actor_name: str, selector: str) -> Callable[..., Any]:
    """The callable for `selector`: a Method slot or an `@handler` Python method."""
    if not selector or selector.startswith("_"):
        raise UnknownSelector(actor_name, selector)
    attr = getattr(type(actor), selector, None)
    if attr is not None:
        if is_handler(attr):
            bound: Callable[..., Any] = getattr(actor, selector)
            return bound
        raise UnknownSelector(actor_name, selector)
    if isinstance(actor, UvmObject) and actor.has_slot(selector, inherited=True):
        _holder, value = actor.lookup_slot(selector)
        if isinstance(value, Method) and value.generated:
            # model-written code gets the message's arguments, never the step (the image)
            method = value.bind(actor)
            return lambda step, *args, **kwargs: method(*args, **kwargs)
        if isinstance(value, Method):
            return value.bind(actor)
    raise UnknownSelector(actor_name, selector)


def selectors_of(actor: Any) -> list[str]:
    """The selectors an actor answers (for `status` and error messages)."""
    names = {n for n in dir(type(actor))
             if is_handler(getattr(type(actor), n, None))}
    if isinstance(actor, UvmObject):
        names.update(n for n in actor.slot_names()
                     if isinstance(actor.get_slot(n), Method) and not n.startswith("_"))
    return sorted(names)
