"""peft LoRA adapters as GGUF LoRA files, for the llama.cpp engine.

Theory of operation
-------------------
llama.cpp wears LoRA adapters in its own GGUF form. `convert` does what
llama.cpp's `convert_lora_to_gguf.py` does for a Llama-family base, with the
`gguf` package's writer and no model loaded:

- keys: peft's `base_model.model.<module>.lora_A.weight` becomes the GGUF
  name of `<module>.weight` (`gguf.get_tensor_name_map`, e.g.
  `blk.3.attn_q.weight`) with `.lora_a` / `.lora_b` appended;
- data: A (r, in) and B (out, r) as float32, in torch's row order (GGUF's
  shape is the reverse, which is what llama.cpp checks against the base);
- q and k: the converter permutes the rows of `q_proj` and `k_proj` for
  llama.cpp's rotary layout (by `n_head` and `n_head_kv`), so the same
  permutation applies to B's rows (A, on the input side, is untouched);
- scale: llama.cpp scales by `alpha / r` (r read from B), so `alpha` is
  written as `scaling * r`, which also covers rsLoRA's `alpha / sqrt(r)`.

The base's shape (`BaseLayout`: architecture, heads, layers) comes from its
transformers `config.json`, so the conversion runs at ingest, where the
adapter's GGUF is stored as one more blob of its record (`GGUF_FILE`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actors.adapters import GGUF_FILE, PEFT_PREFIX, AdapterError

# transformers model_type -> GGUF architecture whose q/k rows llama.cpp permutes
PERMUTING_ARCHS = {"llama": "llama", "mistral": "llama"}
PERMUTED = {"q_proj": "n_head", "k_proj": "n_head_kv"}


class ConversionRefused(AdapterError):
    """An adapter (or its base) cannot be expressed as a GGUF LoRA."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"adapter {name!r} has no GGUF form: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True, slots=True)
class BaseLayout:
    """What the conversion needs to know about the base model."""

    arch: str
    n_head: int
    n_head_kv: int
    n_layers: int


def layout_of(config: dict[str, Any]) -> BaseLayout | None:
    """The layout from a transformers config, or None for a family llama.cpp LoRA is not
    converted for here."""
    arch = PERMUTING_ARCHS.get(str(config.get("model_type", "")))
    if arch is None:
        return None
    heads = int(config["num_attention_heads"])
    return BaseLayout(arch, heads, int(config.get("num_key_value_heads") or heads),
                      int(config["num_hidden_layers"]))


def layout_of_file(config_json: Path) -> BaseLayout | None:
    return layout_of(json.loads(Path(config_json).read_text(encoding="utf-8")))


def convert(name: str, weights: Path | str, scaling: float, layout: BaseLayout,
            target: Path | str) -> Path:
    """Write `weights` (a peft safetensors file) as a GGUF LoRA at `target`; returns it."""
    import gguf
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:  # through torch: numpy has no bfloat16
        tensors = {key: value.float().numpy() for key, value in load_file(str(weights)).items()}
    except (OSError, SafetensorError) as exc:
        raise ConversionRefused(name, f"cannot read {weights}: {exc}") from exc
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layout.n_layers)
    pairs = _pairs(name, tensors)
    writer = gguf.GGUFWriter(str(target), layout.arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    rank = next(iter(pairs.values()))[0].shape[0]
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(scaling) * rank)
    for module, (a, b) in sorted(pairs.items()):
        if a.shape[0] != rank:
            raise ConversionRefused(name, f"{module} has rank {a.shape[0]}, others {rank}")
        gguf_name = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ConversionRefused(name, f"no GGUF name for module {module}")
        writer.add_tensor(f"{gguf_name}.lora_a", np.ascontiguousarray(a, dtype=np.float32))
        writer.add_tensor(f"{gguf_name}.lora_b",
                          np.ascontiguousarray(_permuted(module, b, layout), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(target)


def convert_to_bytes(name: str, weights: Path | str, scaling: float,
                     layout: BaseLayout) -> bytes:
    """`convert`, returning the file's bytes (for an adapter stored before conversion)."""
    with tempfile.TemporaryDirectory(prefix="batos-gguf-lora-") as scratch:
        return convert(name, weights, scaling, layout, Path(scratch) / GGUF_FILE).read_bytes()


def _pairs(name: str, tensors: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """module -> (A, B), modules named without peft's prefix."""
    parts: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        stem, _, part = key.removesuffix(".weight").rpartition(".")
        if part not in ("lora_A", "lora_B"):
            raise ConversionRefused(name, f"unexpected tensor {key}")
        parts.setdefault(stem.removeprefix(PEFT_PREFIX), {})[part] = value
    pairs = {}
    for module, both in parts.items():
        if set(both) != {"lora_A", "lora_B"}:
            raise ConversionRefused(name, f"{module} lacks lora_A or lora_B")
        pairs[module] = (both["lora_A"].astype(np.float32), both["lora_B"].astype(np.float32))
    if not pairs:
        raise ConversionRefused(name, "no LoRA tensors")
    return pairs


def _permuted(module: str, b: np.ndarray, layout: BaseLayout) -> np.ndarray:
    """B's rows in llama.cpp's rotary order for q and k (convert_hf_to_gguf's `permute`)."""
    heads_attr = PERMUTED.get(module.rsplit(".", 1)[-1])
    if heads_attr is None:
        return b
    heads = getattr(layout, heads_attr)
    out = b.shape[0]
    return b.reshape(heads, 2, out // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)
