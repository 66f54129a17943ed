"""`Method`: behaviour stored as source text, compiled lazily, never pickled.

A method is a persistent object holding the source of one `def name(self, ...)`.
The guardian checks the source whenever it is set (on creation and on every
`method.source = ...`), so nothing unchecked is ever stored. The compiled function
lives only in the volatile `_v_compiled` attribute, paired with the source it came
from: a new source, a new connection or a ghosted object means a fresh compile.
"""

from __future__ import annotations

import builtins
import types
from typing import Any

from persistent import Persistent

from prototypes import guardian
from prototypes.errors import MalformedMethod


class Method(Persistent):
    """Source text of one function whose first parameter is the receiver (`self`).

    `generated=True` marks model-written code: it must also pass the guardian's
    safety allowlist and runs with only the allowlisted builtins. `provenance`
    says where generated code came from (mission, model, time...); plain data.
    """

    provenance: dict[str, Any] | None = None  # methods stored before provenance existed

    _v_compiled: tuple[str, types.FunctionType] | None = None

    def __init__(self, source: str, *, generated: bool = False,
                 provenance: dict[str, Any] | None = None) -> None:
        self._generated = bool(generated)
        if provenance:
            self.provenance = dict(provenance)
        self.source = source

    @property
    def generated(self) -> bool:
        """Whether the source was written by a model (checked against the allowlist)."""
        return self._generated

    @property
    def source(self) -> str:
        """The Python source of the function."""
        return self._source

    @source.setter
    def source(self, text: str) -> None:
        guardian.check_source(text, generated=self._generated)
        self._source = text
        self.name = guardian.method_name(text)
        self._v_compiled = None

    def first_line(self) -> str:
        """The first non-blank line of the source, for listings."""
        return next((line.strip() for line in self._source.splitlines() if line.strip()), "")

    def function(self) -> types.FunctionType:
        """The compiled function, compiled now if the cache is empty or stale."""
        cached = self._v_compiled
        if cached is not None and cached[0] == self._source:
            return cached[1]
        func = _compile(self._source, self.name, self._generated)
        self._v_compiled = (self._source, func)
        return func

    def bind(self, receiver: object) -> types.MethodType:
        """The function bound to `receiver` (the original receiver, per Self semantics)."""
        return types.MethodType(self.function(), receiver)

    def __call__(self, receiver: object, *args: Any, **kwargs: Any) -> Any:
        """Run the method with `receiver` as `self`."""
        return self.function()(receiver, *args, **kwargs)

    def copy(self) -> Method:
        """A new, independent `Method` with the same source and provenance."""
        return Method(self._source, generated=self._generated, provenance=self.provenance)

    def __deepcopy__(self, memo: dict[int, object]) -> Method:
        return self.copy()

    def __repr__(self) -> str:
        try:
            if self._p_status == "ghost":
                return "<Method (ghost)>"
            return f"<Method {self.name}{' generated' if self._generated else ''}>"
        except Exception:
            return "<Method>"


def _compile(source: str, name: str, generated: bool) -> types.FunctionType:
    """Execute the (already checked) `def` in a small namespace and return the function."""
    namespace: dict[str, Any] = {
        "__builtins__": guardian.safe_builtins() if generated else builtins.__dict__,
        "__name__": f"batos.method.{name}",
    }
    try:
        code = compile(source, f"<method {name}>", "exec")
    except (SyntaxError, ValueError) as exc:  # limits compile() has and ast.parse has not
        raise MalformedMethod(getattr(exc, "lineno", None) or 1, "syntax", str(exc)) from None
    exec(code, namespace)
    func = namespace[name]
    if not isinstance(func, types.FunctionType):
        raise MalformedMethod(1, "single-def", f"{name!r} did not compile to a function")
    return func
