"""The search space: one keep fraction per prunable group, mapped to an allowed channel count; with depth
pruning, one more per removable residual block, mapped to keep (1) or drop (0)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from edgeprune.model.depth import BLOCK
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

    @classmethod
    def of(cls, analysis, features=None, base_macs: int = 0) -> "SearchSpace":
        """The space of an analysis: its groups, then a keep/drop dimension per removable block
        (``block_dim``), in the order ``prune`` reads a candidate's widths."""
        return cls(tuple(analysis.groups) + tuple(block_dim(b) for b in analysis.blocks), features, base_macs)

    def keep_of(self, candidate: Candidate) -> list[float]:
        """The candidate's keep fractions (its own, else widths / full channels)."""
        return list(candidate.keep) if candidate.keep else [w / g.full for w, g in zip(candidate.widths, self.groups)]

    def full(self) -> Candidate:
        return Candidate(tuple(g.full for g in self.groups), (1.0,) * self.dim, "full")


def block_dim(name: str) -> PrunableGroup:
    """A removable block as a search dimension: "width" 1 keeps it, 0 drops it. A keep fraction below 0.5
    drops it (``PrunableGroup.width``: the nearer of 0 and 1, ties kept)."""
    return PrunableGroup(BLOCK + name, 1, (0, 1))
