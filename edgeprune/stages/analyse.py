"""Stage 2, analyse: the model's prunable channel groups and the search space over them."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.errors import InfeasibleTargetError
from edgeprune.model.evaluate import count_macs_params
from edgeprune.model.prune import Analysis, analyse, channel_counts
from edgeprune.search.cluster import group_features
from edgeprune.search.space import SearchSpace
from edgeprune.stages.load import Inputs


@dataclass(frozen=True)
class Analysed:
    """The dependency analysis, the search space (one dimension per group) and the unpruned model's size."""

    analysis: Analysis
    space: SearchSpace
    macs: int
    params: int
    channels: dict

    def smallest(self):
        """The candidate that keeps the fewest channels the space allows in every group."""
        return self.space.candidate([0.0] * self.space.dim, origin="smallest")


def analyse_model(inputs: Inputs, rep) -> Analysed:
    model, shape = inputs.loaded.model, inputs.shape
    analysis = analyse(model, shape, round_to=inputs.profile.round_to)
    if analysis.unsupported:
        rep.warn(f"left unpruned (unsupported layers): {', '.join(analysis.unsupported)}")
    if not analysis.groups:
        raise InfeasibleTargetError("the model has no prunable channel groups")
    rep.info(f"{len(analysis.groups)} prunable groups; output layers kept whole: {', '.join(analysis.ignored)}")
    macs, params = count_macs_params(model, shape)
    features = group_features(model, shape, analysis)
    space = SearchSpace(analysis.groups, tuple(map(tuple, features.tolist())), macs)
    return Analysed(analysis, space, macs, params, channel_counts(model))
