"""LA3's Turing probe: the weights' dtype follows the device's compute capability."""

from __future__ import annotations

import pytest
import torch

from actors.video.pipeline import precision_for, resolve_device

# (compute capability, dtype): no bf16 below sm_80 (Turing is sm_75)
CAPABILITIES = [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                ((8, 9), torch.bfloat16), ((9, 0), torch.bfloat16)]


@pytest.mark.parametrize(("capability", "dtype"), CAPABILITIES)
def test_bf16_only_from_sm80(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                             dtype: torch.dtype) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    precision = precision_for("cuda:0")
    assert precision.dtype == dtype
    assert precision.attention == "native"  # never flash attention


def test_the_cpu_runs_float32() -> None:
    assert precision_for("cpu").dtype == torch.float32


@pytest.mark.parametrize(("setting", "available", "device"),
                         [("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"),
                          ("cuda:1", True, "cuda:1")])
def test_the_device_setting(monkeypatch: pytest.MonkeyPatch, setting: str, available: bool,
                            device: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device(setting) == device
