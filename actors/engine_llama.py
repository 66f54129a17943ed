"""The llama.cpp engine: the image's GGUF, decoded by llama.cpp, behind `actors.llm`.

Theory of operation
-------------------
`LlamaEngine` behaves as `actors.engine.Engine` does (the same tests run on
both, `tests/unit/test_engine.py`) and is faster on a CPU: llama.cpp decodes
the 4-bit GGUF that the image stores beside the base model
(`actors.gguf_base`) with its own kernels, in the engine's thread budget
(`actors.threads`; `n_threads` for decoding and for the prompt).

- The prompt is the GGUF's own chat template (`tokenizer.chat_template`)
  rendered as transformers renders it (a sandboxed jinja2 environment with
  `trim_blocks` and `lstrip_blocks`), so both engines send the same text.
- Each `generate` clears the KV cache, evaluates the prompt in batches of
  `N_BATCH`, then decodes one token at a time: greedy (argmax) at
  temperature 0, else temperature with top-p `TOP_P`, drawn with torch's
  global generator so `torch.manual_seed` seeds both engines.
- `mean_logprob` is the mean log-softmax of the raw logits at each chosen
  token, as in the torch engine.
- Stop strings, streaming and cancellation reuse the torch engine's pieces:
  `_TextPieces` streams word-sized pieces that never include a stop string,
  the decoded tail is checked for a stop string after each token, and the
  cancel event is checked before each token.
- Personas are GGUF LoRA adapters (`actors.llama_personas`): llama.cpp
  switches adapters per request, and the cleared KV cache means no state of
  the previous adapter leaks into the next pass. With no adapter set the
  logits are the base model's, exactly.

Embeddings come from the same sentence-transformers embedder as the torch
engine's (`actors.engine._load_embedder`), torch in the same thread budget.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment

from actors import llm
from actors.context_fit import Fit, fit_request
from actors.engine import (
    TOP_P,
    _cut_at_stop,
    _load_embedder,
    _TextPieces,
    nothing_to_generate,
    stop_events,
)
from actors.models import ModelError, UnknownModel, materialize

log = logging.getLogger(__name__)

N_CTX = 8192  # SmolLM2's trained context; the KV cache is ~190 MB at float16
N_BATCH = 512
CANDIDATE_FLOOR = 1e-6  # top-p looks at tokens this probable first (see `pick`)
TEMPLATE_KEY = "tokenizer.chat_template"


class LlamaLoadError(ModelError):
    """llama.cpp could not load a GGUF file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"llama.cpp cannot load {path}: {problem}")
        self.path = path
        self.problem = problem


class PromptTooLong(llm.EngineError):
    """The prompt alone fills the context window."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"the prompt is {tokens} tokens; the context holds {limit}")
        self.tokens = tokens
        self.limit = limit


class DecodeFailed(llm.EngineError):
    """llama_decode returned an error code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode failed with code {code}")
        self.code = code


class _Vocab:
    """The `decode` that `_TextPieces` calls, on llama.cpp's vocabulary.

    Streaming decodes the whole reply after every token, so each token's
    bytes are looked up in llama.cpp once and kept (special tokens: none).
    """

    def __init__(self, llama: Any) -> None:
        self._llama = llama
        self._bytes: dict[int, bytes] = {}

    def decode(self, ids: Sequence[int], **_options: Any) -> str:
        pieces = self._bytes
        for token in ids:
            if token not in pieces:
                pieces[token] = bytes(self._llama.detokenize([token], special=False))
        return b"".join([pieces[token] for token in ids]).decode("utf-8", errors="replace")


class LlamaEngine:
    """One GGUF model served by llama.cpp (and optionally one sentence embedder)."""

    backend = "llama"
    device = "cpu"

    def __init__(self, llama: Any, embedder: Any = None, *, threads: int,
                 gguf_path: Path | None = None) -> None:
        self.llama = llama
        self.embedder = embedder
        self.threads = threads
        self.gguf_path = gguf_path
        self.steward: Any = None  # actors.llama_personas.LlamaPersonas, by attach_steward
        self.vocab = _Vocab(llama)
        self._ctx = llama.ctx
        self._llama_vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._llama_vocab))
        self._template = _compile_template(llama.metadata.get(TEMPLATE_KEY, ""))
        self._generate_lock = threading.Lock()
        self._embed_lock = threading.Lock()

    @classmethod
    def load(cls, gguf_path: Path | str, embedding_dir: Path | str | None = None, *,
             threads: int, n_ctx: int = N_CTX) -> LlamaEngine:
        """Load the GGUF at `gguf_path` (and the embedder) with `threads` compute threads."""
        path = Path(gguf_path)
        if not path.is_file():
            raise LlamaLoadError(str(path), "no such file")
        try:
            llama = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=N_BATCH,
                                    n_threads=threads, n_threads_batch=threads,
                                    verbose=False)
        except (ValueError, RuntimeError) as exc:  # the binding's "failed to load"
            raise LlamaLoadError(str(path), str(exc)) from exc
        embedder = _load_embedder(Path(embedding_dir), "cpu") if embedding_dir else None
        return cls(llama, embedder, threads=threads, gguf_path=path)

    def install(self) -> None:
        """Register this engine as the process's generator and embedder."""
        llm.install_engine(self, self if self.embedder is not None else None)

    def attach_steward(self, image: Any) -> Any:
        """Serve personas from the image's adapters as GGUF LoRA (`actors.llama_personas`)."""
        from actors import llama_personas

        self.steward = llama_personas.attach(image, self)
        return self.steward

    def activate(self, persona: str | None) -> str | None:
        """Wear `persona`'s adapter (inside the generate lock); None: the bare model."""
        if self.steward is None:
            return None
        worn: str | None = self.steward.activate(persona)
        return worn

    # -- generation ----------------------------------------------------------
    def prompt(self, request: llm.GenerationRequest) -> str:
        """The templated prompt text for `request` (ends with the assistant header)."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return self._template.render(messages=messages, add_generation_prompt=True)

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        """Generate a reply to `request`, streaming pieces to `on_text` as they come.

        Like the torch engine, it stops at `cancel` or the process's stop
        (`kernel.stopping`), and fits the request to the context window first."""
        cancels = stop_events(cancel)
        with self._generate_lock:
            started = time.perf_counter()
            persona = self.activate(request.persona)
            empty = nothing_to_generate(request, cancels, persona)
            if empty is not None:
                return empty
            return self._generate(request, on_text, cancels, started, persona)

    def continuation_logprobs(self, messages: Sequence[llm.ChatMessage],
                              continuations: Sequence[str],
                              persona: str | None = None) -> list[llm.Continuation]:
        """How likely the model finds each continuation as the start of its reply.

        The prompt (`messages`, templated, ending with the assistant header) is
        evaluated once; each continuation's tokens are then scored one by one
        and dropped from the KV cache again (`llama_memory_seq_rm`)."""
        request = llm.GenerationRequest(messages=tuple(messages), temperature=0.0,
                                        max_new_tokens=1, persona=persona)
        with self._generate_lock:
            self.activate(persona)
            ids = self.llama.tokenize(self.prompt(request).encode("utf-8"), add_bos=False,
                                      special=True)
            self._prefill(ids)
            first = self.logits()
            return [self._score_after(first, len(ids), text) for text in continuations]

    def _score_after(self, first: np.ndarray, kept: int, text: str) -> llm.Continuation:
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        total, logits = 0.0, first
        for index, token in enumerate(tokens):
            total += logprob_of(logits, token)
            if index + 1 < len(tokens):
                self.decode([token])
                logits = self.logits()
        if len(tokens) > 1:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self._ctx), 0, kept, -1)
        return llm.Continuation(text, total, len(tokens))

    @property
    def context_window(self) -> int:
        """Tokens the context holds (prompt + answer)."""
        return int(llama_cpp.llama_n_ctx(self._ctx))

    def _count(self, request: llm.GenerationRequest) -> int:
        return len(self.llama.tokenize(self.prompt(request).encode("utf-8"), add_bos=False,
                                       special=True))

    def fit(self, request: llm.GenerationRequest) -> Fit:
        """`request` cut to the context window (see `actors.context_fit`)."""
        return fit_request(
            request, self.context_window, count=self._count,
            tokens=lambda text: self.llama.tokenize(text.encode("utf-8"), add_bos=False,
                                                    special=False),
            text=lambda ids: self.vocab.decode(list(ids)))

    def _generate(self, request: llm.GenerationRequest, on_text: llm.OnText | None,
                  cancels: tuple[threading.Event, ...], started: float,
                  persona: str | None) -> llm.Generation:
        fit = self.fit(request)
        request = fit.request
        ids = self.llama.tokenize(self.prompt(request).encode("utf-8"), add_bos=False,
                                  special=True)
        limit = self.context_window
        if len(ids) >= limit:
            raise PromptTooLong(len(ids), limit)
        self._prefill(ids)
        prefilled = time.perf_counter()
        pieces = _TextPieces(self.vocab, request.stop, on_text) if on_text else None
        if pieces is not None:
            pieces.put(torch.tensor(ids))  # as generate() does: the prompt first
        loop = _DecodeLoop(self, request, cancels, pieces, len(ids))
        loop.run(min(request.max_new_tokens, limit - len(ids)))
        text = _cut_at_stop(self.vocab.decode(loop.new), request.stop)
        if pieces is not None:
            pieces.finish(text)
        done = time.perf_counter()
        decode_s = done - prefilled
        return llm.Generation(
            text=text, tokens=len(loop.new), mean_logprob=loop.mean_logprob(),
            seconds=done - started, persona=persona, stopped_by=loop.reason or "length",
            extra={**{k: float(v) for k, v in fit.report().items()},
                   "prompt_tokens": float(len(ids)), "prefill_seconds": prefilled - started,
                   "tokens_per_second": len(loop.new) / decode_s if decode_s > 0 else 0.0})

    def _prefill(self, ids: Sequence[int]) -> None:
        """Clear the KV cache and evaluate the prompt, in batches of `N_BATCH`."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        for start in range(0, len(ids), N_BATCH):
            self.decode(ids[start:start + N_BATCH])

    def decode(self, ids: Sequence[int]) -> None:
        """Evaluate `ids` after what the KV cache holds; the last one's logits come next."""
        array = (llama_cpp.llama_token * len(ids))(*ids)
        code = int(llama_cpp.llama_decode(self._ctx, llama_cpp.llama_batch_get_one(
            array, len(ids))))
        if code != 0:
            raise DecodeFailed(code)

    def logits(self) -> np.ndarray:
        """The raw logits after the last evaluated token (a copy)."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, -1)
        floats = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(floats, shape=(self._n_vocab,)).copy()

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._llama_vocab, token))

    # -- embeddings ----------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-normalised sentence embeddings, one list of floats per text."""
        if self.embedder is None:
            raise llm.NoEngine("embedder")
        if not texts:
            return []
        with self._embed_lock, torch.inference_mode():
            vectors = self.embedder.encode(list(texts), normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors]


class _DecodeLoop:
    """One generation's token loop: pick, record, stream, stop or cancel, evaluate."""

    def __init__(self, engine: LlamaEngine, request: llm.GenerationRequest,
                 cancels: tuple[threading.Event, ...], pieces: _TextPieces | None,
                 prompt_tokens: int) -> None:
        self.engine, self.request, self.cancels, self.pieces = engine, request, cancels, pieces
        self.new: list[int] = []
        self.logprobs: list[float] = []
        self.reason: str | None = None
        self._stop = [s for s in request.stop if s]
        self._window = max((len(s) for s in self._stop), default=0) + 8

    def run(self, budget: int) -> None:
        while len(self.new) < budget:
            if any(event.is_set() for event in self.cancels):
                self.reason = "cancel"
                return
            logits = self.engine.logits()
            token = pick(logits, self.request.temperature)
            self.new.append(token)
            self.logprobs.append(logprob_of(logits, token))
            if self.engine.is_end(token):
                self.reason = "eos"
                return
            if self.pieces is not None:
                self.pieces.put(torch.tensor([token]))
            if self._stop and self._stop_in_tail():
                self.reason = "stop"
                return
            if len(self.new) < budget:
                self.engine.decode([token])

    def _stop_in_tail(self) -> bool:
        tail = self.engine.vocab.decode(self.new[-self._window:])
        return any(s in tail for s in self._stop)

    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


def pick(logits: np.ndarray, temperature: float) -> int:
    """Greedy at temperature 0; else temperature and top-p, drawn with torch's generator.

    Top-p keeps the best tokens until their mass reaches `TOP_P`. Sorting the
    whole vocabulary for it cost milliseconds a token; the tokens of
    probability at least `CANDIDATE_FLOOR` outrank every other, so when their
    mass reaches `TOP_P` the set is among them, sorted alone; otherwise the
    whole vocabulary is sorted. The same set either way.
    """
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    order = np.flatnonzero(probs >= CANDIDATE_FLOOR)
    if probs[order].sum() < TOP_P:
        order = np.arange(probs.size)
    order = order[np.argsort(-probs[order])]
    mass = np.cumsum(probs[order])
    kept = int(np.searchsorted(mass, TOP_P)) + 1  # the best tokens up to TOP_P's mass
    draw = float(torch.rand((), dtype=torch.float64)) * float(mass[kept - 1])
    return int(order[min(int(np.searchsorted(mass[:kept], draw, side="right")), kept - 1)])


def logprob_of(logits: np.ndarray, token: int) -> float:
    """log-softmax of the raw logits at `token`."""
    peak = float(logits.max())
    total = float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))
    return float(logits[token]) - peak - total


def _compile_template(source: str) -> Any:
    """The chat template as transformers compiles it (sandboxed, trimmed blocks)."""
    if not source:
        raise LlamaLoadError("GGUF", f"no {TEMPLATE_KEY} in its metadata")
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(source)


def load_from_image(image: Any, gguf: Path, *, threads: int,
                    embedding: str | None = "embedding") -> LlamaEngine:
    """Load the image's GGUF (and its `embedding` model) for llama.cpp."""
    embedding_dir = None
    if embedding is not None:
        with image.reading() as root:
            if embedding not in root["models"]:
                raise UnknownModel(embedding)
            embedding_dir = materialize(root["models"][embedding])
    return LlamaEngine.load(gguf, embedding_dir, threads=threads)
