"""The generative doesNotUnderstand: a method written, checked and installed in one step.

Theory of operation
-------------------
An admin turns `generative` on for an actor or a prototype (a slot, see
`prototypes.generative`). When such an actor gets a selector nobody on its
delegation chain understands, the kernel's step runner calls, in the same
step, `learn(step, actor, selector, args, kwargs)` of the `learner` actor
(`learn.actor`). The learner:

1. shows the model the receiver's `describe()`, the message (selector and
   arguments) and up to three existing methods of the receiver and its
   prototypes, and asks for one `def selector(self, ...)`;
2. puts `self` first when the def forgot it and otherwise takes exactly the
   message's arguments (`with_self`: the small model's most common slip),
   then has the guardian check it as generated code (shape, the safety
   allowlist, the persistence covenant), plus the name: it must define
   `selector`;
3. on acceptance installs it as a generated `Method` slot, with provenance,
   on the holder of the `generative` flag, and calls it with the message's
   arguments: its value is the step's answer, so the install and the answer
   commit together, and an exception in the call dooms both;
4. on refusal tries again, with the guardian's reasons shown to the model,
   up to `learn.attempts` times, then raises `NotLearned` carrying the
   reasons: the sender gets a `does_not_understand` error, the image keeps
   nothing but the refusal's record (written by the runner afterwards).

Every attempt is a live `learn` event; the install is a `learn` event after
commit. Two actors learning the same selector for one prototype at once
conflict on the prototype; the retried step finds the method and just
answers, so one method is installed.
"""

from __future__ import annotations

import ast
import logging
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from persistent import Persistent
from persistent.list import PersistentList

from actors import llm, prompts
from actors.code import methods
from kernel.errors import NotLearned
from kernel.steps import StepContext, handler
from prototypes import Method, UvmObject, guardian
from prototypes.errors import GuardianError, MalformedMethod
from prototypes.generative import learning_target

log = logging.getLogger(__name__)

TEMPERATURE = 0.3
MAX_NEW_TOKENS = 256
EXAMPLES = 3
EXAMPLE_CHARS = 600
KEEP_REFUSALS = 50

SYSTEM = (
    "You write one Python method for an object of a live object system. Reply with "
    "the method's code only: exactly one `def NAME(self, ...)` whose body returns the "
    "answer. No imports, no print, no names or attributes starting with an underscore, "
    "no nested functions or classes. Builtins you may use: "
    + ", ".join(sorted(guardian.ALLOWED_BUILTINS)) + ". If the method changes a list "
    "or dict held by self, end it with `self._p_changed = True`."
)


class Learner(Persistent):
    """Writes missing methods for generative actors; lists, shows and removes them."""

    uses_llm: ClassVar[bool] = True  # waits behind the video lease (actors.video.lease)

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.attempts = 3
        self.name = "learner"
        self.persona: str | None = None  # the bare model writes code
        self.refusals: PersistentList = PersistentList()
        self.configure(config)

    def configure(self, config: Mapping[str, Any] | None) -> bool:
        """Take `learn.attempts` and `learn.actor` (genesis calls this at every start)."""
        if not config:
            return False
        wanted = (int(config["learn.attempts"]), str(config["learn.actor"]))
        if wanted == (self.attempts, self.name):
            return False
        self.attempts, self.name = wanted
        return True

    @handler
    def learn(self, step: StepContext, actor: str, selector: str, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        """Write, check, install and call `selector` for `actor` (see the module docstring)."""
        receiver = step.root["actors"][actor]
        target = learning_target(receiver)
        refused: list[tuple[int, str, list[GuardianError]]] = []
        for attempt in range(1, self.attempts + 1):
            step.stream("learn", phase="attempt", attempt=attempt, actor=actor,
                        selector=selector)
            source, model = self.write(receiver, selector, args, kwargs, refused)
            problems = review(source, selector)
            if problems:
                refused.append((attempt, source, problems))
                step.stream("learn", phase="refused", attempt=attempt, actor=actor,
                            selector=selector, violations=[violation(p) for p in problems])
                continue
            count_refusals(step.root["metrics"], refused)
            method = Method(source, generated=True, provenance={
                "mission": step.message.id, "model": model, "time": time.time(),
                "attempt": attempt, "actor": actor, "selector": selector})
            target.set_slot(selector, method)
            step.root["metrics"].incr("methods.generated.accepted")
            step.emit("learn", phase="installed", attempt=attempt, actor=actor,
                      selector=selector, owner=methods.owner_of(step.root, target))
            return method.bind(receiver)(*args, **kwargs)
        reasons = [f"attempt {n}: " + "; ".join(str(p) for p in problems)
                   for n, _source, problems in refused]
        entry = {"time": time.time(), "actor": actor, "selector": selector,
                 "message": step.message.id, "reasons": reasons,
                 "sources": [source for _n, source, _p in refused]}
        name = self.name
        raise NotLearned(actor, selector, reasons,
                         record=lambda root: keep_refusal(root, name, entry, refused))

    def write(self, receiver: UvmObject, selector: str, args: tuple[Any, ...],
              kwargs: dict[str, Any],
              refused: list[tuple[int, str, list[GuardianError]]]) -> tuple[str, str]:
        """One method source from the model, and the model's name."""
        generator = llm.generator()
        request = llm.GenerationRequest(
            messages=(llm.ChatMessage("system", SYSTEM),
                      llm.ChatMessage("user", user_prompt(receiver, selector, args, kwargs,
                                                          refused))),
            temperature=TEMPERATURE, max_new_tokens=MAX_NEW_TOKENS, persona=self.persona)
        generation = generator.generate(request)
        source = with_self(extract_source(generation.text, selector), len(args) + len(kwargs))
        return source, model_name(generator)

    # -- listing, showing, removing: `batos methods` through a running kernel ----------

    @handler
    def methods(self, step: StepContext) -> list[dict[str, Any]]:
        """Every generated method in the image, one row each."""
        return methods.rows(step.root)

    @handler
    def show(self, step: StepContext, owner: str, selector: str) -> dict[str, Any]:
        """One generated method: its source and provenance."""
        return methods.show(step.root, owner, selector)

    @handler
    def forget(self, step: StepContext, owner: str, selector: str) -> dict[str, Any]:
        """Remove one generated method (counted as removed)."""
        return methods.remove(step.root, owner, selector)

    @handler
    def generative(self, step: StepContext, owner: str, on: bool) -> dict[str, Any]:
        """Turn the generative doesNotUnderstand on or off for an actor or a prototype."""
        return methods.set_generative(step.root, owner, bool(on))

    @handler
    def refused(self, step: StepContext) -> list[dict[str, Any]]:
        """The latest refused learns, newest last, with the guardian's reasons."""
        return [dict(entry) for entry in self.refusals]


def review(source: str, selector: str) -> list[GuardianError]:
    """The guardian's verdict on generated `source`, plus: it must define `selector`."""
    found = guardian.violations(source, generated=True)
    if not found and guardian.method_name(source) != selector:
        found = [MalformedMethod(1, "selector-name", f"the method must be named {selector!r}, "
                                 f"not {guardian.method_name(source)!r}")]
    return found


def violation(error: GuardianError) -> dict[str, Any]:
    return {"line": error.lineno, "rule": error.rule, "detail": error.detail}


def count_refusals(metrics: Any, refused: list[tuple[int, str, list[GuardianError]]]) -> None:
    for _attempt, _source, problems in refused:
        metrics.incr("methods.generated.rejected")
        for problem in problems:
            metrics.incr(f"guardian.rejected.{problem.rule}")


def keep_refusal(root: Any, learner: str, entry: dict[str, Any],
                 refused: list[tuple[int, str, list[GuardianError]]]) -> None:
    """After the step was aborted: count the refusals and keep the latest ones."""
    count_refusals(root["metrics"], refused)
    actor = root["actors"].get(learner)
    if isinstance(actor, Learner):
        actor.refusals.append(entry)
        del actor.refusals[:-KEEP_REFUSALS]


def user_prompt(receiver: UvmObject, selector: str, args: tuple[Any, ...],
                kwargs: dict[str, Any],
                refused: list[tuple[int, str, list[GuardianError]]]) -> str:
    call = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    last = None
    if refused:
        _n, source, problems = refused[-1]
        last = f"{source}\nRefused because: " + "; ".join(str(p) for p in problems)
    return prompts.sections(
        ("Object", receiver.describe()),
        ("Existing methods", "\n\n".join(examples(receiver)) or None),
        ("Message it does not understand", f"{selector}({call})"),
        ("Your previous method", last),
        ("Task", f"Write `def {selector}(self{', ...' if call else ''})`."))


def examples(receiver: UvmObject) -> list[str]:
    """Sources of up to `EXAMPLES` methods of the receiver and its prototypes."""
    found: list[str] = []
    for holder in [receiver, *receiver.ancestors()]:
        for name in holder.slot_names():
            value = holder.get_slot(name)
            if isinstance(value, Method) and len(found) < EXAMPLES:
                found.append(value.source.strip()[:EXAMPLE_CHARS])
    return found


_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


def extract_source(text: str, selector: str) -> str:
    """The method in a model's reply: a fenced block if any, from its first `def` (or
    decorator) to the end of that def's body."""
    blocks = _FENCE.findall(text)
    body = next((b for b in blocks if f"def {selector}" in b),
                next((b for b in blocks if "def " in b), blocks[0] if blocks else text))
    lines = body.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.lstrip().startswith(("def ", "@"))), 0)
    kept = [lines[start].lstrip()] if lines else []
    indent = len(lines[start]) - len(lines[start].lstrip()) if lines else 0
    in_body = kept[0].startswith("def ") if kept else True
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent and in_body:
            break
        in_body = in_body or line.lstrip().startswith("def ")
        kept.append(line[indent:] if line[:indent].isspace() else line)
    return "\n".join(kept).rstrip() + "\n"


_DEF_OPEN = re.compile(r"^(\s*def\s+\w+\s*\()(\s*\))?")


def with_self(source: str, arity: int) -> str:
    """`source` with `self` put first when the def forgot it and takes exactly the
    message's `arity` arguments (the small model's most common slip); else unchanged.
    The guardian still reviews the result like any other source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    func = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(func, ast.FunctionDef) or func.decorator_list:
        return source
    params = [*func.args.posonlyargs, *func.args.args]
    if (params and params[0].arg == "self") or len(params) != arity \
            or func.args.vararg or func.args.kwarg or func.args.kwonlyargs:
        return source
    return _DEF_OPEN.sub(lambda m: m.group(1) + ("self)" if m.group(2) else "self, "),
                         source, count=1)


def model_name(generator: Any) -> str:
    """What wrote the method: the model's name or path, else the generator's type."""
    model = getattr(generator, "model", None)
    name = getattr(model, "name_or_path", None)
    return str(name) if name else type(generator).__name__
