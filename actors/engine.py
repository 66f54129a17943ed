"""The engine: the process's one base model and embedder, behind `actors.llm`'s protocols.

Theory of operation
-------------------
`Engine.load` reads a transformers directory (usually `models.materialize`'s
symlinks into the image's blobs) with one code path for every device; only
the keyword arguments differ (`load_kwargs`): on CUDA the weights are
quantized to 4-bit NF4 by bitsandbytes and placed by `device_map="auto"`
within `max_memory`, on CPU they load unquantized.

`generate` serializes calls on a lock (one model per process; concurrent
steps wait their turn), applies the chat template to the request's messages,
and runs `model.generate` with two hooks called in the generating thread: a
streamer that hands `on_text` word-sized pieces of decoded text, and a
stopping criterion that ends generation on a stop string, the request's
cancel event or the process's stop (`kernel.stopping.STOPPING`, set while
the kernel stops). Before encoding, the request is fitted to the context
window (`actors.context_fit`); what was cut is in `Generation.extra`. The
returned text is the decoded tokens cut before the first stop string; the
streamed pieces always concatenate to exactly that text.

`Generation.mean_logprob` is the mean log-probability of the generated tokens
under the model's *raw* distribution (log-softmax of the logits before
temperature or top-p), so a confidence read from it means the same at every
temperature.

Personas (LoRA adapters): `activate` (`actors.engine_base.EngineBase`)
hands the request's persona to the attached `actors.vram_steward.VramSteward`,
inside the generate lock; without one every request runs on the bare model.
"""

from __future__ import annotations

import os

# Nothing is fetched from a hub; set before transformers and huggingface_hub
# read them at import (actors.models sets the same defaults).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy
import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BitsAndBytesConfig,
    StoppingCriteria,
    StoppingCriteriaList,
)

from actors import llm
from actors.context_fit import Fit, fit_request
from actors.engine_base import (  # re-exported: the llama.cpp engine and tests use them
    DECODE,
    TOP_P,
    EngineBase,
    _cut_at_stop,
    _TextPieces,
    nothing_to_generate,
    stop_events,
)
from actors.models import ModelError, UnknownModel, materialize

log = logging.getLogger(__name__)

# CPU weights load as float32 whatever their stored dtype. Measured on SmolLM2
# (2-core AVX-512 Xeon, 1 thread, 64 greedy tokens): ~9-10 tokens/s either
# way, bfloat16 within noise; but CPUs without AVX-512 run bfloat16 matmuls
# far slower, and float32 keeps the log-probabilities exact.
CPU_DTYPE = torch.float32
CUDA_DTYPE = torch.bfloat16


class ModelLoadError(ModelError):
    """transformers could not load the model in a directory."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"cannot load model from {path}: {problem}")
        self.path = path
        self.problem = problem


def pick_device() -> str:
    """'cuda' when a GPU is usable, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_kwargs(device: str, budget_bytes: int | None, has_bnb: bool, *,
                cpu_bytes: int | None = None) -> dict[str, Any]:
    """`from_pretrained` keyword arguments for `device` (pure: touches no device).

    CPU: unquantized float32. CUDA: 4-bit NF4 with bfloat16 compute when
    bitsandbytes is installed (else bfloat16 weights), `device_map="auto"`,
    and with a budget `max_memory` = {gpu: budget_bytes, "cpu": cpu_bytes}.
    transformers hands `device_map="auto"` the model's `_no_split_modules`
    (e.g. LlamaDecoderLayer) as accelerate's `no_split_module_classes`, so a
    decoder layer is never split across devices.
    """
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return {"dtype": CPU_DTYPE}
    kwargs: dict[str, Any] = {"dtype": CUDA_DTYPE, "device_map": "auto"}
    if has_bnb:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=CUDA_DTYPE,
            llm_int8_enable_fp32_cpu_offload=bool(budget_bytes and cpu_bytes))
    if budget_bytes is not None:
        max_memory: dict[int | str, int] = {int(index or 0): int(budget_bytes)}
        if cpu_bytes:
            max_memory["cpu"] = int(cpu_bytes)
        kwargs["max_memory"] = max_memory
    return kwargs


class Engine(EngineBase):
    """One causal LM (and optionally one sentence embedder) serving this process."""

    def __init__(self, model: Any, tokenizer: Any, embedder: Any = None, *,
                 device: str = "cpu", base_dir: Path | None = None) -> None:
        super().__init__(embedder)
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.base_dir = base_dir
        self._generate_lock = threading.Lock()

    # -- loading -------------------------------------------------------------
    @classmethod
    def load(cls, base_dir: Path | str, embedding_dir: Path | str | None = None, *,
             device: str | None = None, budget_bytes: int | None = None) -> Engine:
        """Load the base model (and embedder) from transformers directories."""
        device = device or pick_device()
        has_bnb = importlib.util.find_spec("bitsandbytes") is not None
        kwargs = load_kwargs(device, budget_bytes, has_bnb,
                             cpu_bytes=_usable_ram() if budget_bytes else None)
        model, tokenizer = _load_causal_lm(Path(base_dir), device, kwargs)
        embedder = _load_embedder(Path(embedding_dir), device) if embedding_dir else None
        return cls(model, tokenizer, embedder, device=device, base_dir=Path(base_dir))

    # -- generation ----------------------------------------------------------
    def prompt(self, request: llm.GenerationRequest) -> str:
        """The templated prompt text for `request` (ends with the assistant header)."""
        return str(self.tokenizer.apply_chat_template(
            _chat(request), add_generation_prompt=True, tokenize=False))

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        """Generate a reply to `request`, streaming pieces to `on_text` as they come."""
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
        """How likely each text is as the start of the reply (`actors.continuations`)."""
        from actors import continuations as scoring

        return scoring.score(self, messages, continuations, persona)

    @property
    def context_window(self) -> int:
        """Tokens the model attends to at once (prompt + answer)."""
        window = getattr(self.model.config, "max_position_embeddings", None)
        return int(window or self.tokenizer.model_max_length)

    def fit(self, request: llm.GenerationRequest) -> Fit:
        """`request` cut to the context window (see `actors.context_fit`)."""
        return fit_request(
            request, self.context_window,
            count=lambda r: len(self.tokenizer.apply_chat_template(
                _chat(r), add_generation_prompt=True, return_dict=True)["input_ids"]),
            tokens=lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"],
            text=lambda ids: self.tokenizer.decode(ids, **DECODE))

    def _generate(self, request: llm.GenerationRequest, on_text: llm.OnText | None,
                  cancel: Sequence[threading.Event], started: float,
                  persona: str | None) -> llm.Generation:
        fit = self.fit(request)
        request = fit.request
        inputs = self._encode(request)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        watch = _StopWatch(self.tokenizer, prompt_tokens, request.stop, cancel)
        pieces = _TextPieces(self.tokenizer, request.stop, on_text) if on_text else None
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, generation_config=self._generation_config(request),
                stopping_criteria=StoppingCriteriaList([watch]), streamer=pieces)
        new_ids = out.sequences[0, prompt_tokens:]
        text = _cut_at_stop(self.tokenizer.decode(new_ids, **DECODE), request.stop)
        if pieces is not None:
            pieces.finish(text, len(new_ids))
        seconds = time.perf_counter() - started
        return llm.Generation(
            text=text, tokens=len(new_ids), mean_logprob=_mean_logprob(out.logits, new_ids),
            seconds=seconds, persona=persona,
            stopped_by=watch.reason or self._natural_end(new_ids),
            extra={**{k: float(v) for k, v in fit.report().items()},
                   "prompt_tokens": float(prompt_tokens),
                   "tokens_per_second": len(new_ids) / seconds if seconds > 0 else 0.0})

    def _encode(self, request: llm.GenerationRequest) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer.apply_chat_template(
            _chat(request), add_generation_prompt=True, return_dict=True, return_tensors="pt")
        target = self.model.device
        return {key: encoded[key].to(target) for key in ("input_ids", "attention_mask")}

    def _generation_config(self, request: llm.GenerationRequest) -> Any:
        config = copy.deepcopy(self.model.generation_config)
        sampling = request.temperature > 0
        config.update(
            max_new_tokens=request.max_new_tokens, do_sample=sampling,
            temperature=request.temperature if sampling else None,
            top_p=TOP_P if sampling else None, top_k=None,
            output_logits=True, return_dict_in_generate=True,
            pad_token_id=_pad_token_id(self.tokenizer, config))
        return config

    def _natural_end(self, new_ids: torch.Tensor) -> str:
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        return "eos" if len(new_ids) and int(new_ids[-1]) in eos_ids else "length"

def load_from_image(image: Any, *, base: str = "base", embedding: str | None = "embedding",
                    device: str | None = None, budget_bytes: int | None = None) -> Engine:
    """Load the image's `base` model (and `embedding` model) in place from their blobs."""
    with image.reading() as root:
        models = root["models"]
        for name in (base, embedding):
            if name is not None and name not in models:
                raise UnknownModel(name)
        base_dir = materialize(models[base])
        embedding_dir = materialize(models[embedding]) if embedding is not None else None
    return Engine.load(base_dir, embedding_dir, device=device, budget_bytes=budget_bytes)


# -- loading helpers -----------------------------------------------------------


def _load_causal_lm(directory: Path, device: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    model: Any
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True,
                                                     **kwargs)
    except Exception as exc:  # transformers raises many kinds; all mean "cannot load"
        raise ModelLoadError(str(directory), str(exc)) from exc
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    return model, tokenizer


def _load_embedder(directory: Path, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(str(directory), device=device, local_files_only=True)
    except Exception as exc:  # as above: any failure means the directory is unusable
        raise ModelLoadError(str(directory), str(exc)) from exc


def _usable_ram() -> int:
    """Physical memory minus a quarter kept for everything else: the CPU offload budget."""
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 3 // 4)


def _chat(request: llm.GenerationRequest) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.content} for m in request.messages]


def _pad_token_id(tokenizer: Any, config: Any) -> int | None:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    eos = config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


# -- generation hooks ----------------------------------------------------------


def _mean_logprob(logits: Sequence[torch.Tensor] | None, new_ids: torch.Tensor) -> float:
    """Mean log-softmax of the raw logits at each chosen token (0.0 for no tokens)."""
    if not logits or len(new_ids) == 0:
        return 0.0
    total = 0.0
    for step, token in zip(logits, new_ids.tolist(), strict=False):
        total += float(torch.log_softmax(step[0].float(), dim=-1)[token])
    return total / min(len(logits), len(new_ids))


class _StopWatch(StoppingCriteria):
    """Ends generation on a cancel event (the request's or the process's stop) or a
    stop string in the decoded tail."""

    def __init__(self, tokenizer: Any, prompt_tokens: int, stop: Sequence[str],
                 cancel: Sequence[threading.Event]) -> None:
        self.reason: str | None = None
        self._tokenizer = tokenizer
        self._prompt_tokens = prompt_tokens
        self._stop = [s for s in stop if s]
        self._cancel = cancel
        # A stop string of n characters spans at most n tokens; a few more
        # cover tokens that decode to nothing (special tokens, partial bytes).
        self._window = max((len(s) for s in self._stop), default=0) + 8

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if any(event.is_set() for event in self._cancel):
            self.reason = "cancel"
        elif self._stop and self._stop_in_tail(input_ids):
            self.reason = "stop"
        done = self.reason is not None
        flags = torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)
        return flags  # type: ignore[return-value]  # a bool tensor is a BoolTensor

    def _stop_in_tail(self, input_ids: torch.LongTensor) -> bool:
        start = max(self._prompt_tokens, input_ids.shape[1] - self._window)
        tail = self._tokenizer.decode(input_ids[0, start:], **DECODE)
        return any(s in tail for s in self._stop)
