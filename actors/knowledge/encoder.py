"""The one sentence encoder the catalog uses: the MiniLM the image holds.

Inside a kernel it is the engine's embedder (`actors.llm.embedder()`), the
very instance memory and scoring use. A CLI that opens the image itself
(no kernel running) loads the same model from the image's blobs once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from actors import llm


def encode(texts: Sequence[str], embedder: llm.Embedder | None = None) -> np.ndarray:
    """Unit-normalised float32 vectors, one row per text."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    source = embedder if embedder is not None else llm.embedder()
    if isinstance(source, ImageEncoder):
        return source.embed_array(texts)
    return np.asarray(source.embed(list(texts)), dtype=np.float32)


class ImageEncoder:
    """The image's `embedding` model, loaded in this process (an `llm.Embedder`)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    @classmethod
    def load(cls, image: Any, name: str = "embedding") -> ImageEncoder:
        from sentence_transformers import SentenceTransformer

        from actors.models import UnknownModel, materialize

        with image.reading() as root:
            record = root["models"].get(name)
            if record is None:
                raise UnknownModel(name)
            directory = materialize(record)
        return cls(SentenceTransformer(str(directory), device="cpu", local_files_only=True))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_array(texts).tolist()

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return np.asarray(self.model.encode(list(texts), normalize_embeddings=True,
                                                convert_to_numpy=True,
                                                show_progress_bar=False), dtype=np.float32)
