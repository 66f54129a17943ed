"""Configuration: one TOML file per image, overridable by environment and flags.

Every setting is declared once in `SETTINGS` with its type, default and a
comment. Genesis writes `batos.toml` into the image directory with every
default and its comment, so an operator edits a complete, documented file.
Values are resolved in this order, later wins:

    defaults  <  batos.toml  <  BATOS_<SECTION>_<KEY> variables  <  CLI flags

An unknown section or key, a value of the wrong type, or one out of its range
or choices (`kernel.config_rules`) is a `ConfigError` naming the offending key,
the value and where it came from.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kernel import config_rules
from kernel.errors import ConfigError, ConfigSyntaxError

CONFIG_FILE = "batos.toml"
ENV_PREFIX = "BATOS_"
# BATOS_* variables read by the CLI itself, not settings.
CLI_VARIABLES = frozenset({
    "BATOS_IMAGE", "BATOS_ENDPOINT", "BATOS_KEY", "BATOS_TIMEOUT", "BATOS_REPL",
})


@dataclass(frozen=True, slots=True)
class Setting:
    """One configuration key: dotted name, type, default and its comment."""

    key: str
    type: type
    default: Any
    comment: str


SETTINGS: tuple[Setting, ...] = (
    Setting("image.zeo", str, "",
            "ZEO server address (host:port or a unix socket path); empty: the local Data.fs"),
    Setting("image.cache_size", int, 5000, "objects kept in each connection's cache"),
    Setting("image.pack_days", float, 7.0, "history kept when the image is packed, in days"),
    Setting("steps.max_attempts", int, 3,
            "attempts of a step that hits a ConflictError before it is reported failed"),
    Setting("steps.workers", int, 4, "worker threads running steps (one ZODB connection each)"),
    Setting("steps.lanes", bool, True,
            "run the steps of actors that ask for it (the mission passes) in a lane per "
            "mission, so passes of different missions run at once"),
    Setting("steps.failure_log_size", int, 1000, "failed steps remembered in metrics"),
    Setting("steps.max_interruptions", int, 3,
            "times a step cut short by a stopping kernel runs again at the next start "
            "before its message goes to the dead letters"),
    Setting("mailbox.capacity", int, 1000,
            "pending messages per actor; a full mailbox answers 'overloaded'"),
    Setting("kernel.endpoints", list, ["ipc://live_image/kernel.sock"],
            "endpoints the kernel binds; tcp:// ones require CURVE keys"),
    Setting("kernel.max_message_bytes", int, 1_048_576,
            "largest frame accepted; larger ones disconnect the peer"),
    Setting("kernel.heartbeat_ms", int, 1000, "heartbeat interval for external actors"),
    Setting("kernel.id", str, "",
            "this kernel's name among kernels sharing one image (ZEO); empty: the host name"),
    Setting("kernel.heartbeat_liveness", int, 3, "missed heartbeats before an actor is dead"),
    Setting("kernel.mission_entry", str, "missions",
            "the actor that receives each new mission (selector 'start')"),
    Setting("kernel.group_commit", bool, True,
            "steps share fsyncs; nothing leaves before its step is on disk"),
    Setting("kernel.group_commit_delay_s", float, 0.001,
            "while more steps wait, an fsync waits this long to cover them too"),
    Setting("kernel.metrics_flush_s", float, 1.0,
            "how often step counts are added to the image's counters"),
    Setting("kernel.request_timeout_s", float, 10.0, "client wait for a kernel reply"),
    Setting("leases.actors", list, ["*"],
            "actors this kernel may run on a shared image: fnmatch patterns, e.g. ['draft*']"),
    Setting("leases.ttl_s", float, 15.0,
            "a kernel's leases expire this long after its last renewal (shared image)"),
    Setting("leases.renew_s", float, 3.0,
            "how often a kernel renews its leases and looks for expired ones (shared image)"),
    Setting("log.level", str, "INFO", "log level: DEBUG, INFO, WARNING or ERROR"),
    Setting("log.json", bool, False, "write JSON lines instead of readable lines"),
    Setting("audit.interval_s", float, 3600.0,
            "seconds between self-audit missions; 0 turns the timer off"),
    Setting("audit.actor", str, "auditor", "the actor that runs the self-audit (selector 'audit')"),
    Setting("thermal.limit_c", float, 75.0,
            "temperature (C) where the hot zone starts: budgets x0.5, TDP throttle or sleep"),
    Setting("thermal.token_scale_margin", float, 5.0,
            "the warm zone spans limit - margin up to the limit: budgets x0.75"),
    Setting("thermal.profile", str, "auto",
            "token budget profile: gpu, cpu, or auto (gpu when torch sees CUDA)"),
    Setting("thermal.tdp_control", bool, True,
            "lower the GPU power limit when hot (needs privileges; probed at start-up)"),
    Setting("thermal.tdp_throttle_fraction", float, 0.64,
            "throttled power limit as a fraction of the default, never below the card's minimum"),
    Setting("thermal.max_wait_s", float, 120.0,
            "longest a step sleeps waiting for the hot zone to clear"),
    Setting("thermal.poll_s", float, 5.0,
            "seconds between temperature readings while waiting to cool"),
    Setting("adapters.staging_dir", str, "lora_staging",
            "peft adapter folders ingested at `batos serve` start-up (relative to the cwd)"),
    Setting("adapters.hot_slots_bytes", int, 0,
            "bytes of preallocated adapter slots on the model's device; 0: auto "
            "(CUDA: 5% of free memory up to 1 GiB, CPU: 64 MiB)"),
    Setting("adapters.warm_bytes", int, 268_435_456,
            "bytes of adapter tensors kept in RAM (pinned on CUDA) for fast swaps"),
    Setting("adapters.pinned", list, [], "personas kept hot and warm, never evicted"),
    Setting("adapters.prefetch", bool, True,
            "load the persona of the next pass on a background thread while one generates"),
    Setting("adapters.fuse_on_cpu", bool, True,
            "on CPU, merge the worn adapter into the base weights (one merge per swap "
            "instead of extra matmuls per token; keeps a copy of the targeted weights)"),
    Setting("missions.max_question_bytes", int, 16_384,
            "largest mission question (UTF-8 bytes); a larger one is refused when started"),
    # -- model-written code (actors.code): the sandbox and its limits, learned methods --
    Setting("sandbox.bwrap", str, "bwrap", "the bubblewrap executable that makes the sandbox"),
    Setting("sandbox.python", str, "/usr/bin/python3",
            "the interpreter run inside the sandbox (its prefix is bound read-only)"),
    Setting("sandbox.uid", int, 65534,
            "host user and group a sandbox runs as when batos runs as root (nobody)"),
    Setting("sandbox.seccomp", bool, True,
            "a seccomp filter denies ptrace, mount, unshare, setns, keyrings, bpf (x86_64)"),
    Setting("sandbox.warm", int, 1,
            "sandboxes started ahead of time, each for exactly one program (0: start "
            "every run's sandbox when the code comes)"),
    Setting("sandbox.wall_s", float, 10.0, "wall-clock seconds before a run is killed"),
    Setting("sandbox.cpu_s", int, 5, "CPU seconds of a run"),
    Setting("sandbox.memory_bytes", int, 536_870_912, "address space of a run"),
    Setting("sandbox.processes", int, 16, "processes and threads inside the sandbox"),
    Setting("sandbox.open_files", int, 64, "open file descriptors of a run"),
    Setting("sandbox.file_bytes", int, 8_388_608, "largest file a run may write"),
    Setting("sandbox.tmp_bytes", int, 16_777_216,
            "size of the private /tmp, the only writable place"),
    Setting("sandbox.output_bytes", int, 65_536, "stdout + stderr kept; more stops the run"),
    Setting("sandbox.code_bytes", int, 65_536, "longest program the sandbox accepts"),
    Setting("knowledge.min_relevance", float, 0.37,
            "a mission whose router did not ask for documents uses the catalog's top chunks "
            "only when the best one's cosine to the question is at least this"),
    Setting("knowledge.cite_min", float, 0.41,
            "cosine of an answer sentence and a source's chunk for the pipeline to cite it"),
    Setting("learn.actor", str, "learner",
            "the actor that writes a method when a generative actor gets a selector it "
            "does not understand (selector 'learn'); empty: nobody learns"),
    Setting("learn.attempts", int, 3, "methods the learner writes for one selector before "
            "it gives up"),
    Setting("video.seconds", float, 5.0, "clip length of `batos video` (LA3: start with 5 s)"),
    Setting("video.fps", int, 24, "frames per second of a clip"),
    Setting("video.width", int, 512, "frame width in pixels (a multiple of 16)"),
    Setting("video.height", int, 320, "frame height in pixels (a multiple of 16)"),
    Setting("video.steps", int, 25, "denoising steps per section"),
    Setting("video.window", int, 9, "latent frames per section (FramePack's latent_window_size)"),
    Setting("video.cfg_scale", float, 7.0, "guidance at the keyframes"),
    Setting("video.drift_strength", float, 0.7,
            "guidance at the midpoint as a share of cfg_scale (anti-drift rescaling)"),
    Setting("video.checkpoint_every", int, 1,
            "sections per step; each section's latents are committed as a blob"),
    Setting("video.device", str, "auto", "device of the video pipeline: auto, cpu, cuda[:N]"),
    Setting("video.pipeline", str, "video", "the installed video pipeline's name in the image"),
    Setting("video.refine", bool, True, "refine the prompt with an LLM pass before the lease"),
    Setting("video.previews", bool, True, "a small PNG of each section's last frame, as made"),
    # -- the engine's backend and compute threads (actors.backends, actors.threads) --
    Setting("engine.backend", str, "auto",
            "generation backend: torch (transformers + peft), llama (llama.cpp on the "
            "image's GGUF), or auto (llama on CPU when installed and a GGUF is stored)"),
    Setting("engine.threads", int, 0,
            "compute threads for generation, the adapter merge and embeddings; "
            "0: the cores this process may use minus one for the kernel"),
)

_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


class Config(Mapping[str, Any]):
    """Resolved settings, read by dotted key: `config["steps.max_attempts"]`."""

    def __init__(self, values: Mapping[str, Any], path: Path | None = None) -> None:
        self._values = dict(values)
        self.path = path

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            raise ConfigError(key, "unknown setting")
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({self.path})"


def defaults() -> dict[str, Any]:
    """Every setting at its default (lists copied)."""
    return {s.key: _copy(s.default) for s in SETTINGS}


def load(
    image_dir: Path | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the configuration for the image in `image_dir`.

    `overrides` are CLI values by dotted key (already typed or as strings).
    """
    values = defaults()
    origins = dict.fromkeys(values, "the default")
    path = image_dir / CONFIG_FILE if image_dir is not None else None
    if path is not None and path.exists():
        _merge(values, origins, _read_file(path), str(path))
    _merge(values, origins, _from_environ(os.environ if environ is None else environ),
           "the environment")
    for key, raw in (overrides or {}).items():
        values[key] = _coerce(_setting(key, "command line"), raw, "command line")
        origins[key] = "command line"
    _check_meaning(values, origins)
    return Config(values, path)


def _merge(values: dict[str, Any], origins: dict[str, str], found: Mapping[str, Any],
           origin: str) -> None:
    values.update(found)
    origins.update(dict.fromkeys(found, origin))


def _check_meaning(values: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """Ranges and choices (kernel.config_rules), once every source is merged."""
    for key, value in values.items():
        problem = config_rules.problem_with(key, value)
        if problem is not None:
            raise ConfigError(key, f"{value!r} {problem} (from {origins[key]})")
    for check in config_rules.CROSS_CHECKS:
        found = check(values)
        if found is not None:
            key, problem = found
            raise ConfigError(key, f"{problem} (from {origins[key]})")


def write_default(image_dir: Path) -> Path:
    """Write `batos.toml` with every default and its comment, if absent."""
    path = image_dir / CONFIG_FILE
    if not path.exists():
        path.write_text(render(defaults()), encoding="utf-8")
    return path


def render(values: Mapping[str, Any]) -> str:
    """The TOML text of `values`, grouped by section, each key commented."""
    lines = ["# batos configuration. Every key is listed with its default.",
             "# Override with BATOS_<SECTION>_<KEY> variables or command-line flags.", ""]
    section = None
    for setting in SETTINGS:
        head, name = setting.key.split(".", 1)
        if head != section:
            if section is not None:
                lines.append("")
            lines.append(f"[{head}]")
            section = head
        lines.append(f"# {setting.comment}")
        lines.append(f"{name} = {_toml_value(values[setting.key])}")
    return "\n".join(lines) + "\n"


def parse_assignment(text: str) -> tuple[str, str]:
    """Split a `--set section.key=value` flag."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ConfigError(text, "expected section.key=value")
    _setting(key.strip(), "command line")
    return key.strip(), value


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigSyntaxError(str(path), str(exc)) from exc
    values: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(section, f"expected a [section] table in {path}")
        for name, value in table.items():
            key = f"{section}.{name}"
            values[key] = _coerce(_setting(key, str(path)), value, str(path))
    return values


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX) or var in CLI_VARIABLES:
            continue
        key = _env_key(var)
        if key is None:
            raise ConfigError(var, "no such setting (BATOS_<SECTION>_<KEY>)")
        values[key] = _coerce(_BY_KEY[key], raw, f"environment variable {var}")
    return values


def _env_key(var: str) -> str | None:
    wanted = var[len(ENV_PREFIX):].lower()
    for key in _BY_KEY:
        if key.replace(".", "_") == wanted:
            return key
    return None


def _setting(key: str, origin: str) -> Setting:
    setting = _BY_KEY.get(key)
    if setting is None:
        raise ConfigError(key, f"unknown setting (from {origin})")
    return setting


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    """Check or convert `value` to the setting's type; strings come from env/flags."""
    want = setting.type
    if isinstance(value, str) and want is not str:
        value = _parse_text(setting, value, origin)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if want is int and isinstance(value, bool):
        raise ConfigError(setting.key, f"expected int, got bool (from {origin})")
    if not isinstance(value, want):
        got = type(value).__name__
        raise ConfigError(setting.key, f"expected {want.__name__}, got {got} (from {origin})")
    if isinstance(value, list) and not all(isinstance(v, str) for v in value):
        raise ConfigError(setting.key, f"expected a list of strings (from {origin})")
    return value


def _parse_text(setting: Setting, text: str, origin: str) -> Any:
    want = setting.type
    try:
        if want is bool:
            return _parse_bool(text)
        if want is list:
            stripped = text.strip()
            if stripped.startswith("["):
                return json.loads(stripped)
            return [part.strip() for part in stripped.split(",") if part.strip()]
        return want(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(
            setting.key, f"expected {want.__name__}, got {text!r} (from {origin})"
        ) from exc


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value
