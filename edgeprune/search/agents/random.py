"""``random``: independent random strategies around a random overall keep level."""

from __future__ import annotations

import numpy as np

from edgeprune.search.agents.base import BaseAgent, register
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult


def random_keep(rng: np.random.Generator, dim: int) -> tuple[float, np.ndarray]:
    """The random agent's draw: (overall keep level s ~ U(0.15, 1), per-group keep fractions
    s · exp(0.25 · N(0, 1)) clipped to [0, 1])."""
    s = float(rng.uniform(0.15, 1.0))
    return s, np.clip(s * np.exp(0.25 * rng.standard_normal(dim)), 0.0, 1.0)


@register("random")
class RandomAgent(BaseAgent):
    """Each candidate draws an overall keep level s ~ U(0.15, 1) and per-group keep fractions
    s · exp(0.25 · N(0, 1)), clipped to [0, 1]. Uniform per-group draws would almost never reach
    aggressive latency targets (the mean of many uniforms concentrates), hence the shared level."""

    name = "random"

    def __init__(self, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float):
        self.space, self.seed, self.told = space, seed, 0

    def ask(self) -> Candidate | None:
        # Keyed by (seed, number told): a resumed run that is told the stored results continues the sequence.
        rng = np.random.default_rng([self.seed, self.told])
        s, keep = random_keep(rng, self.space.dim)
        return self.space.candidate(keep.tolist(), origin=f"random s={s:.3f}")

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        self.told += 1

    def tell_screened(self, candidate: Candidate, predicted_ratio: float) -> None:
        """A proposal the latency screen rejected: the sequence moves on as after any told result."""
        self.told += 1
