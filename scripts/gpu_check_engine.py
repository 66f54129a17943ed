"""The engine's CUDA paths, checked on a machine with a GPU (CI has none).

    python scripts/gpu_check_engine.py [--device cuda] [--json]

Builds the tiny test model and two tiny persona adapters (real peft), ingests
them into a fresh image, and then does what `batos serve` does on a GPU:
`load_from_image` with the VRAM-aware keyword arguments (4-bit NF4 through
bitsandbytes when installed, `device_map="auto"`, `max_memory` from the
budget), `steward.attach` with the hot budget read live from
`torch.cuda.mem_get_info`, a generation wearing each persona, the tier cycle
(cold -> hot, evict -> cold -> hot again), and the logits compared with peft's
own `PeftModel` over the same quantized base. The thermal sentinel reads
NVML. Prints one JSON object; on CPU (`--device cpu`) the same script runs
the CPU path, so it can be tried without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from actors import steward, thermal
from actors.engine import load_from_image
from actors.hooks import ingest_staged_adapters
from actors.llm import ChatMessage, GenerationRequest
from actors.models import ingest_model_dir
from kernel.image import Image
from tests.helpers.tiny_adapters import PROBE_IDS, make_adapter
from tests.helpers.tiny_model import build_tiny_model_dir

PERSONAS = {"drafter": 11, "critic": 23}


def free_bytes(device: str) -> int | None:
    if not device.startswith("cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


@torch.no_grad()
def probe_logits(model: Any, device: str) -> torch.Tensor:
    return model(input_ids=PROBE_IDS.to(device)).logits.float().cpu()


def peft_reference(engine: Any, folder: Path, device: str) -> torch.Tensor:
    """peft's own adapter over a freshly loaded base with the engine's keyword arguments."""
    from peft import PeftModel

    from actors.engine import load_kwargs
    has_bnb = engine.model.config.to_dict().get("quantization_config") is not None
    kwargs = load_kwargs(device, None, has_bnb)
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(str(engine.base_dir), **kwargs)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    logits = probe_logits(model, device)
    del model, base
    return logits


def quantized_modules(model: Any) -> int:
    return sum(1 for module in model.modules() if type(module).__name__ == "Linear4bit")


def check(device: str, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(torch.device(device))
    lm = build_tiny_model_dir(work / "lm")
    staging = work / "staging"
    folders = {name: make_adapter(lm, staging / name, seed=seed)
               for name, seed in PERSONAS.items()}
    image = Image.open(work / "image", overrides={"adapters.staging_dir": str(staging)})
    try:
        ingest_model_dir(image, lm, "base", progress=lambda line: None)
        report["ingested"] = sorted(ingest_staged_adapters(image).named("added"))
        report["free_before_load"] = free_bytes(device)
        started = time.perf_counter()
        engine = load_from_image(image, embedding=None, device=device)
        report["load_s"] = round(time.perf_counter() - started, 3)
        report["free_after_load"] = free_bytes(device)
        report["linear4bit_modules"] = quantized_modules(engine.model)
        report["model_device"] = str(next(engine.model.parameters()).device)
        live = steward.attach(image, engine)
        assert live is not None, "the tiny model has q/k/v/o: a steward must attach"
        report["hot_budget_bytes"] = live.budgets.hot_bytes
        report["slots"] = len(live.bank.slots)
        report["free_after_slots"] = free_bytes(device)
        report["personas"] = {}
        for name in PERSONAS:
            ask = GenerationRequest((ChatMessage("user", "What is the capital of France?"),),
                                    0.0, 8, persona=name)
            generation = engine.generate(ask)
            worn = probe_logits(engine.model, device)
            reference = peft_reference(engine, folders[name], device)
            report["personas"][name] = {
                "worn": generation.persona, "tokens": generation.tokens,
                "mean_logprob": generation.mean_logprob, "tier": live.tier_of(name),
                "max_abs_logit_diff_vs_peft": float((worn - reference).abs().max()),
            }
        evicted = live.evict("critic")
        report["evict_critic_freed_bytes"] = evicted
        report["tier_after_evict"] = live.tier_of("critic")
        started = time.perf_counter()
        live.activate("critic")
        report["cold_to_hot_ms"] = round((time.perf_counter() - started) * 1000, 3)
        report["tier_after_reactivate"] = live.tier_of("critic")
        report["gauges"] = live.gauges()
        report["thermal"] = thermal_reading()
        live.close()
        steward.install(None)
    finally:
        image.close()
    return report


def thermal_reading() -> dict[str, Any]:
    device = thermal.nvml_device(0)
    reading = thermal.read_temperature(thermal.default_chain(device))
    return {"nvml": device is not None, "source": reading.source,
            "celsius": reading.celsius}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batos-gpu-") as work:
        report = check(args.device, Path(work))
    text = json.dumps(report, default=str)
    print(text)
    out = os.environ.get("OUT")
    if out:
        Path(out, "engine_gpu.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
