"""What each setting may hold, beyond its type: ranges, choices and shapes.

`kernel.config` checks types as it reads each source; this table checks
meaning once every source is merged, so the message names the key, the value
and where that value came from (`batos.toml`, a variable, a flag). Every
setting has exactly one rule (a test holds the table to that); a rule returns
None when the value is fine, else the problem in words. Checks that involve
two keys live in `CROSS_CHECKS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Rule = Callable[[Any], str | None]

ACTOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
ENDPOINT = re.compile(r"ipc://.+|tcp://(\*|[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})")
ZEO_ADDRESS = re.compile(r"[A-Za-z0-9.\-]*:(\d{1,5})|.*/.*")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def between(low: float, high: float) -> Rule:
    """A number from `low` to `high`, both included (floats must be finite)."""
    def rule(value: Any) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if not low <= value <= high:
            return f"must be between {_num(low)} and {_num(high)}"
        return None
    return rule


def at_least(low: float) -> Rule:
    return between(low, math.inf)


def above_zero(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return None if value > 0 else "must be greater than 0"


def one_of(*choices: str) -> Rule:
    def rule(value: Any) -> str | None:
        return None if value.upper() in choices or value in choices else \
            f"must be one of {', '.join(choices)}"
    return rule


def actor_name(value: Any) -> str | None:
    if ACTOR_NAME.fullmatch(value):
        return None
    return "must be an actor name (a letter or _, then letters, digits, _ . -; at most 64)"


def actor_names(value: Any) -> str | None:
    bad = [name for name in value if actor_name(name) is not None]
    return f"{bad[0]!r} is not an actor name" if bad else None


def endpoints(value: Any) -> str | None:
    if not value:
        return "must list at least one endpoint"
    for endpoint in value:
        match = ENDPOINT.fullmatch(endpoint)
        if match is None:
            return f"{endpoint!r} is not ipc://PATH or tcp://HOST:PORT"
        if match.group(2) is not None and not 1 <= int(match.group(2)) <= 65535:
            return f"{endpoint!r}: the port must be between 1 and 65535"
    return None


def kernel_id(value: Any) -> str | None:
    if value == "" or ACTOR_NAME.fullmatch(value):
        return None
    return "must be empty (the host name) or a name: a letter or _, then letters, digits, _ . -"


def patterns(value: Any) -> str | None:
    bad = [p for p in value if not isinstance(p, str) or not p.strip()]
    return f"{bad[0]!r} is not an actor name pattern" if bad else None


def zeo_address(value: Any) -> str | None:
    if value == "":
        return None
    match = ZEO_ADDRESS.fullmatch(value)
    if match is None:
        return "must be empty, HOST:PORT or a unix socket path"
    port = match.group(1)
    if port is not None and not 1 <= int(port) <= 65535:
        return "the port must be between 1 and 65535"
    return None


def non_empty(value: Any) -> str | None:
    return None if value.strip() else "must not be empty"


def any_value(value: Any) -> str | None:
    """A boolean: its type says everything."""
    return None


RULES: dict[str, Rule] = {
    "image.zeo": zeo_address,
    "image.cache_size": at_least(1),
    "image.pack_days": at_least(0),
    "steps.max_attempts": between(1, 100),
    "steps.workers": between(1, 256),
    "steps.lanes": any_value,
    "steps.failure_log_size": at_least(0),
    "steps.max_interruptions": between(0, 100),
    "mailbox.capacity": between(1, 10_000_000),
    "kernel.endpoints": endpoints,
    "kernel.max_message_bytes": between(1024, 2**31 - 1),
    "kernel.heartbeat_ms": between(10, 3_600_000),
    "kernel.id": kernel_id,
    "leases.actors": patterns,
    "leases.ttl_s": between(1, 3600),
    "leases.renew_s": between(0.05, 600),
    "kernel.heartbeat_liveness": between(1, 100),
    "kernel.mission_entry": actor_name,
    "kernel.group_commit": any_value,
    "kernel.group_commit_delay_s": between(0, 1),
    "kernel.metrics_flush_s": between(0.01, 3600),
    "kernel.request_timeout_s": above_zero,
    "log.level": one_of(*LOG_LEVELS),
    "log.json": any_value,
    "audit.interval_s": between(0, 365 * 86_400),
    "audit.actor": actor_name,
    "thermal.limit_c": between(20, 120),
    "thermal.token_scale_margin": between(0, 50),
    "thermal.profile": one_of("gpu", "cpu", "auto"),
    "thermal.tdp_control": any_value,
    "thermal.tdp_throttle_fraction": between(0.05, 1),
    "thermal.max_wait_s": at_least(0),
    "thermal.poll_s": between(0.01, 3600),
    "adapters.staging_dir": non_empty,
    "adapters.hot_slots_bytes": at_least(0),
    "adapters.warm_bytes": at_least(0),
    "adapters.pinned": actor_names,
    "adapters.prefetch": any_value,
    "adapters.fuse_on_cpu": any_value,
    "missions.max_question_bytes": between(1, 16 * 1024 * 1024),
    "sandbox.bwrap": non_empty,
    "sandbox.python": non_empty,
    "sandbox.uid": between(0, 2**32 - 2),
    "sandbox.seccomp": any_value,
    "sandbox.warm": between(0, 16),
    "sandbox.wall_s": between(0.1, 86_400),
    "sandbox.cpu_s": between(1, 86_400),
    "sandbox.memory_bytes": between(16 * 1024 * 1024, 2**48),
    "sandbox.processes": between(1, 4096),
    "sandbox.open_files": between(16, 65_536),
    "sandbox.file_bytes": between(0, 2**40),
    "sandbox.tmp_bytes": between(64 * 1024, 2**40),
    "sandbox.output_bytes": between(1024, 2**30),
    "sandbox.code_bytes": between(1, 16 * 1024 * 1024),
    "knowledge.min_relevance": between(-1, 1),
    "knowledge.cite_min": between(-1, 1),
    "learn.actor": lambda value: None if value == "" else actor_name(value),
    "learn.attempts": between(1, 20),
    "video.seconds": between(0.1, 600),
    "video.fps": between(1, 240),
    "video.width": lambda value: _multiple_of_16(value, 16, 8192),
    "video.height": lambda value: _multiple_of_16(value, 16, 8192),
    "video.steps": between(1, 1000),
    "video.window": between(1, 64),
    "video.cfg_scale": between(0, 50),
    "video.drift_strength": between(0, 1),
    "video.checkpoint_every": between(1, 1000),
    "video.device": lambda value: None if re.fullmatch(r"auto|cpu|cuda(:\d+)?", value)
    else "must be auto, cpu, cuda or cuda:N",
    "video.pipeline": non_empty,
    "video.refine": any_value,
    "video.previews": any_value,
    "engine.backend": one_of("auto", "torch", "llama"),
    "engine.threads": between(0, 1024),
}


def _multiple_of_16(value: int, low: int, high: int) -> str | None:
    if not low <= value <= high or value % 16:
        return f"must be a multiple of 16 from {low} to {high}"
    return None


def _audit_interval(values: Mapping[str, Any]) -> tuple[str, str] | None:
    interval = values["audit.interval_s"]
    if 0 < interval < 1:
        return "audit.interval_s", "must be 0 (off) or at least 1 second"
    return None


def _heartbeat_window(values: Mapping[str, Any]) -> tuple[str, str] | None:
    window_s = values["kernel.heartbeat_ms"] * values["kernel.heartbeat_liveness"] / 1000
    if window_s > 3600:
        return ("kernel.heartbeat_liveness",
                f"heartbeat_ms x heartbeat_liveness is {window_s:.0f} s: a dead actor "
                "would hold its messages for over an hour")
    return None


def _lease_renewal(values: Mapping[str, Any]) -> tuple[str, str] | None:
    if values["leases.renew_s"] * 2 > values["leases.ttl_s"]:
        return ("leases.renew_s", "must be at most half of leases.ttl_s: one missed renewal "
                "must not let the leases expire")
    return None


CROSS_CHECKS: tuple[Callable[[Mapping[str, Any]], tuple[str, str] | None], ...] = (
    _audit_interval, _heartbeat_window, _lease_renewal,
)


def problem_with(key: str, value: Any) -> str | None:
    """What is wrong with `value` for `key` (None when fine or when no rule is known)."""
    rule = RULES.get(key)
    return rule(value) if rule is not None else None


def _num(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"
