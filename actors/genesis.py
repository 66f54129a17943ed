"""Genesis of this package's actors: the `batos.actors` entry point.

The kernel calls `install(root, config)` at every genesis; it must be
idempotent. It first adds the mission state prototypes to
`root["prototypes"]`, then builds each actor of `ACTORS` that is absent, so
an operator's changes to a live actor or prototype survive a restart.

The mission pipeline (see `actors.mission`):

    missions.start -> hippocampus.recall -> router.route -> drafter.draft
    -> critic.critique -> synthesizer.synthesize -> scorer.score
    -> (critic.critique -> synthesizer.synthesize -> scorer.score, at most twice)
    -> hippocampus.memorize -> missions.complete
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors.memory import Hippocampus
from actors.mission import Missions, install_states
from actors.roles import Critic, Drafter, Router, Scorer, Synthesizer
from actors.thermal import ThermalActor

# name -> factory(config) -> actor object.
ACTORS: dict[str, Callable[[Any], Any]] = {
    "missions": lambda config: Missions(),
    "hippocampus": lambda config: Hippocampus(),
    "router": Router,
    "drafter": Drafter,
    "critic": Critic,
    "synthesizer": Synthesizer,
    "scorer": lambda config: Scorer(),
    "thermal": ThermalActor,
}


def install(root: Any, config: Any) -> list[str]:
    """Create every missing prototype and actor of this package; returns their names."""
    created = install_states(root["prototypes"])
    for name, factory in ACTORS.items():
        if name not in root["actors"]:
            root["actors"][name] = factory(config)
            created.append(name)
    return created
