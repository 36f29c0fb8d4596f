"""Roll-back (paper (a)): the search moves from k clusters to an intermediate number and then to every
group, each new dimension's bounds narrowed to the range the best strategies so far used.

A *phase* maps between the full per-group keep vector (length n, values in [0, 1]) and the phase's unit
cube (length d = number of clusters): group g takes ``lower[c] + x[c] * (upper[c] - lower[c])`` with
``c = assignment[g]``. Every observation is stored at full resolution, so projecting it into the next
phase (the cluster mean, rescaled to the new bounds) carries everything measured across the expansion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Phase:
    assignment: np.ndarray  # (n,) cluster index of each group
    lower: np.ndarray  # (d,) keep-fraction bounds of each cluster dimension
    upper: np.ndarray  # (d,)

    @property
    def dim(self) -> int:
        return len(self.lower)

    def to_full(self, x: np.ndarray) -> np.ndarray:
        """Unit-cube point(s) (..., d) → full keep vectors (..., n)."""
        keep = self.lower + np.asarray(x) * (self.upper - self.lower)
        return np.clip(keep[..., self.assignment], 0.0, 1.0)

    def from_full(self, keep: np.ndarray) -> np.ndarray:
        """Full keep vectors (..., n) → phase coordinates (..., d): the cluster mean, rescaled to the bounds.
        Points outside the narrowed bounds map outside [0, 1]; the GP still learns from them."""
        keep = np.asarray(keep, dtype=float)
        means = np.stack([keep[..., self.assignment == c].mean(-1) for c in range(self.dim)], -1)
        return (means - self.lower) / (self.upper - self.lower)


def initial_phase(assignment: np.ndarray) -> Phase:
    d = int(assignment.max()) + 1
    return Phase(np.asarray(assignment), np.zeros(d), np.ones(d))


def narrowed_phase(assignment: np.ndarray, best_keeps: np.ndarray, *, margin: float = 0.05,
                   min_width: float = 0.1) -> Phase:
    """A phase over ``assignment`` whose cluster c spans [min, max] of the keep fractions that the best
    strategies (rows of ``best_keeps``, n columns) gave its groups, padded by ``margin`` and at least
    ``min_width`` wide, within [0, 1]."""
    best_keeps = np.atleast_2d(best_keeps)
    d = int(assignment.max()) + 1
    lo, hi = np.zeros(d), np.ones(d)
    for c in range(d):
        vals = best_keeps[:, assignment == c]
        lo[c], hi[c] = vals.min() - margin, vals.max() + margin
        if hi[c] - lo[c] < min_width:
            mid = (hi[c] + lo[c]) / 2
            lo[c], hi[c] = mid - min_width / 2, mid + min_width / 2
        shift = max(0.0, -lo[c]) - max(0.0, hi[c] - 1.0)
        lo[c], hi[c] = max(0.0, lo[c] + shift), min(1.0, hi[c] + shift)
    return Phase(np.asarray(assignment), lo, hi)
