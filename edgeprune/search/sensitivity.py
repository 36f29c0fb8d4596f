"""Clustering by sensitivity (``--cluster-by sensitivity``): groups that lose alike when cut are pruned alike.

The paper's clusters (``search.cluster``) come from the shape of each layer's channel-importance
distribution. What decides a group's keep fraction in a good strategy is how much accuracy it costs to cut
it and how much latency cutting it saves; the importance histogram says neither. Here each group is cut
alone to ``keep`` of its channels (adaptive BN, the search's own evaluator) and its accuracy drop measured
on a validation subset; groups cluster by that drop next to their position and width (the structural
columns of ``search.cluster``: latency per channel differs by stage). Cost: one prune + BN + accuracy per
group before the search (~1 s per group on ResNet-56 at 32×32), no latency measurement.
"""

from __future__ import annotations

import numpy as np

from edgeprune.search.cluster import structural_features
from edgeprune.types import Candidate

KEEP = 0.5


def group_drops(evaluator, analysis, *, keep: float = KEEP, samples: int = 500,
                device: str = "cpu") -> np.ndarray:
    """Accuracy drop (fraction; shape n_groups) of cutting each group alone to ``keep`` of its channels (the
    next narrower allowed width when that rounds to the full one), on the first ``samples`` images of
    ``evaluator.val``. The reference is the unpruned model after the same adaptive BN, so a drop is the
    cut's alone, not the recalibration's."""
    from edgeprune.model.evaluate import accuracy

    x, y = evaluator.val[0][:samples], evaluator.val[1][:samples]
    full = [g.full for g in analysis.groups] + [1] * len(analysis.blocks)
    base = accuracy(evaluator.build(Candidate(tuple(full)))[0], x, y, device=device)
    drops = []
    for i, g in enumerate(analysis.groups):
        widths = list(full)
        narrower = [c for c in g.choices if c < g.full]
        widths[i] = g.width(keep) if g.width(keep) < g.full or not narrower else max(narrower)
        pruned, _ = evaluator.build(Candidate(tuple(widths)))
        drops.append(base - accuracy(pruned, x, y, device=device))
    return np.asarray(drops, dtype=float)


def sensitivity_features(drops: np.ndarray, depth: np.ndarray, widths: np.ndarray, *,
                         weight: float = 2.0) -> np.ndarray:
    """Clustering rows (n_groups × 3): the accuracy drop scaled to [0, 1] by the largest, times
    ``weight`` (the drop decides first), then relative depth and log width (``structural_features``).

    The drop enters as its square root: drops are skewed (most groups lose a point or less, a few lose
    tens), and on the raw scale every mildly sensitive group would share one cluster with the harmless ones.
    """
    d = np.sqrt(np.clip(np.asarray(drops, dtype=float), 0.0, None))
    d = d / d.max() if d.max() > 0 else d
    return np.concatenate([weight * d[:, None], structural_features(depth, widths)], axis=1)


def clustering_features(model, analysis, drops: np.ndarray) -> np.ndarray:
    """``sensitivity_features`` of every analysed group, in ``analysis.groups`` order. With removable blocks
    one row follows per block, as in ``cluster.group_features``: drop 0, its depth, the smallest width and
    1 in an extra column, so blocks cluster with blocks."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    blocks = analysis.blocks
    depth = np.array([order[g.name] for g in analysis.groups] + [order[b] for b in blocks])
    widths = np.array([g.full for g in analysis.groups] + [1] * len(blocks))
    feats = sensitivity_features(np.r_[drops, np.zeros(len(blocks))], depth, widths)
    if blocks:
        is_block = np.r_[np.zeros(len(analysis.groups)), np.ones(len(blocks))][:, None]
        feats = np.concatenate([feats, is_block], axis=1)
    return feats
