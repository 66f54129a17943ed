"""The diffusers pipeline, driven one section at a time.

Theory of operation
-------------------
diffusers' `HunyuanVideoFramepackPipeline.__call__` generates every section
of a clip in one call, in its own order (the end first, "inverted
anti-drifting"), with one guidance value. batos needs each section to be a
step with its own guidance, so `SectionPipeline` uses the pipeline's parts
and helpers (`encode_prompt`, `encode_image`, `prepare_image_latents`, the
transformer, the flow-matching scheduler, the VAE) and runs the denoising
loop of one section itself, as the pipeline's loop does for one window.

Context: FramePack's transformer takes "clean" latent frames at arbitrary
frame indices (rotary positions). A section is denoised with the start
image's latents at index 0, the last frame of its nearest finished left
neighbour just before its window, and the first frames of its nearest
finished right neighbour after it (1 frame at full, 2 at 2x and 16 at 4x
compression, zero-padded). A gap between the section and a neighbour is left
as empty positions, at most `MAX_GAP` sections wide (the checkpoints cap it
at 3). A right neighbour is exactly what diffusers' inverted sampling gives
(the later section); the left one is batos's addition, so a middle section
is conditioned on both sides.

Noise: each section draws its noise from a CPU generator seeded with
`seed + index`, so a section's result does not depend on when it ran, on
which device, or on a restart in between.

Precision (LA3's Turing probe): float32 on the CPU; on CUDA bfloat16 only
from compute capability 8.0, else float16; diffusers' default attention
(SDPA), never a flash-attention backend. Memory: CPU offload of whole models
when the pipeline does not fit the free memory, VAE tiling on CUDA.
"""

from __future__ import annotations

import gc
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actors.video.errors import UnsupportedPipeline
from actors.video.weights import SUPPORTED

MAX_GAP = 3  # sections of empty positions between a section and its context
HISTORY = (1, 2, 16)  # right-context frames at 1x, 2x and 4x compression
EXP_MAX = 7.0  # the released checkpoints' cap on the scheduler's shift
PREVIEW_SIZE = 128  # a section's preview fits this square (pixels)
OFFLOAD_HEADROOM = 0.8  # load whole on the device only below this share of its free memory
# Template for real checkpoints (diffusers' default); the tiny test pipeline keeps the prompt whole.
DEFAULT_TEMPLATE: dict[str, Any] | None = None


@dataclass(frozen=True)
class Precision:
    """What the device allows: the weights' dtype and whether offloading is needed."""

    dtype: torch.dtype
    attention: str  # diffusers' attention backend name


def precision_for(device: str) -> Precision:
    """The Turing probe: bf16 only from sm_80, float16 below, float32 on the CPU."""
    if not device.startswith("cuda"):
        return Precision(torch.float32, "native")
    major, _minor = torch.cuda.get_device_capability(torch.device(device))
    return Precision(torch.bfloat16 if major >= 8 else torch.float16, "native")


def resolve_device(setting: str) -> str:
    """`video.device`: auto picks cuda when torch sees a GPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


@dataclass
class Conditioning:
    """Everything a section needs besides its context: computed once per job."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    prompt_attention_mask: torch.Tensor
    image_embeds: torch.Tensor
    image_latents: torch.Tensor  # float32, (1, C, 1, h, w)

    def save(self, path: Path) -> None:
        torch.save({k: v.detach().cpu() for k, v in vars(self).items()}, path)

    @classmethod
    def load(cls, path: Path) -> Conditioning:
        return cls(**torch.load(path, map_location="cpu", weights_only=True))


class SectionPipeline:
    """A FramePack pipeline on one device, driven section by section."""

    def __init__(self, pipe: Any, device: str, *, offloaded: bool = False) -> None:
        name = type(pipe).__name__
        if name not in SUPPORTED:
            raise UnsupportedPipeline(name, SUPPORTED)
        self.pipe = pipe
        self.device = device
        self.offloaded = offloaded
        self._execution_device: torch.device | None = None
        pipe.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, folder: Path | str, device: str) -> SectionPipeline:
        """Load a diffusers folder VRAM-aware (see the module note)."""
        from diffusers import DiffusionPipeline

        precision = precision_for(device)
        pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True,
                                                 torch_dtype=precision.dtype)
        return cls.place(pipe, device)

    @classmethod
    def place(cls, pipe: Any, device: str) -> SectionPipeline:
        """Put a loaded pipeline on `device`: whole, or offloaded model by model."""
        if not device.startswith("cuda"):
            return cls(pipe.to(device), device)
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        weights = sum(p.numel() * p.element_size() for m in _modules(pipe)
                      for p in m.parameters())
        offload = weights > OFFLOAD_HEADROOM * free
        if offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        pipe.vae.enable_tiling()
        return cls(pipe, device, offloaded=offload)

    @property
    def execution_device(self) -> torch.device:
        """Where the models run (fixed once placed; diffusers walks every module and
        hook to say it, so it is asked once)."""
        if self._execution_device is None:
            self._execution_device = torch.device(self.pipe._execution_device)
        return self._execution_device

    # -- once per job -------------------------------------------------------------
    @torch.inference_mode()
    def condition(self, prompt: str, image: Any, height: int, width: int, seed: int,
                  template: dict[str, Any] | None = DEFAULT_TEMPLATE) -> Conditioning:
        """Encode the prompt and the start image (a PIL image or an array)."""
        pipe, device = self.pipe, self.execution_device
        extra = {} if template is None else {"prompt_template": template}
        embeds, pooled, mask = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device,
                                                  **extra)
        pixels = pipe.video_processor.preprocess(image, height, width)
        image_embeds = pipe.encode_image(pixels, device=device)
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = pipe.prepare_image_latents(pixels.to(device), dtype=torch.float32,
                                             device=device, generator=generator)
        return Conditioning(embeds, pooled, mask, image_embeds, latents)

    # -- one section ---------------------------------------------------------------
    @torch.inference_mode()
    def section(self, cond: Conditioning, *, left: torch.Tensor | None, left_gap: int,
                right: torch.Tensor | None, right_gap: int, guidance: float, steps: int,
                window: int, seed: int) -> torch.Tensor:
        """Denoise one section of `window` latent frames; returns them on the CPU, float32.

        `left`: the left neighbour's latents (None: the start image is the
        neighbour); `right`: the right neighbour's first frames (None: none).
        """
        pipe, device = self.pipe, self.execution_device
        dtype = pipe.transformer.dtype
        image = cond.image_latents.to(device)
        shape = (1, image.shape[1], window, image.shape[3], image.shape[4])
        layout = _Layout.build(window, left is not None, min(left_gap, MAX_GAP) * window,
                               min(right_gap, MAX_GAP) * window)
        clean = [image] + ([left[:, :, -1:].to(device)] if left is not None else [])
        history = torch.zeros((*shape[:2], sum(HISTORY), *shape[3:]), device=device)
        if right is not None:
            frames = min(sum(HISTORY), right.shape[2])
            history[:, :, :frames] = right[:, :, :frames].to(device)
        h1, h2, h4 = history.split(HISTORY, dim=2)
        noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
        latents = noise.to(device)
        timesteps = self._timesteps(latents, steps)
        embed = guidance * 1000.0 * torch.ones(1, dtype=dtype, device=device)
        for t in timesteps:
            noise_pred = pipe.transformer(
                hidden_states=latents.to(dtype), timestep=t.expand(1),
                encoder_hidden_states=cond.prompt_embeds.to(device, dtype),
                encoder_attention_mask=cond.prompt_attention_mask.to(device, dtype),
                pooled_projections=cond.pooled_prompt_embeds.to(device, dtype),
                image_embeds=cond.image_embeds.to(device, dtype),
                indices_latents=layout.latents, guidance=embed,
                latents_clean=torch.cat([*clean, h1], dim=2).to(dtype),
                indices_latents_clean=layout.clean,
                latents_history_2x=h2.to(dtype), indices_latents_history_2x=layout.history_2x,
                latents_history_4x=h4.to(dtype), indices_latents_history_4x=layout.history_4x,
                return_dict=False)[0]
            latents = pipe.scheduler.step(noise_pred.float(), t, latents, return_dict=False)[0]
        return latents.float().cpu()

    def _timesteps(self, latents: torch.Tensor, steps: int) -> torch.Tensor:
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import (
            calculate_shift,
            retrieve_timesteps,
        )

        pipe = self.pipe
        config = pipe.scheduler.config
        seq_len = latents.shape[2] * latents.shape[3] * latents.shape[4] / (
            pipe.transformer.config.patch_size ** 2)
        mu = calculate_shift(seq_len, config.get("base_image_seq_len", 256),
                             config.get("max_image_seq_len", 4096),
                             config.get("base_shift", 0.5), config.get("max_shift", 1.15))
        sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1].tolist()
        timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, self.execution_device,
                                          sigmas=sigmas, mu=min(mu, math.log(EXP_MAX)))
        return timesteps

    # -- the end -------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, image_latents: torch.Tensor, sections: list[torch.Tensor]) -> np.ndarray:
        """Frames of the whole clip: uint8 (T, H, W, 3), T = sections x window x 4 + 1."""
        pipe = self.pipe
        vae = pipe.vae
        device = self.execution_device
        # sections come back from blobs on the CPU, the start latents may sit on the device
        latents = torch.cat([part.to(device) for part in (image_latents, *sections)], dim=2)
        video = vae.decode(latents.to(device, vae.dtype) / vae.config.scaling_factor,
                           return_dict=False)[0]
        frames = pipe.video_processor.postprocess_video(video.float(), output_type="np")[0]
        return np.asarray(np.round(np.clip(frames, 0.0, 1.0) * 255.0), dtype=np.uint8)

    @torch.inference_mode()
    def preview(self, section: torch.Tensor, size: int = PREVIEW_SIZE) -> bytes:
        """A small PNG of a section's last frame: its last latent frame alone through
        the VAE (a causal VAE makes one picture of it), scaled to fit `size` pixels."""
        from PIL import Image

        frames = self.decode(section[:, :, -1:], [])
        picture = Image.fromarray(frames[-1])
        picture.thumbnail((size, size))
        out = io.BytesIO()
        picture.save(out, format="PNG")
        return out.getvalue()

    def unload(self) -> None:
        """Drop the pipeline's weights and give the device memory back."""
        with_hooks = getattr(self.pipe, "remove_all_hooks", None)
        if self.offloaded and with_hooks is not None:
            with_hooks()
        for module in _modules(self.pipe):
            module.to("meta")
        self.pipe = None
        release_memory(self.device)


def release_memory(device: str) -> None:
    """On CUDA: collect garbage and return the cache to the driver. On the CPU:
    nothing; reference counting has freed the weights already (nothing cyclic holds
    a pipeline's or the LLM's: tests check both), and a full collection walks the
    whole heap of a served kernel (0.2-1 s) for nothing."""
    if device.startswith("cuda") and torch.cuda.is_available():
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _modules(pipe: Any) -> list[torch.nn.Module]:
    return [c for c in pipe.components.values() if isinstance(c, torch.nn.Module)]


@dataclass(frozen=True)
class _Layout:
    """Frame indices (rotary positions) of a section's window and its context."""

    latents: torch.Tensor
    clean: torch.Tensor
    history_2x: torch.Tensor
    history_4x: torch.Tensor

    @classmethod
    def build(cls, window: int, has_left: bool, left_pad: int, right_pad: int) -> _Layout:
        # [start image][left pad][left frame?][window][right pad][1x][2x][4x]
        sizes = [1, left_pad, int(has_left), window, right_pad, *HISTORY]
        start, _pad, left, latents, _rpad, h1, h2, h4 = torch.arange(sum(sizes)).split(sizes)
        return cls(latents=latents, clean=torch.cat([start, left, h1]),
                   history_2x=h2, history_4x=h4)
