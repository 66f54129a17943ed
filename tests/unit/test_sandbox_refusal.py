"""The sandbox refuses rather than run unconfined; what it is given is bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.code import CodeTooLarge, Sandbox, SandboxLimits, SandboxSettings, SandboxUnavailable


def test_no_bubblewrap_refuses_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    sandbox = Sandbox(SandboxSettings(bwrap=str(tmp_path / "no-bwrap")))
    with pytest.raises(SandboxUnavailable) as caught:
        sandbox.run(f"open({str(marker)!r}, 'w')")
    assert caught.value.reason and "no-bwrap" in caught.value.reason
    assert not marker.exists()


def test_a_wrapper_that_cannot_make_namespaces_refuses(tmp_path: Path) -> None:
    # `false` stands for a bwrap that fails to set up (no user namespaces): it
    # exits before anything runs, so the runner never reports that it started.
    marker = tmp_path / "ran"
    sandbox = Sandbox(SandboxSettings(bwrap="false"))
    with pytest.raises(SandboxUnavailable):
        sandbox.run(f"open({str(marker)!r}, 'w')")
    assert not marker.exists()


def test_an_interpreter_outside_reach_refuses() -> None:
    with pytest.raises(SandboxUnavailable) as caught:
        Sandbox(SandboxSettings(python="/nonexistent/bin/python3")).run("print(1)")
    assert "/nonexistent" in caught.value.reason


def test_code_longer_than_the_limit_is_refused() -> None:
    code = "print('more than ten bytes')"
    sandbox = Sandbox(SandboxSettings(limits=SandboxLimits(code_bytes=10)))
    with pytest.raises(CodeTooLarge) as caught:
        sandbox.run(code)
    assert (caught.value.size, caught.value.limit) == (len(code), 10)
