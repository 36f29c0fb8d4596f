"""``uniform``: one keep fraction for every group, bisected until the latency target is just met."""

from __future__ import annotations

from edgeprune.search.agents.base import BaseAgent, register
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult


@register("uniform")
class UniformAgent(BaseAgent):
    """Bisection on a shared keep fraction k in [lo, hi]: a feasible k raises lo, an infeasible one lowers hi.
    Starts at k = latency_ratio (latency falls roughly with k², so this is usually feasible) and stops when
    the next k maps to widths already tried."""

    name = "uniform"

    def __init__(self, space: SearchSpace, *, budget: int, seed: int, latency_ratio: float, tol: float = 0.01):
        self.space, self.tol = space, tol
        self.lo, self.hi = 0.0, 1.0
        self._next = min(1.0, max(0.05, latency_ratio))
        self._tried: set[str] = set()

    def ask(self) -> Candidate | None:
        if self._next is None:
            return None
        cand = self.space.candidate([self._next] * self.space.dim, origin=f"uniform k={self._next:.4f}")
        # tell() never sets a next k whose widths were tried, so a repeat means the grid is resolved.
        return None if cand.key in self._tried else cand

    def tell(self, candidate: Candidate, result: EvalResult) -> None:
        self._narrow(candidate, bool(result.feasible))

    def tell_screened(self, candidate: Candidate, predicted_ratio: float) -> None:
        """A proposal the latency screen rejected: predicted too slow, so the bisection moves down."""
        self._narrow(candidate, False)

    def _narrow(self, candidate: Candidate, feasible: bool) -> None:
        self._tried.add(candidate.key)
        k = candidate.keep[0] if candidate.keep else 1.0
        if feasible:
            self.lo = max(self.lo, k)
        else:
            self.hi = min(self.hi, k)
        if self.hi - self.lo < self.tol:
            self._next = None
            return
        mid = (self.lo + self.hi) / 2
        cand = self.space.candidate([mid] * self.space.dim)
        # Skip midpoints whose widths were already measured: move towards the untried side.
        while cand.key in self._tried and self.hi - self.lo >= self.tol:
            if feasible:
                self.lo = mid
            else:
                self.hi = mid
            mid = (self.lo + self.hi) / 2
            cand = self.space.candidate([mid] * self.space.dim)
        self._next = mid if self.hi - self.lo >= self.tol else None
