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

from actors.audit import Auditor
from actors.code.coder import Coder
from actors.code.learn import Learner
from actors.knowledge.actor import KnowledgeActor
from actors.memory import Hippocampus
from actors.mission import Missions, install_states
from actors.roles import Critic, Drafter, PassActor, Router, Scorer, Synthesizer
from actors.steward import StewardActor
from actors.thermal import ThermalActor, ThermalSettings
from actors.video.actor import VideoActor

# name -> factory(config) -> actor object.
ACTORS: dict[str, Callable[[Any], Any]] = {
    "missions": Missions,
    "hippocampus": lambda config: Hippocampus(),
    "router": Router,
    "drafter": Drafter,
    "critic": Critic,
    "synthesizer": Synthesizer,
    "scorer": lambda config: Scorer(),
    "thermal": ThermalActor,
    "auditor": lambda config: Auditor(),
    "steward": StewardActor,
    "knowledge": KnowledgeActor,
    "coder": Coder,
    "learner": Learner,
    "video": VideoActor,
}


def install(root: Any, config: Any) -> list[str]:
    """Create every missing prototype and actor of this package; returns their names.

    Actors that copy settings from the configuration get the current ones, so
    an edited `batos.toml` takes effect at the next start.
    """
    created = install_states(root["prototypes"])
    for name, factory in ACTORS.items():
        actor = root["actors"].get(name)
        if actor is None:
            actor = root["actors"][name] = factory(config)
            created.append(name)
        else:
            refresh_settings(actor, config)
        _create_counters(root["metrics"], getattr(type(actor), "counters", ()))
    return created


def _create_counters(metrics: Any, names: tuple[str, ...]) -> None:
    """Create the counters an actor's steps move (at zero, once): see `PassActor.counters`."""
    for name in names:
        if metrics.counters.get(name) is None:
            metrics.incr(name, 0)


def refresh_settings(actor: Any, config: Any) -> None:
    """Copy the current settings into an actor that keeps them (if changed): `thermal.*`,
    `missions.max_question_bytes`, the sandbox, learning and `knowledge.*` settings,
    `video.*`."""
    if isinstance(actor, PassActor | Missions | Coder | Learner | VideoActor | KnowledgeActor):
        actor.configure(config)
    elif isinstance(actor, ThermalActor):
        settings = ThermalSettings.from_mapping(config).to_mapping()
        if actor.settings != settings:
            actor.settings = settings
