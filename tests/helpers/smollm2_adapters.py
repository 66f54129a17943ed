"""Random peft LoRA folders shaped for the embedded SmolLM2-135M, written without a model.

SmolLM2-135M: 30 layers, hidden 576, 9 query heads and 3 key/value heads of
64, so q/o map 576 -> 576 and k/v 576 -> 192. The folder is what peft's
`save_pretrained` writes: `adapter_config.json` and `adapter_model.safetensors`
with `base_model.model.<module>.lora_A.weight` (r, in) and `lora_B` (out, r).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from actors.adapters import CONFIG_FILE, PEFT_PREFIX, WEIGHTS_FILE

LAYERS, HIDDEN, KV = 30, 576, 192
OUT = {"q_proj": HIDDEN, "k_proj": KV, "v_proj": KV, "o_proj": HIDDEN}
BASE_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def make_smollm2_adapter(folder: Path, *, seed: int, r: int = 4, alpha: int = 8,
                         std: float = 0.05, layers: int = LAYERS) -> Path:
    """Write a random rank-`r` adapter on q/k/v/o of the first `layers` layers."""
    print(f"SmolLM2 adapter {folder.name} seed: {seed}")
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(layers):
        for module, out in OUT.items():
            key = f"{PEFT_PREFIX}model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, HIDDEN, generator=generator) * std
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, r, generator=generator) * std
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS_FILE))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
              "lora_dropout": 0.0, "target_modules": sorted(OUT), "bias": "none",
              "base_model_name_or_path": BASE_ID, "use_rslora": False}
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    return folder
