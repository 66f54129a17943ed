"""The engine's thread budget: its default, the configured value, passive waiting."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from actors import threads


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_default_leaves_one_core_to_the_kernel(cores: int, expected: int) -> None:
    assert threads.default_threads(cores) == expected
    assert threads.resolve(0, cores) == expected


@pytest.mark.parametrize(("setting", "cores"), [(1, 2), (2, 2), (3, 16), (8, 1)])
def test_a_configured_count_wins(setting: int, cores: int) -> None:
    assert threads.resolve(setting, cores) == setting


def test_negative_means_the_default() -> None:
    assert threads.resolve(-3, 4) == 3


def test_usable_cores_is_the_affinity() -> None:
    assert threads.usable_cores() == len(os.sched_getaffinity(0))


def policy_after_import(policy: str | None) -> str:
    """OMP_WAIT_POLICY in a fresh interpreter that imported `actors`."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    code = "import actors, os; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_importing_actors_sets_passive_waiting() -> None:
    assert policy_after_import(None) == "PASSIVE"


def test_an_operators_wait_policy_is_kept() -> None:
    assert policy_after_import("ACTIVE") == "ACTIVE"


def test_apply_sets_torchs_pool_and_current_reports_it() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        budget = threads.apply(1)
        assert (budget.threads, torch.get_num_threads()) == (1, 1)
        assert threads.current() == budget
        assert budget.wait_policy == "PASSIVE"
        budget = threads.apply(2)
        assert torch.get_num_threads() == 2 and threads.current().threads == 2
    finally:
        torch.set_num_threads(before)


def test_the_merge_thread_sees_the_same_budget() -> None:
    """torch's thread count is process-wide: a steward's prefetch thread uses it too."""
    import threading

    import torch

    before = torch.get_num_threads()
    seen: list[int] = []
    try:
        threads.apply(1)
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        worker.start()
        worker.join()
        assert seen == [1]
    finally:
        torch.set_num_threads(before)
