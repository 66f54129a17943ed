"""Concurrent passes decoded together: one llama.cpp context, one sequence per pass.

Theory of operation
-------------------
Passes of different missions reach the engine on different step workers at
the same time. Serving them one after another leaves llama.cpp doing one
token's work per call; decoding them together puts one token of every
running pass into a single `llama_decode` batch, which costs far less than
that many calls (the weights are read once per batch, not once per pass).

`BatchDecoder` owns the context's sequences (`n_seq_max`, each with its own
KV cache: llama.cpp's non-unified cache, so a sequence's attention and
arithmetic are the same whether it decodes alone or beside others, and
greedy output is the same token for token). One decoding thread, started
with the decoder, is the only thread that calls llama.cpp after loading:

- A caller (`generate`) tokenizes its prompt in its own thread, queues a
  `Job` and waits on the job's outbox, where it finds streamed pieces (it
  calls its own `on_text` with them, in its own thread), then the finished
  `Generation` or the error to raise.
- llama.cpp applies one LoRA adapter per context, so the running sequences
  all wear one persona. When none runs, the oldest waiting job's persona is
  worn (`engine.activate`), after a short window (`WINDOW_S`) in which jobs
  arriving together are collected. Jobs of the same persona join a running
  batch at any step while a sequence is free, in arrival order: a job
  waiting for another persona stops the admissions behind it, so no persona
  starves.
- A step: every job whose caller has taken all of its pieces picks its next
  token from its logits (`pick`), records the token's raw log-probability,
  streams, and ends on end-of-generation, a stop string, its budget or its
  cancel events; the others put one token each into one batch. A caller slow
  to take its pieces holds back only its own sequence (so a cancel set from
  `on_text` ends the pass at the next token, as on the torch engine).
- A finished sequence's cells are removed from the KV cache and its id
  freed. An error in a step (a failed decode, a persona that cannot be
  worn) fails every job it touched with that typed error; the thread goes on.
- `call(fn)` runs other work that needs the context (scoring continuations
  for the confidence) on the decoding thread, alone: no job is admitted
  while a call waits, the running ones finish first, and the call leaves the
  KV cache empty.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import llama_cpp
import numpy as np
import torch

from actors import llm
from actors.engine_base import TOP_P, _cut_at_stop, _TextPieces, nothing_to_generate

log = logging.getLogger(__name__)

WINDOW_S = 0.02  # jobs arriving this close together start in one batch
T = TypeVar("T")
IDLE_POLL_S = 0.05  # a decoder waiting for its callers rechecks at least this often
CANDIDATE_FLOOR = 1e-6  # top-p looks at tokens this probable first (see `pick`)


class DecodeFailed(llm.EngineError):
    """llama_decode returned an error code."""

    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode failed with code {code}")
        self.code = code


class EngineClosed(llm.EngineError):
    """The engine was closed before (or while) this pass ran."""

    def __init__(self) -> None:
        super().__init__("the llama.cpp engine is closed")


class Job:
    """One pass: its request, its sequence in the KV cache, what it generated so far."""

    def __init__(self, request: llm.GenerationRequest, ids: Sequence[int],
                 cancels: tuple[threading.Event, ...], streaming: bool, started: float,
                 extra: dict[str, float]) -> None:
        self.request, self.ids, self.cancels = request, list(ids), cancels
        self.started, self.extra = started, extra
        self.outbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.abandoned = threading.Event()  # the caller left (its `on_text` raised)
        self.pieces: _TextPieces | None = None
        self.streaming = streaming
        self.sent = self.taken = 0  # pieces put in the outbox / handled by the caller
        self.seq = -1
        self.persona: str | None = None  # the persona worn (None: the bare model)
        self.logits: np.ndarray | None = None  # the distribution of the next token
        self.new: list[int] = []
        self.logprobs: list[float] = []
        self.reason: str | None = None
        self.prefilled = 0.0
        self.budget = request.max_new_tokens
        self._stop = [s for s in request.stop if s]
        self._window = max((len(s) for s in self._stop), default=0) + 8

    def wait(self, on_text: llm.OnText | None, wake: threading.Condition) -> llm.Generation:
        """In the caller's thread: hand pieces to `on_text` until the result comes.

        If `on_text` raises, the pass is abandoned (the decoder ends it at its
        next step, freeing its sequence) and the error reaches the caller."""
        while True:
            kind, value = self.outbox.get()
            if kind == "text":
                try:
                    if on_text is not None:
                        on_text(value)
                except BaseException:
                    self.abandoned.set()
                    raise
                finally:
                    with wake:
                        self.taken += 1
                        wake.notify_all()
            elif kind == "done":
                generation: llm.Generation = value
                return generation
            else:
                raise value

    def stop_in_tail(self, vocab: Any) -> bool:
        if not self._stop:
            return False
        tail = vocab.decode(self.new[-self._window:])
        return any(s in tail for s in self._stop)

    def mean_logprob(self) -> float:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else 0.0


class _Call:
    """Work for the decoding thread alone (`BatchDecoder.call`)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class BatchDecoder:
    """The decoding thread and the sequences of one llama.cpp context (see the module note)."""

    def __init__(self, engine: Any, ctx: Any, sequences: int, n_batch: int) -> None:
        self.engine, self.ctx, self.n_batch = engine, ctx, n_batch
        self._memory = llama_cpp.llama_get_memory(ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._free = list(range(sequences))
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._calls: deque[_Call] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self.batches = 0  # decode calls of more than one sequence (for tests and status)
        self._thread = threading.Thread(target=self._serve, name="batos-llama-decode",
                                        daemon=True)
        self._thread.start()

    def check_open(self) -> None:
        """Raise `EngineClosed` once `close` has begun (the context may be freed)."""
        if self._closed:
            raise EngineClosed()

    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise EngineClosed()
            self._waiting.append(job)
            self._wake.notify_all()

    def close(self) -> None:
        """End the decoding thread; running and waiting passes fail with `EngineClosed`."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        llama_cpp.llama_batch_free(self._batch)

    def wait(self, job: Job, on_text: llm.OnText | None) -> llm.Generation:
        return job.wait(on_text, self._wake)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the decoding thread while no pass decodes; its result or error."""
        task = _Call(fn)
        with self._wake:
            if self._closed:
                raise EngineClosed()
            self._calls.append(task)
            self._wake.notify_all()
        task.done.wait()
        if task.error is not None:
            raise task.error
        result: T = task.result
        return result

    @property
    def running(self) -> int:
        return len(self._running)

    def snapshot(self) -> list[dict[str, Any]]:
        """The passes decoding now: persona worn, tokens so far, their decode rate."""
        now = time.perf_counter()
        with self._wake:
            jobs = [job for job in self._running if job.prefilled]
            return [{"persona": job.persona, "tokens": len(job.new),
                     "tokens_per_s": round(len(job.new) / max(1e-9, now - job.prefilled), 1),
                     "seconds": round(now - job.started, 3)} for job in jobs]

    # -- the decoding thread -----------------------------------------------------------
    def _serve(self) -> None:
        while not self._closed:
            if self._run_call():
                continue
            admitted = self._next_admissions()
            for job in admitted:
                self._guarded([job], self._start, job)
            ready = self._ready()
            if ready:
                self._guarded(ready, self._step, ready)
        with self._wake:
            left = [*self._running, *self._waiting]
            self._waiting.clear()
            calls = list(self._calls)
            self._calls.clear()
        for task in calls:
            task.error = EngineClosed()
            task.done.set()
        for job in left:
            if job in self._running:
                self._finish(job, error=EngineClosed())
            else:
                job.outbox.put(("error", EngineClosed()))

    def _run_call(self) -> bool:
        """Run the oldest waiting call if no pass is running; True if one ran."""
        with self._wake:
            if not self._calls or self._running:
                return False
            task = self._calls.popleft()
        try:
            task.result = task.fn()
        except Exception as exc:  # the caller gets it, typed; the thread goes on
            task.error = exc
        finally:
            llama_cpp.llama_memory_clear(self._memory, False)
            task.done.set()
        return True

    def _next_admissions(self) -> list[Job]:
        """Wait for work; take the jobs that may start now (see the module note)."""
        with self._wake:
            while (not self._waiting and not self._running and not self._calls
                   and not self._closed):
                self._wake.wait()
            if self._closed or (self._calls and not self._running):
                return []
            if not self._running and self._waiting:
                self._wake.wait(WINDOW_S)  # let jobs sent together arrive together
            admitted: list[Job] = []
            persona = self._running[0].request.persona if self._running else None
            while self._waiting and self._free and not self._calls:
                job = self._waiting[0]
                if (self._running or admitted) and job.request.persona != persona:
                    break
                persona = job.request.persona
                admitted.append(self._waiting.popleft())
                job.seq = self._free.pop()
                self._running.append(job)
            if not admitted and not self._ready_locked():
                self._wake.wait(IDLE_POLL_S)  # every running caller is busy with its pieces
            return admitted

    def _ready(self) -> list[Job]:
        with self._wake:
            return self._ready_locked()

    def _ready_locked(self) -> list[Job]:
        return [job for job in self._running if job.logits is not None
                and (job.sent == job.taken or job.abandoned.is_set())]

    def _guarded(self, jobs: list[Job], work: Any, arg: Any) -> None:
        try:
            work(arg)
        except Exception as exc:  # every error reaches its callers, typed; the thread goes on
            log.warning("decoding failed for %d pass(es): %s", len(jobs), exc)
            for job in jobs:
                if job in self._running:
                    self._finish(job, error=exc)

    def _start(self, job: Job) -> None:
        """Wear the job's persona (first of a batch), then evaluate its prompt."""
        if len(self._running) == 1 or self._running[0] is job:
            job.persona = self.engine.activate(job.request.persona)
        else:
            job.persona = self._running[0].persona
        empty = nothing_to_generate(job.request, job.cancels, job.persona)
        if empty is not None:
            self._finish(job, result=empty)
            return
        if job.streaming:
            job.pieces = _TextPieces(self.engine.vocab, job.request.stop,
                                     functools.partial(self._put_text, job))
            job.pieces.put(torch.tensor(job.ids))  # as generate() does: the prompt first
        for start in range(0, len(job.ids), self.n_batch):
            chunk = job.ids[start:start + self.n_batch]
            self._decode([(job, token, start + i) for i, token in enumerate(chunk)])
        job.prefilled = time.perf_counter()

    def _step(self, jobs: list[Job]) -> None:
        """One token for each of `jobs`: pick, record, stream, stop; then decode together."""
        going = []
        for job in jobs:
            if self._advance(job):
                going.append(job)
        if going:
            self._decode([(job, job.new[-1], len(job.ids) + len(job.new) - 1) for job in going])

    def _advance(self, job: Job) -> bool:
        """Pick `job`'s next token; False when the job ended (and was finished)."""
        if job.abandoned.is_set() or any(event.is_set() for event in job.cancels):
            return self._end(job, "cancel")
        assert job.logits is not None  # `_ready` takes only jobs with logits
        token = pick(job.logits, job.request.temperature)
        job.new.append(token)
        job.logprobs.append(logprob_of(job.logits, token))
        if self.engine.is_end(token):
            return self._end(job, "eos")
        if job.pieces is not None:
            job.pieces.put(torch.tensor([token]))
        if job.stop_in_tail(self.engine.vocab):
            return self._end(job, "stop")
        if len(job.new) >= job.budget:
            return self._end(job, "length")
        return True

    def _decode(self, rows: list[tuple[Job, int, int]]) -> None:
        """Evaluate (job, token, position) rows in one batch; the last row of each job
        gives that job's next logits."""
        batch, last = self._batch, {id(job): i for i, (job, _t, _p) in enumerate(rows)}
        for i, (job, token, position) in enumerate(rows):
            batch.token[i], batch.pos[i] = token, position
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, job.seq
            batch.logits[i] = last[id(job)] == i
        batch.n_tokens = len(rows)
        code = int(llama_cpp.llama_decode(self.ctx, batch))
        if code != 0:
            raise DecodeFailed(code)
        if len(last) > 1:
            self.batches += 1
        for job in {id(j): j for j, _t, _p in rows}.values():
            job.logits = self._logits(last[id(job)])

    def _logits(self, row: int) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self.ctx, row)
        floats = ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(floats, shape=(self.engine.n_vocab,)).copy()

    def _put_text(self, job: Job, text: str) -> None:
        with self._wake:
            job.sent += 1
        job.outbox.put(("text", text))

    def _end(self, job: Job, reason: str) -> bool:
        job.reason = reason
        text = _cut_at_stop(self.engine.vocab.decode(job.new), job.request.stop)
        if job.pieces is not None:
            job.pieces.finish(text, len(job.new))
        done = time.perf_counter()
        decode_s = done - job.prefilled
        self._finish(job, result=llm.Generation(
            text=text, tokens=len(job.new), mean_logprob=job.mean_logprob(),
            seconds=done - job.started, persona=job.persona, stopped_by=reason,
            extra={**job.extra, "prefill_seconds": job.prefilled - job.started,
                   "tokens_per_second": len(job.new) / decode_s if decode_s > 0 else 0.0}))
        return False

    def _finish(self, job: Job, *, result: llm.Generation | None = None,
                error: Exception | None = None) -> None:
        """Free `job`'s sequence and hand its caller the result (or the error)."""
        llama_cpp.llama_memory_seq_rm(self._memory, job.seq, -1, -1)
        with self._wake:
            self._running.remove(job)
            self._free.append(job.seq)
        job.outbox.put(("done", result) if error is None else ("error", error))


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
