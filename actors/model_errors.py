"""Errors about models in the image (one root, `ModelError`, under the engine's)."""

from __future__ import annotations

from actors.llm import EngineError


class ModelError(EngineError):
    """Root of the errors about models in the image."""


class BadModelDirectory(ModelError):
    """A directory is not a loadable model of the asked kind; nothing was stored.

    `reason` is a stable code (`unknown_kind`, `not_a_directory`, `no_config`,
    `no_weights`, `no_tokenizer`, `no_chat_template`, `config_not_json`,
    `config_not_loadable`, `not_causal`, `not_transformers`, `bad_weights`); `problem`
    is for people."""

    def __init__(self, path: str, problem: str, reason: str = "bad_directory") -> None:
        super().__init__(f"model directory {path}: {problem}")
        self.path = path
        self.problem = problem
        self.reason = reason


class UnknownModel(ModelError):
    """The image holds no model of this name (run `batos init`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no model named {name!r} in the image (run `batos init`)")
        self.name = name


class EmbeddedModelMissing(ModelError):
    """A wheel carrying a default model is not installed, or lacks its files."""

    def __init__(self, package: str, problem: str) -> None:
        super().__init__(f"embedded model package {package}: {problem}")
        self.package = package
        self.problem = problem


class ConversionError(ModelError):
    """Converting a GGUF file into a transformers directory failed."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"cannot convert {source}: {problem}")
        self.source = source
        self.problem = problem
