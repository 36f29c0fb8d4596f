"""The agent interface: ``ask()`` proposes a Candidate (None when it has nothing more to try),
``tell(candidate, result)`` reports what evaluating it gave. An agent's next proposal must depend only on
its seed and the results told so far (not on how often ``ask`` was called): a resumed run tells it the
stored results and continues the sequence without re-measuring them."""

from __future__ import annotations

import importlib
from typing import Callable, Protocol

from edgeprune.errors import EdgePruneError
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult


class Agent(Protocol):
    name: str

    def ask(self) -> Candidate | None: ...

    def tell(self, candidate: Candidate, result: EvalResult) -> None: ...


AgentFactory = Callable[..., Agent]
AGENTS: dict[str, AgentFactory] = {}
_MODULES = ("uniform", "random", "bo")


def register(name: str):
    def deco(factory: AgentFactory) -> AgentFactory:
        AGENTS[name] = factory
        return factory

    return deco


def make_agent(name: str, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, **options) -> Agent:
    """Build agent ``name`` for ``space``. ``latency_ratio`` is the target as a fraction of the baseline;
    ``options`` (e.g. ``clusters``, ``batch``) go to agents that take them and are ignored by the others."""
    for mod in _MODULES:
        importlib.import_module(f"edgeprune.search.agents.{mod}")
    if name not in AGENTS:
        raise EdgePruneError(f"unknown agent {name!r}; available: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](space, budget=budget, seed=seed, latency_ratio=latency_ratio, **options)


def agent_info(agent) -> dict:
    """What an agent reports about itself (clusters, phase switches) for the run report."""
    info = {"name": getattr(agent, "name", type(agent).__name__)}
    describe = getattr(agent, "describe", None)
    if callable(describe):
        info.update(describe())
    return info
