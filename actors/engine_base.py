"""What both engines share: registration, personas, embeddings, and the text hooks.

`EngineBase` is the part of an engine that does not depend on how tokens
are made: `install` (the process's generator and embedder), `activate` (the
steward's persona, called where the engine generates), `embed` (the
sentence-transformers embedder, one call at a time). `actors.engine.Engine`
(transformers + peft) and `actors.engine_llama.LlamaEngine` (llama.cpp)
inherit it and differ in `generate`.

The generation hooks both use: `stop_events` (what ends a generation
early), `nothing_to_generate` (the empty answer to a zero budget or an early
cancel), `_cut_at_stop` and `_TextPieces` (word-sized streamed pieces that
never include a stop string).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers.generation.streamers import BaseStreamer

from actors import llm
from kernel import stopping

log = logging.getLogger(__name__)

TOP_P = 0.9  # nucleus sampling's mass, on both engines
PIECE_MAX_CHARS = 32  # a run without whitespace longer than this is sent anyway
DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}


class EngineBase:
    """Registration, personas and embeddings of an engine (see the module docstring)."""

    embedder: Any = None
    # The adapter tiers (`actors.vram_steward.VramSteward` or the llama.cpp engine's),
    # attached by the steward; None: every request runs on the bare model.
    steward: Any = None

    def __init__(self, embedder: Any = None) -> None:
        self.embedder = embedder
        self._embed_lock = threading.Lock()

    def install(self) -> None:
        """Register this engine as the process's generator and embedder."""
        llm.install_engine(self, self if self.embedder is not None else None)

    def activate(self, persona: str | None) -> str | None:
        """Wear `persona`'s adapter; returns the persona actually worn (None: bare model).

        Called where the engine generates, before a pass: a pass always runs
        with its own adapter however passes interleave."""
        if self.steward is None:
            return None
        worn: str | None = self.steward.activate(persona)
        return worn

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

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        raise NotImplementedError


def stop_events(cancel: threading.Event | None) -> tuple[threading.Event, ...]:
    """What ends a generation early: the caller's `cancel` and the process's stop."""
    return (stopping.STOPPING,) if cancel is None else (cancel, stopping.STOPPING)


def nothing_to_generate(request: llm.GenerationRequest, cancels: Sequence[threading.Event],
                        persona: str | None) -> llm.Generation | None:
    """The empty generation when there is no budget or it is cancelled already, else None."""
    cancelled = any(event.is_set() for event in cancels)
    if request.max_new_tokens > 0 and not cancelled:
        return None
    return llm.Generation("", 0, 0.0, 0.0, persona=persona,
                          stopped_by="cancel" if cancelled else "length")


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the earliest stop string in it (all of it when none occurs)."""
    cuts = [index for s in stop if s and (index := text.find(s)) >= 0]
    return text[:min(cuts)] if cuts else text


class _TextPieces(BaseStreamer):
    """Hands decoded text to `on_text` in word-sized pieces, as tokens arrive.

    It never sends text that a stop string will cut away: everything from the
    first stop string on, and the last (longest stop - 1) characters, which
    might begin one, wait. A trailing U+FFFD (a character whose bytes are
    still arriving) waits too. `finish` sends the rest of the final text.

    Each piece is an `llm.TextPiece` carrying the tokens generated since the
    previous piece; `finish` is told the generation's token count and gives
    the last piece whatever was not counted yet (the end-of-generation token,
    which the llama.cpp engine does not `put`), so the pieces' tokens add up
    to the generation's. When the text was all sent already and tokens remain,
    that last piece is empty.
    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], on_text: llm.OnText) -> None:
        self._tokenizer = tokenizer
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._on_text = on_text
        self._ids: list[int] = []
        self._prompt_seen = False
        self._sent = ""
        self._counted = 0  # tokens put since the last piece
        self._tokens_sent = 0  # tokens carried by the pieces sent so far

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt itself
            self._prompt_seen = True
            return
        new = [int(token) for token in value.reshape(-1).tolist()]
        self._ids.extend(new)
        self._counted += len(new)
        text = self._tokenizer.decode(self._ids, **DECODE)
        end = self._piece_end(text)
        if end > len(self._sent) and text.startswith(self._sent):
            self._send(text[len(self._sent):end])

    def end(self) -> None:
        """Nothing: the engine calls `finish` with the final, stop-trimmed text."""

    def finish(self, final_text: str, tokens: int | None = None) -> None:
        """Send the rest of `final_text`, with the rest of the generation's `tokens`
        (None: the tokens `put` since the last piece)."""
        if tokens is not None:
            self._counted = max(0, tokens - self._tokens_sent)
        rest = ""
        if final_text.startswith(self._sent):
            rest = final_text[len(self._sent):]
        else:
            log.warning("streamed text diverged from the final text; rest not streamed")
        if rest or self._counted:
            self._send(rest)

    def _piece_end(self, text: str) -> int:
        safe = len(_cut_at_stop(text, self._stop))
        if safe == len(text):
            safe = max(0, safe - self._hold)
        while safe > 0 and text[safe - 1] == "\ufffd":
            safe -= 1
        boundary = max(text.rfind(" ", 0, safe), text.rfind("\n", 0, safe))
        if boundary + 1 > len(self._sent):
            return boundary + 1
        return safe if safe - len(self._sent) >= PIECE_MAX_CHARS else 0

    def _send(self, piece: str) -> None:
        self._sent += piece
        tokens, self._tokens_sent = self._counted, self._tokens_sent + self._counted
        self._counted = 0
        self._on_text(llm.TextPiece(piece, tokens))
