"""Stage 2, analyse: the model's prunable channel groups and the search space over them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from edgeprune.errors import InfeasibleTargetError
from edgeprune.model.depth import removable_blocks
from edgeprune.model.evaluate import count_macs_params
from edgeprune.model.prune import Analysis, analyse, channel_counts
from edgeprune.search.cluster import group_features
from edgeprune.search.space import SearchSpace
from edgeprune.stages.load import Inputs


@dataclass(frozen=True)
class Analysed:
    """The dependency analysis, the search space (one dimension per group, and per removable block with
    depth pruning) and the unpruned model's size."""

    analysis: Analysis
    space: SearchSpace
    macs: int
    params: int
    channels: dict
    # --cluster-by sensitivity: each group's accuracy drop (fraction) when cut alone to half its channels.
    group_drops: tuple[float, ...] | None = None

    def smallest(self):
        """The candidate that keeps the fewest channels the space allows in every group (and drops every
        removable block)."""
        return self.space.candidate([0.0] * self.space.dim, origin="smallest")


def analyse_model(inputs: Inputs, rep) -> Analysed:
    model, shape = inputs.loaded.model, inputs.shape
    analysis = analyse(model, shape, round_to=inputs.profile.round_to)
    if analysis.unsupported:
        rep.warn(f"left unpruned (unsupported layers): {', '.join(analysis.unsupported)}")
    if analysis.frozen:
        shown = "; ".join(f"{n}: {why}" for n, why in analysis.frozen[:3])
        more = f" (and {len(analysis.frozen) - 3} more; all in report.json, analysis.frozen)" if len(analysis.frozen) > 3 else ""
        rep.warn(f"{len(analysis.frozen)} channel groups kept whole: {shown}{more}")
    if not analysis.groups:
        why = "; ".join(f"{n}: {r}" for n, r in analysis.frozen[:5])
        raise InfeasibleTargetError("nothing in the model can be pruned: no channel group can be pruned safely"
                                    + (f" ({why})" if why else " (every conv/linear is an output layer or too narrow)"))
    rep.info(f"{len(analysis.groups)} prunable groups; output layers kept whole: {', '.join(analysis.ignored)}")
    if inputs.cfg.depth:
        analysis = replace(analysis, blocks=removable_blocks(model, shape))
        rep.info(f"depth pruning: {len(analysis.blocks)} residual blocks with an identity shortcut may be dropped"
                 + (f" ({', '.join(analysis.blocks)})" if analysis.blocks else " (none found: widths only)"))
    macs, params = count_macs_params(model, shape)
    features = group_features(model, shape, analysis)
    space = SearchSpace.of(analysis, tuple(map(tuple, features.tolist())), macs)
    return Analysed(analysis, space, macs, params, channel_counts(model))


def cluster_by_sensitivity(analysed: Analysed, evaluator, model, rep, *, device: str = "cpu") -> Analysed:
    """``analysed`` with clustering features from each group's sensitivity (``search.sensitivity``): one
    prune + adaptive BN + accuracy per group, with the search's evaluator, before the search. Deterministic
    (fixed images, no measurement), so a resumed run clusters the same way."""
    from edgeprune.search.sensitivity import KEEP, clustering_features, group_drops

    drops = group_drops(evaluator, analysed.analysis, device=device)
    feats = clustering_features(model, analysed.analysis, drops)
    space = replace(analysed.space, features=tuple(map(tuple, feats.tolist())))
    worst = sorted(zip(drops, (g.name for g in analysed.analysis.groups)), reverse=True)[:3]
    rep.info(f"clusters by sensitivity: {len(drops)} groups cut alone to {KEEP:g}; most sensitive "
             + ", ".join(f"{n} (−{100 * d:.1f} points)" for d, n in worst))
    return replace(analysed, space=space, group_drops=tuple(round(float(d), 4) for d in drops))
