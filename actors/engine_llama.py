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
- `generate` fits and tokenizes the request in the caller's thread and hands
  it to the decoding thread (`actors.llama_batch`), which evaluates the
  prompt in its own sequence of the KV cache, in batches of `N_BATCH`, then
  decodes one token per step, together with the other passes of the same
  persona running at the time: greedy (argmax) at temperature 0, else
  temperature with top-p `TOP_P`, drawn with torch's global generator so
  `torch.manual_seed` seeds both engines.
- `mean_logprob` is the mean log-softmax of the raw logits at each chosen
  token, as in the torch engine.
- Stop strings, streaming and cancellation reuse the torch engine's pieces:
  `_TextPieces` streams word-sized pieces that never include a stop string,
  the decoded tail is checked for a stop string after each token, and the
  cancel event is checked before each token.
- Personas are GGUF LoRA adapters (`actors.llama_personas`): llama.cpp
  switches adapters between batches, and a finished pass's sequence is
  removed from the KV cache, so no state of the previous adapter leaks into
  the next pass. With no adapter set the
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
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp import _internals as llama_internals

from actors import llm
from actors.context_fit import Fit, fit_request
from actors.engine import _load_embedder
from actors.engine_base import EngineBase, stop_events
from actors.llama_batch import BatchDecoder, DecodeFailed, Job, logprob_of
from actors.models import ModelError, UnknownModel, materialize

log = logging.getLogger(__name__)

N_CTX = 8192  # each sequence's context: SmolLM2's trained one (KV ~190 MB at float16)
N_BATCH = 512
SEQUENCES = 4  # passes decoded together (`actors.llama_batch`), each with its own KV cache
LOADER_CTX = 64  # the binding's own context, used for nothing but loading
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


class LlamaEngine(EngineBase):
    """One GGUF model served by llama.cpp (and optionally one sentence embedder)."""

    backend = "llama"
    device = "cpu"

    def __init__(self, llama: Any, embedder: Any = None, *, threads: int,
                 gguf_path: Path | None = None, sequences: int = SEQUENCES,
                 n_ctx: int = N_CTX) -> None:
        super().__init__(embedder)
        self.llama = llama
        self.threads = threads
        self.gguf_path = gguf_path
        self.vocab = _Vocab(llama)
        self._context = _batched_context(llama, threads, sequences, n_ctx)
        self.ctx = self._context.ctx
        self._llama_vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._llama_vocab))
        self._template = _compile_template(llama.metadata.get(TEMPLATE_KEY, ""))
        self.sequences = sequences
        self.decoder = BatchDecoder(self, self.ctx, sequences, N_BATCH)

    def running_passes(self) -> list[dict[str, Any]]:
        """The passes generating now, with their tokens and decode rate so far."""
        return self.decoder.snapshot()

    def close(self) -> None:
        """Stop decoding (waiting passes fail with `EngineClosed`) and free the context."""
        self.decoder.close()
        self._context.close()

    @classmethod
    def load(cls, gguf_path: Path | str, embedding_dir: Path | str | None = None, *,
             threads: int, n_ctx: int = N_CTX) -> LlamaEngine:
        """Load the GGUF at `gguf_path` (and the embedder) with `threads` compute threads."""
        path = Path(gguf_path)
        if not path.is_file():
            raise LlamaLoadError(str(path), "no such file")
        try:
            llama = llama_cpp.Llama(model_path=str(path), n_ctx=LOADER_CTX,
                                    n_batch=LOADER_CTX, n_threads=threads,
                                    n_threads_batch=threads, verbose=False)
        except (ValueError, RuntimeError) as exc:  # the binding's "failed to load"
            raise LlamaLoadError(str(path), str(exc)) from exc
        embedder = _load_embedder(Path(embedding_dir), "cpu") if embedding_dir else None
        return cls(llama, embedder, threads=threads, gguf_path=path, n_ctx=n_ctx)

    def attach_steward(self, image: Any) -> Any:
        """Serve personas from the image's adapters as GGUF LoRA (`actors.llama_personas`)."""
        from actors import llama_personas

        self.steward = llama_personas.attach(image, self)
        return self.steward

    # -- generation ----------------------------------------------------------
    def prompt(self, request: llm.GenerationRequest) -> str:
        """The templated prompt text for `request` (ends with the assistant header)."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return self._template.render(messages=messages, add_generation_prompt=True)

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        """Generate a reply to `request`, streaming pieces to `on_text` as they come.

        Like the torch engine, it stops at `cancel` or the process's stop
        (`kernel.stopping`), and fits the request to the context window first.
        Concurrent calls of one persona decode together (`actors.llama_batch`);
        `on_text` is called in the calling thread."""
        started = time.perf_counter()
        self.decoder.check_open()  # before the context is read: a closed one is freed
        fit = self.fit(request)
        ids = self.llama.tokenize(self.prompt(fit.request).encode("utf-8"), add_bos=False,
                                  special=True)
        limit = self.context_window
        if len(ids) >= limit:
            raise PromptTooLong(len(ids), limit)
        job = Job(fit.request, ids, stop_events(cancel), on_text is not None, started,
                  {**{k: float(v) for k, v in fit.report().items()},
                   "prompt_tokens": float(len(ids))})
        job.budget = min(fit.request.max_new_tokens, limit - len(ids))
        self.decoder.submit(job)
        return self.decoder.wait(job, on_text)

    def continuation_logprobs(self, messages: Sequence[llm.ChatMessage],
                              continuations: Sequence[str],
                              persona: str | None = None) -> list[llm.Continuation]:
        """How likely the model finds each continuation as the start of its reply.

        The prompt (`messages`, templated, ending with the assistant header) is
        evaluated once; each continuation's tokens are then scored one by one
        and dropped from the KV cache again (`llama_memory_seq_rm`). It runs on the
        decoding thread between batches (`BatchDecoder.call`)."""
        request = llm.GenerationRequest(messages=tuple(messages), temperature=0.0,
                                        max_new_tokens=1, persona=persona)
        ids = self.llama.tokenize(self.prompt(request).encode("utf-8"), add_bos=False,
                                  special=True)

        def score() -> list[llm.Continuation]:  # on the decoding thread, alone
            self.activate(persona)
            self._prefill(ids)
            first = self.logits()
            return [self._score_after(first, len(ids), text) for text in continuations]

        return self.decoder.call(score)

    def _score_after(self, first: np.ndarray, kept: int, text: str) -> llm.Continuation:
        tokens = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        total, logits = 0.0, first
        for index, token in enumerate(tokens):
            total += logprob_of(logits, token)
            if index + 1 < len(tokens):
                self.decode([token])
                logits = self.logits()
        if len(tokens) > 1:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(self.ctx), 0, kept, -1)
        return llm.Continuation(text, total, len(tokens))

    @property
    def context_window(self) -> int:
        """Tokens the context holds (prompt + answer)."""
        return int(llama_cpp.llama_n_ctx_seq(self.ctx))

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

    # -- one bare sequence, for benchmarks and tests (never while passes are running) -----
    def _prefill(self, ids: Sequence[int]) -> None:
        """Clear the KV cache and evaluate the prompt, in batches of `N_BATCH`."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), False)
        for start in range(0, len(ids), N_BATCH):
            self.decode(ids[start:start + N_BATCH])

    def decode(self, ids: Sequence[int]) -> None:
        """Evaluate `ids` after what the KV cache holds; the last one's logits come next."""
        array = (llama_cpp.llama_token * len(ids))(*ids)
        code = int(llama_cpp.llama_decode(self.ctx, llama_cpp.llama_batch_get_one(
            array, len(ids))))
        if code != 0:
            raise DecodeFailed(code)

    def logits(self) -> np.ndarray:
        """The raw logits after the last evaluated token (a copy)."""
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        floats = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(floats, shape=(self.n_vocab,)).copy()

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._llama_vocab, token))

def _batched_context(llama: Any, threads: int, sequences: int, n_ctx: int) -> Any:
    """A context of `sequences` sequences of `n_ctx` tokens each, on `llama`'s model.

    Non-unified KV cache: each sequence attends over its own cells only, so
    its arithmetic does not depend on what decodes beside it. Freed with
    the model (the binding's `LlamaContext`)."""
    params = type(llama.context_params).from_buffer_copy(llama.context_params)
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx * sequences, N_BATCH, N_BATCH
    params.n_seq_max, params.kv_unified = sequences, False
    params.n_threads = params.n_threads_batch = threads
    try:
        return llama_internals.LlamaContext(model=llama._model, params=params, verbose=False)
    except ValueError as exc:  # the binding's "failed to create llama_context"
        raise LlamaLoadError("context", str(exc)) from exc


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
