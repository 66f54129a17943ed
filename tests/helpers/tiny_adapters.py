"""Tiny LoRA persona adapters for tests, made with real peft on the tiny model.

`make_adapter` writes a peft adapter folder (`save_pretrained`) for the tiny
model in `base_dir`, with random A and B weights (seeded, large enough that
each adapter changes the logits visibly). `ref_for` describes a folder as an
`AdapterRef` whose weights are the folder's own file (no image needed).
`reference_logits` is the ground truth: peft's own `PeftModel.from_pretrained`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from actors.adapters import CONFIG_FILE, WEIGHTS_FILE, AdapterRef, content_sha256, scaling_of

PROBE_IDS = torch.tensor([[1, 5, 9, 17, 33, 65, 129, 200, 2]])


def make_adapter(base_dir: Path, out_dir: Path, *, seed: int, r: int = 4, alpha: int = 8,
                 targets: Sequence[str] = ("q_proj", "v_proj"), std: float = 0.5,
                 base_name: str | None = None) -> Path:
    """Save a random LoRA adapter for the model in `base_dir` into `out_dir`."""
    print(f"tiny adapter {out_dir.name} seed: {seed}")
    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, std)
    model.save_pretrained(str(out_dir))
    if base_name is not None:
        edit_config(out_dir, base_model_name_or_path=base_name)
    return out_dir


def edit_config(folder: Path, **changes: object) -> None:
    """Rewrite keys of a folder's adapter_config.json (None deletes a key)."""
    path = folder / CONFIG_FILE
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def ref_for(name: str, folder: Path, version: int = 1) -> AdapterRef:
    """An `AdapterRef` reading the folder's own weights file."""
    config = json.loads((folder / CONFIG_FILE).read_text())
    targets = tuple(sorted(config["target_modules"]))
    return AdapterRef(name, version, content_sha256(folder)[0], config["r"],
                      scaling_of(config["r"], config["lora_alpha"], False), targets, targets,
                      str(folder / WEIGHTS_FILE), (folder / WEIGHTS_FILE).stat().st_size)


def load_base(base_dir: Path) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model.eval()
    return model


@torch.no_grad()
def logits_of(model: torch.nn.Module, ids: torch.Tensor = PROBE_IDS) -> torch.Tensor:
    return model(input_ids=ids).logits.detach().clone()


def reference_logits(base_dir: Path, folder: Path) -> torch.Tensor:
    """The logits of a freshly loaded peft model wearing `folder`."""
    model = PeftModel.from_pretrained(load_base(base_dir), str(folder))
    model.eval()
    return logits_of(model)
