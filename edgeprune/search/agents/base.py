"""The agent interface: ``ask()`` proposes a Candidate (None when it has nothing more to try),
``tell(candidate, result)`` reports what evaluating it gave. Agents must be deterministic given their
seed and the sequence of results told, so that a resumed run replays them exactly."""

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
_MODULES = ("uniform", "random")


def register(name: str):
    def deco(factory: AgentFactory) -> AgentFactory:
        AGENTS[name] = factory
        return factory

    return deco


def make_agent(name: str, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float) -> Agent:
    """Build agent ``name`` for ``space``. ``latency_ratio`` is the target as a fraction of the baseline."""
    for mod in _MODULES:
        importlib.import_module(f"edgeprune.search.agents.{mod}")
    if name not in AGENTS:
        raise EdgePruneError(f"unknown agent {name!r}; available: {', '.join(sorted(AGENTS))}")
    return AGENTS[name](space, budget=budget, seed=seed, latency_ratio=latency_ratio)
