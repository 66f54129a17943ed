"""This package's `batos` commands (the `batos.cli` entry point)."""

from __future__ import annotations

from typing import Any


def register(app: Any) -> None:
    """Add the actor package's commands to the `batos` typer app."""
