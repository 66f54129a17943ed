"""batos actors: cognitive roles, hardware stewards and the engine they share."""
