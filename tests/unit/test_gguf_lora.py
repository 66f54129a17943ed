"""peft adapters to GGUF LoRA: names, shapes, alpha and llama.cpp's q/k row order."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.torch import load_file

from actors.adapters import PEFT_PREFIX, WEIGHTS_FILE, scaling_of
from actors.gguf_lora import BaseLayout, ConversionRefused, convert, layout_of
from tests.helpers.smollm2_adapters import make_smollm2_adapter

LAYOUT = BaseLayout("llama", n_head=9, n_head_kv=3, n_layers=30)


def unpermute(b: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of convert_hf_to_gguf's `permute` (rows back to transformers' order)."""
    out = b.shape[0]
    return b.reshape(heads, out // heads // 2, 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


@pytest.fixture
def converted(tmp_path: Path) -> tuple[Path, Path]:
    folder = make_smollm2_adapter(tmp_path / "critic", seed=7, r=4, alpha=8, layers=2)
    target = convert("critic", folder / WEIGHTS_FILE, scaling_of(4, 8, False), LAYOUT,
                     tmp_path / "critic.gguf")
    return folder, target


def test_the_file_is_a_lora_adapter_with_alpha_carrying_the_scaling(
        converted: tuple[Path, Path]) -> None:
    reader = gguf.GGUFReader(converted[1])
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "llama"
    assert fields["adapter.lora.alpha"] == pytest.approx(8.0)  # scaling 2.0 x rank 4


def test_every_module_becomes_an_a_b_pair_under_its_gguf_name(
        converted: tuple[Path, Path]) -> None:
    folder, path = converted
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert len(tensors) == 2 * 4 * 2  # 2 layers x q/k/v/o x (a, b)
    peft = load_file(str(folder / WEIGHTS_FILE))
    a = tensors["blk.1.attn_v.weight.lora_a"]
    assert list(a.shape) == [576, 4]  # GGUF lists dimensions innermost first
    source = peft[f"{PEFT_PREFIX}model.layers.1.self_attn.v_proj.lora_A.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(a.data).reshape(4, 576), source)
    b = tensors["blk.1.attn_v.weight.lora_b"]
    source_b = peft[f"{PEFT_PREFIX}model.layers.1.self_attn.v_proj.lora_B.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(b.data).reshape(192, 4), source_b)


@pytest.mark.parametrize(("module", "gguf_module", "rows", "heads"), [
    ("q_proj", "attn_q", 576, 9), ("k_proj", "attn_k", 192, 3)])
def test_q_and_k_rows_follow_llama_cpp_rotary_order(converted: tuple[Path, Path], module: str,
                                                    gguf_module: str, rows: int,
                                                    heads: int) -> None:
    folder, path = converted
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    written = np.asarray(tensors[f"blk.0.{gguf_module}.weight.lora_b"].data).reshape(rows, 4)
    source = load_file(str(folder / WEIGHTS_FILE))[
        f"{PEFT_PREFIX}model.layers.0.self_attn.{module}.lora_B.weight"].numpy()
    assert not np.array_equal(written, source)
    np.testing.assert_array_equal(unpermute(written, heads), source)


def test_layout_of_a_transformers_config() -> None:
    config = {"model_type": "llama", "num_attention_heads": 9, "num_key_value_heads": 3,
              "num_hidden_layers": 30}
    assert layout_of(config) == LAYOUT
    assert layout_of({"model_type": "gpt2"}) is None


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / WEIGHTS_FILE
    bad.write_bytes(b"not safetensors")
    with pytest.raises(ConversionRefused) as caught:
        convert("broken", bad, 1.0, LAYOUT, tmp_path / "out.gguf")
    assert caught.value.name == "broken"
