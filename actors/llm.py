"""What the cognitive actors need from a language model, and where they find it.

The pipeline's actors never import transformers: they ask `generator()` for
the process's `Generator` and `embedder()` for its `Embedder`. The engine
(real transformers + peft) registers itself with `install_engine`; unit tests
register a scripted double. Both live in process-level registries, never in
the image: a loaded model is volatile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from prototypes.errors import BatosError


class EngineError(BatosError):
    """Root of the engine's errors."""


class NoEngine(EngineError):
    """No generator/embedder is installed in this process."""

    def __init__(self, what: str) -> None:
        super().__init__(f"no {what} is installed in this process (is the model loaded?)")
        self.what = what


class Cancelled(EngineError):
    """Generation stopped because its cancel event was set."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn: role is 'system', 'user' or 'assistant'."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One pass's call: a clean system+user pair, sampling and budget."""

    messages: tuple[ChatMessage, ...]
    temperature: float
    max_new_tokens: int
    persona: str | None = None  # the LoRA adapter to wear, None for the bare model
    stop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Generation:
    """What came out: the text, its token count and mean token log-probability."""

    text: str
    tokens: int
    mean_logprob: float
    seconds: float
    persona: str | None = None
    stopped_by: str = "length"  # "eos", "stop", "length" or "cancel"
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Continuation:
    """How likely a text is as the start of the model's reply: the sum of its
    tokens' log-probabilities and their count (`Scorer` engines)."""

    text: str
    logprob: float
    tokens: int

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.tokens if self.tokens else 0.0


class TextPiece(str):
    """A piece of streamed text that knows how many generated tokens it took.

    Engines hand `on_text` these; a consumer that wants only the text uses it
    as the `str` it is. The tokens of a generation are counted once: the
    pieces' `tokens` add up to `Generation.tokens`. So the last piece may be
    empty: it carries the tokens that added no text (the end-of-generation
    token, a stop string that was cut away)."""

    tokens: int

    def __new__(cls, text: str, tokens: int) -> TextPiece:
        piece = super().__new__(cls, text)
        piece.tokens = tokens
        return piece


def piece_tokens(text: str) -> int | None:
    """The tokens a streamed piece took, or None when its generator did not count them."""
    return text.tokens if isinstance(text, TextPiece) else None


OnText = Callable[[str], None]  # called with `TextPiece`s by the engines


class Generator(Protocol):
    """Text generation for the pipeline's passes."""

    def generate(self, request: GenerationRequest, *, on_text: OnText | None = None,
                 cancel: threading.Event | None = None) -> Generation: ...


class Scorer(Protocol):
    """Engines that can say how likely given texts are as a reply (optional capability:
    the pipeline's confidence uses it where the installed generator has it)."""

    def continuation_logprobs(self, messages: Sequence[ChatMessage],
                              continuations: Sequence[str],
                              persona: str | None = None) -> list[Continuation]: ...


class Embedder(Protocol):
    """Sentence embeddings (unit-normalised) for memory and scoring."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


_lock = threading.Lock()
_generator: Generator | None = None
_embedder: Embedder | None = None


def install_engine(generator: Generator | None, embedder: Embedder | None) -> None:
    """Register this process's generator and embedder (None clears one)."""
    global _generator, _embedder
    with _lock:
        _generator, _embedder = generator, embedder


def generator() -> Generator:
    if _generator is None:
        raise NoEngine("generator")
    return _generator


def embedder() -> Embedder:
    if _embedder is None:
        raise NoEngine("embedder")
    return _embedder
