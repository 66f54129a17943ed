"""A tiny, randomly initialised FramePack pipeline: built offline in about a second.

The components follow the sizes diffusers' own FramePack tests use (a
1+1-layer transformer, an 8-channel VAE, 2-layer Llama and CLIP text
encoders, a 1-layer SigLIP image encoder); the two tokenizers are the
byte-level BPE of `tests.helpers.tiny_model`, so nothing is fetched from a
hub. `build_tiny_video_dir` saves it as a diffusers folder, the form
`batos video install DIR` takes. Seeded; the seed is printed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from diffusers import (
    AutoencoderKLHunyuanVideo,
    FlowMatchEulerDiscreteScheduler,
    HunyuanVideoFramepackPipeline,
    HunyuanVideoFramepackTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    LlamaConfig,
    LlamaModel,
    SiglipImageProcessor,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from tests.helpers.tiny_model import build_tokenizer

DEFAULT_SEED = 4321
SIZE = 32  # frames are SIZE x SIZE pixels (4 x 4 latents)
# The prompt template of the real checkpoints crops a 95-token system prompt;
# the tiny tokenizer keeps the prompt whole.
PROMPT_TEMPLATE = {"template": "{}", "crop_start": 0}


def build_tiny_video_pipeline(*, seed: int = DEFAULT_SEED) -> HunyuanVideoFramepackPipeline:
    """A tiny random `HunyuanVideoFramepackPipeline` on the CPU, in float32."""
    print(f"tiny video pipeline seed: {seed}")
    torch.manual_seed(seed)
    pipe = HunyuanVideoFramepackPipeline(**_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_video_dir(path: Path | str, *, seed: int = DEFAULT_SEED) -> Path:
    """Save the tiny pipeline as a diffusers folder at `path`; returns it."""
    target = Path(path)
    build_tiny_video_pipeline(seed=seed).save_pretrained(str(target))
    return target


def _components() -> dict[str, Any]:
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    transformer = HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=2,
        patch_size_t=1, guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4), image_condition_type=None, has_image_proj=True,
        image_proj_dim=32, has_clean_x_embedder=True)
    blocks = ("HunyuanVideoDownBlock3D",) * 4
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=blocks,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
        layers_per_block=1, act_fn="silu", norm_num_groups=4, scaling_factor=0.476986,
        spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True)
    text_encoder = LlamaModel(LlamaConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_size=16, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab, hidden_act="gelu"))
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_size=8, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=vocab, hidden_act="gelu",
        projection_dim=32))
    image_encoder = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
        image_size=30, patch_size=2))
    return {
        "transformer": transformer, "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder, "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2, "tokenizer_2": build_tokenizer(),
        "image_encoder": image_encoder,
        "feature_extractor": SiglipImageProcessor(size={"height": 30, "width": 30}),
    }
