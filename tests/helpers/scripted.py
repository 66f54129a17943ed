"""A scripted language model for pipeline tests: no weights, fully deterministic.

`ScriptedModel` is both a `Generator` and an `Embedder`:
- `generate` answers from a script per persona (a list is played in order, its
  last entry repeating; a callable gets the request), streams the text word by
  word through `on_text`, and records every `GenerationRequest` it received;
  a persona in `failing` raises `ScriptedFailure` instead.
- `embed` is a hashed bag of words (sha256 of each lower-cased word picks one
  of `DIMENSIONS` buckets), unit-normalised, so texts sharing words are
  similar and identical texts have similarity 1.0; `fail_embedding(texts)`
  returning True makes it raise.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from actors.llm import EngineError, Generation, GenerationRequest, OnText, TextPiece

DIMENSIONS = 1024
_WORD = re.compile(r"[a-z0-9]+")

Script = Sequence[str] | Callable[[GenerationRequest], str]

ROUTE_JSON = '{"needs_rag": false, "rag_query": "", "needs_code": false, "code": ""}'
DRAFT = "Paris is the capital. DRAFT-TEXT"
CRITIQUE = "Verdict: revise\n- say more about the city. CRITIQUE-TEXT"
ANSWER = "The capital of France is Paris, a city on the Seine."
BAD_ANSWER = "Bananas grow in warm places."


class ScriptedFailure(EngineError):
    """The failure a scripted persona was told to raise."""


def default_scripts() -> dict[str, Script]:
    return {"router": [ROUTE_JSON], "drafter": [DRAFT], "critic": [CRITIQUE],
            "synthesizer": [ANSWER]}


@dataclass
class ScriptedModel:
    """See the module docstring. `logprobs`: mean log-probability per persona."""

    scripts: dict[str, Script] = field(default_factory=default_scripts)
    logprobs: Mapping[str, float | Sequence[float]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    fail_embedding: Callable[[Sequence[str]], bool] | None = None
    requests: list[GenerationRequest] = field(default_factory=list)
    embedded: list[list[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def generate(self, request: GenerationRequest, *, on_text: OnText | None = None,
                 cancel: threading.Event | None = None) -> Generation:
        persona = request.persona or ""
        with self._lock:
            self.requests.append(request)
            count = len(self.requests_for(persona))
        if persona in self.failing:
            raise ScriptedFailure(f"scripted failure of {persona}")
        text = self._text(persona, request, count)
        for piece in re.findall(r"\S+\s*", text):
            if on_text is not None:
                on_text(TextPiece(piece, 1))  # one scripted token per word
        return Generation(text=text, tokens=len(text.split()),
                          mean_logprob=self._logprob(persona, count), seconds=0.001,
                          persona=persona, stopped_by="eos")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.embedded.append(list(texts))
        if self.fail_embedding is not None and self.fail_embedding(texts):
            raise ScriptedFailure("scripted failure of the embedder")
        return [bag_of_words(text) for text in texts]

    def requests_for(self, persona: str) -> list[GenerationRequest]:
        """The requests received for one persona, in order."""
        return [r for r in self.requests if r.persona == persona]

    def _text(self, persona: str, request: GenerationRequest, count: int) -> str:
        script = self.scripts.get(persona, ["(unscripted)"])
        if callable(script):
            return script(request)
        return script[min(count, len(script)) - 1]

    def _logprob(self, persona: str, count: int) -> float:
        value = self.logprobs.get(persona, -0.1)
        if isinstance(value, int | float):
            return float(value)
        return float(value[min(count, len(value)) - 1])


def bag_of_words(text: str) -> list[float]:
    """A unit vector of hashed word counts (all zeros for a text without words)."""
    vector = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[int.from_bytes(digest[:4], "big") % DIMENSIONS] += 1.0
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


@dataclass
class FixedSensor:
    """A thermal sensor that always reads `celsius` (None: no reading)."""

    celsius: float | None
    name: str = "fixed"

    def read(self) -> float | None:
        return self.celsius
