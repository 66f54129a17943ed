"""Shared set-up of the video tests: the device, one thread, a tiny pipeline and LLM."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.helpers.tiny_model import build_tokenizer

# TEST_VIDEO_DEVICE=cuda runs the video tests on a GPU (scripts/gpu_check_video.sh). Not a
# BATOS_* variable: tests/conftest.py removes those before the tests import this.
DEVICE = os.environ.get("TEST_VIDEO_DEVICE", "cpu")


def one_thread() -> None:
    """Keep torch to one thread: the test machine's cores are shared."""
    torch.set_num_threads(1)


def build_small_llm_dir(path: Path, *, seed: int = 99, hidden: int = 256,
                        layers: int = 4) -> Path:
    """A small random Llama causal LM with the tiny tokenizer (megabytes, so an
    eviction shows in CUDA's memory readings); returns its folder."""
    print(f"small LLM seed: {seed}")
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
