"""The search space: one keep fraction per prunable group, mapped to an allowed channel count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from edgeprune.model.prune import PrunableGroup
from edgeprune.types import Candidate


@dataclass(frozen=True)
class SearchSpace:
    """``features``: one row per group describing it for clustering (e.g. its importance histogram);
    ``base_macs``: the unpruned model's MACs (for agents that constrain FLOPs)."""

    groups: tuple[PrunableGroup, ...]
    features: tuple[tuple[float, ...], ...] | None = None
    base_macs: int = 0

    @property
    def dim(self) -> int:
        return len(self.groups)

    def candidate(self, keep: Sequence[float], origin: str = "") -> Candidate:
        """Map keep fractions in [0, 1] (one per group) to a Candidate of allowed widths."""
        if len(keep) != self.dim:
            raise ValueError(f"expected {self.dim} keep fractions, got {len(keep)}")
        k = tuple(min(1.0, max(0.0, float(v))) for v in keep)
        return Candidate(tuple(g.width(v) for g, v in zip(self.groups, k)), k, origin)

    def full(self) -> Candidate:
        return Candidate(tuple(g.full for g in self.groups), (1.0,) * self.dim, "full")
