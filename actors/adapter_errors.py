"""Errors about persona adapters (one root, `AdapterError`, under the engine's).

`AdapterRefused` and its children say why a folder was not ingested; each
carries a stable `kind` for reports and the CLI.
"""

from __future__ import annotations

from actors.llm import EngineError


class AdapterError(EngineError):
    """Root of the errors about persona adapters."""


class AdapterRefused(AdapterError):
    """A folder cannot be ingested; nothing was written. `kind` names the reason."""

    kind = "refused"

    def __init__(self, folder: str, problem: str) -> None:
        super().__init__(f"adapter folder {folder}: {problem}")
        self.folder = folder
        self.problem = problem


class WrongBaseModel(AdapterRefused):
    """The adapter was made for another base model than the image's."""

    kind = "wrong-base-model"


class CorruptAdapter(AdapterRefused):
    """The adapter's files are damaged (bad header, truncated, not JSON)."""

    kind = "corrupt"


class IncompatibleAdapter(AdapterRefused):
    """The adapter's config or tensors are not a plain LoRA the steward can wear."""

    kind = "incompatible"


class NoBaseModel(AdapterRefused):
    """The image holds no base model to check adapters against (run `batos init`)."""

    kind = "no-base-model"


class UnknownAdapter(AdapterError):
    """The registry holds no adapter of this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no adapter named {name!r} in the image")
        self.name = name
