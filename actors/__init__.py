"""batos actors: cognitive roles, hardware stewards and the engine they share."""

# First: OpenMP reads its wait policy when torch or llama.cpp loads it.
from actors import threads as _threads  # noqa: F401
