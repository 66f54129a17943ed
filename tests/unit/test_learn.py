"""The generative doesNotUnderstand with a scripted code writer, on a real image.

The step runner meets an unknown selector of a generative actor and calls the
learner in the same step: accepted methods are installed and answer at once;
each guardian rule's refusal leaves the image as it was (but for the refusal's
record) and answers `does_not_understand`; an exception after the install
dooms both; two actors of one prototype learning at once install one method.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors import llm
from actors.code import learn
from actors.code.learn import Learner, extract_source
from kernel import mailbox, wire
from kernel.errors import NotLearned, StepFailed, UnknownSelector
from kernel.image import Image
from kernel.mailbox import Envelope
from kernel.steps import StepResult, StepRunner
from prototypes import Method, UvmObject

DOUBLE = "def double(self, n):\n    return n * 2 + self.bias\n"
TRIPLE = "def triple(self, n):\n    return n * 3\n"


class ScriptedCoder:
    """A code writer that plays `sources` in order (the last repeats)."""

    def __init__(self, *sources: str, barrier: threading.Barrier | None = None) -> None:
        self.sources = list(sources)
        self.requests: list[llm.GenerationRequest] = []
        self.barrier = barrier
        self._lock = threading.Lock()

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        with self._lock:
            self.requests.append(request)
            index = min(len(self.requests), len(self.sources)) - 1
        if self.barrier is not None:
            self.barrier.wait(30)  # both learns are inside their steps at once
        text = f"Here is the method:\n```python\n{self.sources[index]}```\n"
        return llm.Generation(text=text, tokens=10, mean_logprob=-1.0, seconds=0.0)


@pytest.fixture
def coder() -> Iterator[list[ScriptedCoder]]:
    installed: list[ScriptedCoder] = []
    yield installed
    llm.install_engine(None, None)


def use(installed: list[ScriptedCoder], writer: ScriptedCoder) -> ScriptedCoder:
    installed.append(writer)
    llm.install_engine(writer, None)
    return writer


def setup(image: Image, generative: bool = True) -> None:
    with image.transaction() as root:
        assert isinstance(root["actors"]["learner"], Learner)  # genesis made it
        slots: dict[str, Any] = {"bias": 1}
        if generative:
            slots["generative"] = True
        root["actors"]["calc"] = UvmObject(**slots)
        proto = UvmObject(generative=True, describe_me="a calculator")
        root["prototypes"]["calculator"] = proto
        for name in ("calc1", "calc2"):
            root["actors"][name] = UvmObject(**{"proto*": proto})


def send(image: Image, actor: str, selector: str, *args: Any) -> tuple[StepResult, str]:
    envelope = Envelope(actor, selector, args)
    conn = image.connection()
    try:
        return StepRunner(conn, image.config).run_message(envelope), envelope.id
    finally:
        conn.close()


def counters(image: Image) -> dict[str, int]:
    with image.reading() as root:
        snapshot: dict[str, int] = root["metrics"].snapshot()
        return snapshot


def test_an_accepted_method_is_installed_and_answers(image: Image,
                                                     coder: list[ScriptedCoder]) -> None:
    setup(image)
    writer = use(coder, ScriptedCoder(DOUBLE))
    result, message_id = send(image, "calc", "double", 20)
    assert result.ok and result.value == 41
    assert ("learn", {"phase": "installed", "attempt": 1, "actor": "calc",
                      "selector": "double", "owner": "actors/calc"}) in result.events
    with image.reading() as root:
        method = root["actors"]["calc"].get_slot("double")
        assert isinstance(method, Method) and method.generated
        assert method.source == DOUBLE
        assert method.provenance is not None
        assert method.provenance["mission"] == message_id
        assert method.provenance["model"] == "ScriptedCoder"
    prompt = writer.requests[0].messages[-1].content
    assert "double(20)" in prompt and "bias: 1" in prompt
    again, _ = send(image, "calc", "double", 1)
    assert again.ok and again.value == 3 and len(writer.requests) == 1
    assert counters(image).get("methods.generated.accepted") == 1


def test_a_message_inside_the_image_learns_like_a_send(image: Image,
                                                       coder: list[ScriptedCoder]) -> None:
    """A message another step posted (in the mailbox, not from a client) learns too."""
    setup(image)
    use(coder, ScriptedCoder(DOUBLE))
    with image.transaction() as root:
        key = mailbox.post(root, Envelope("calc", "double", (20,)), 100)
    conn = image.connection()
    try:
        result = StepRunner(conn, image.config).run("calc", key)
    finally:
        conn.close()
    assert result.ok and result.value == 41
    with image.reading() as root:
        assert root["actors"]["calc"].get_slot("double").generated
        assert len(mailbox.mailbox_for(root, "calc")) == 0  # consumed in the same step


def test_a_def_that_forgot_self_gets_it_when_it_fits_the_message(
        image: Image, coder: list[ScriptedCoder]) -> None:
    setup(image)
    use(coder, ScriptedCoder("def double(n):\n    return n * 2\n"))
    result, _ = send(image, "calc", "double", 20)
    assert result.ok and result.value == 40
    with image.reading() as root:
        assert root["actors"]["calc"].get_slot("double").source == (
            "def double(self, n):\n    return n * 2\n")


@pytest.mark.parametrize(("source", "arity", "expected"), [
    ("def f():\n    return 1\n", 0, "def f(self):\n    return 1\n"),
    ("def f( ):\n    return 1\n", 0, "def f(self):\n    return 1\n"),
    ("def f(x, y=2):\n    return x\n", 2, "def f(self, x, y=2):\n    return x\n"),
    ("def f(self):\n    return 1\n", 0, None),  # has it
    ("def f(a, b):\n    return a\n", 1, None),  # another arity: the guardian decides
    ("def f(*args):\n    return 1\n", 0, None),
    ("@staticmethod\ndef f():\n    return 1\n", 0, None),
    ("def f(:\n", 0, None),  # not Python
    ("x = 1\n", 0, None),
])
def test_self_is_added_only_where_it_is_plainly_missing(source: str, arity: int,
                                                        expected: str | None) -> None:
    assert learn.with_self(source, arity) == (source if expected is None else expected)


def test_a_refused_attempt_is_shown_to_the_next(image: Image,
                                                coder: list[ScriptedCoder]) -> None:
    setup(image)
    writer = use(coder, ScriptedCoder("def double(self, n):\n    import os\n    return n\n",
                                      DOUBLE))
    result, _ = send(image, "calc", "double", 2)
    assert result.ok and result.value == 5
    assert "Refused because: line 2" in writer.requests[1].messages[-1].content
    seen = counters(image)
    assert seen.get("guardian.rejected.import") == 1
    assert seen.get("methods.generated.rejected") == 1


REFUSED = [
    ("def double(self, n):\n    return n *\n", "syntax"),
    ("x = 1\n", "single-def"),
    ("def double(n, m):\n    return n\n", "self-param"),  # not the message's arity
    ("def halve(self, n):\n    return n / 2\n", "selector-name"),
    ("def double(self, n):\n    import os\n    return n\n", "import"),
    ("def double(self, n):\n    return n.__class__\n", "dunder"),
    ("def double(self, n):\n    return self._secret\n", "private-attribute"),
    ("def double(self, n):\n    return eval('n')\n", "forbidden-name"),
    ("def double(self, n):\n    return '{}'.format(n)\n", "forbidden-attribute"),
    ("def double(self, n):\n    return os.getcwd()\n", "unknown-name"),
    ("def double(self, n):\n    def inner():\n        return n\n    return inner()\n",
     "nested-definition"),
    ("def double(self, n):\n    with n:\n        return n\n", "with"),
    ("def double(self, n):\n    yield n\n", "yield"),
    ("def double(self, n):\n    global g\n    return n\n", "global"),
    ("def double(self, n):\n    try:\n        return n\n    except:\n        return 0\n",
     "bare-except"),
    ("@staticmethod\ndef double(self, n):\n    return n\n", "decorator"),
    ("def double(self, n):\n    self.items.append(n)\n    return n\n", "covenant"),
]


@pytest.mark.parametrize(("source", "rule"), REFUSED, ids=[rule for _s, rule in REFUSED])
def test_each_guardian_rule_refuses_and_leaves_the_image(
        image: Image, coder: list[ScriptedCoder], source: str, rule: str) -> None:
    setup(image)
    writer = use(coder, ScriptedCoder(source))
    with image.reading() as root:
        before = dict(root["actors"]["calc"]._slots)
    result, message_id = send(image, "calc", "double", 2)
    assert not result.ok and isinstance(result.error, NotLearned)
    assert wire.error_code_of(result.error) == wire.ErrorCode.DOES_NOT_UNDERSTAND
    attempts = image.config["learn.attempts"]
    assert len(writer.requests) == attempts == len(result.error.reasons)
    assert all(f"rule {rule!r}" in reason for reason in result.error.reasons)
    with image.reading() as root:
        assert dict(root["actors"]["calc"]._slots) == before
        refusal = root["actors"]["learner"].refusals[-1]
        assert (refusal["selector"], refusal["message"]) == ("double", message_id)
        assert refusal["reasons"] == result.error.reasons
    seen = counters(image)
    assert seen.get(f"guardian.rejected.{rule}", 0) >= attempts
    assert seen.get("methods.generated.rejected") == attempts
    assert "methods.generated.accepted" not in seen


def test_an_exception_after_the_install_dooms_both(image: Image,
                                                   coder: list[ScriptedCoder]) -> None:
    setup(image)
    use(coder, ScriptedCoder("def explode(self):\n    return 1 / 0\n"))
    result, _ = send(image, "calc", "explode")
    assert not result.ok and isinstance(result.error, StepFailed)
    assert "ZeroDivisionError" in result.error.cause
    with image.reading() as root:
        assert not root["actors"]["calc"].has_slot("explode")
    assert "methods.generated.accepted" not in counters(image)


@pytest.mark.parametrize(("generative", "selector"), [
    (False, "double"), (True, "_double"), (True, "clone"), (True, "not-an-identifier"),
])
def test_unlearnable_messages_are_unknown_selectors_as_before(
        image: Image, coder: list[ScriptedCoder], generative: bool, selector: str) -> None:
    setup(image, generative=generative)
    writer = use(coder, ScriptedCoder(DOUBLE))
    result, _ = send(image, "calc", selector, 2)
    assert not result.ok and type(result.error) is UnknownSelector
    assert wire.error_code_of(result.error) == wire.ErrorCode.UNKNOWN_SELECTOR
    assert writer.requests == []


def test_a_generative_prototype_learns_for_all_its_children(
        image: Image, coder: list[ScriptedCoder]) -> None:
    setup(image)
    writer = use(coder, ScriptedCoder(TRIPLE))
    first, _ = send(image, "calc1", "triple", 2)
    second, _ = send(image, "calc2", "triple", 5)
    assert (first.value, second.value) == (6, 15) and len(writer.requests) == 1
    with image.reading() as root:
        assert root["prototypes"]["calculator"].get_slot("triple").source == TRIPLE
        assert not root["actors"]["calc1"].has_slot("triple")


def test_concurrent_learns_of_one_selector_install_one_method(
        image: Image, coder: list[ScriptedCoder]) -> None:
    setup(image)
    writer = use(coder, ScriptedCoder(TRIPLE, barrier=threading.Barrier(2)))
    results: dict[str, StepResult] = {}

    def learn(actor: str, n: int) -> None:
        results[actor], _ = send(image, actor, "triple", n)

    threads = [threading.Thread(target=learn, args=(name, n))
               for name, n in (("calc1", 2), ("calc2", 5))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (results["calc1"].value, results["calc2"].value) == (6, 15)
    assert len(writer.requests) == 2  # both wrote; the later commit conflicted and retried
    assert sorted(r.attempts for r in results.values()) == [1, 2]
    with image.reading() as root:
        proto = root["prototypes"]["calculator"]
        assert [n for n in proto.slot_names() if n == "triple"] == ["triple"]
    assert counters(image).get("methods.generated.accepted") == 1


@pytest.mark.parametrize(("reply", "expected"), [
    ("```python\ndef f(self):\n    return 1\n```", "def f(self):\n    return 1\n"),
    ("def f(self):\n    return 1\nprint(f(None))", "def f(self):\n    return 1\n"),
    ("Sure!\n    def f(self, x):\n        return x\n\nDone.", "def f(self, x):\n    return x\n"),
    ("```\nimport math\ndef f(self):\n    return math.pi\n```",
     "def f(self):\n    return math.pi\n"),
])
def test_the_method_is_taken_out_of_the_reply(reply: str, expected: str) -> None:
    assert extract_source(reply, "f") == expected
