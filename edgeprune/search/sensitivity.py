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

from edgeprune.search.cluster import structural_features, with_structure
from edgeprune.types import Candidate

KEEP = 0.5


def group_drops(evaluator, analysis, *, keep: float = KEEP, samples: int = 500,
                device: str = "cpu") -> np.ndarray:
    """Accuracy drop (fraction; shape n_groups) of cutting each group alone to ``keep`` of its channels (the
    next narrower allowed width when that rounds to the full one), on the first ``samples`` images of
    ``evaluator.val``. The reference is the unpruned model after the same adaptive BN, so a drop is the
    cut's alone, not the recalibration's."""
    x, y = evaluator.val[0][:samples], evaluator.val[1][:samples]
    # Group 0 "cut" to its full width: the unpruned model, through the same adaptive BN.
    base = accuracy_cut_alone(evaluator, analysis, 0, analysis.groups[0].full, x, y, device=device)
    drops = []
    for i, g in enumerate(analysis.groups):
        narrower = [c for c in g.choices if c < g.full]
        w = g.width(keep)
        w = w if w < g.full or not narrower else max(narrower)
        drops.append(base - accuracy_cut_alone(evaluator, analysis, i, w, x, y, device=device))
    return np.asarray(drops, dtype=float)


def accuracy_cut_alone(evaluator, analysis, i: int, width: int, x, y, *, device: str = "cpu") -> float:
    """Accuracy (fraction) on images ``x`` (N×C×H×W), labels ``y`` of the model with group ``i`` cut to
    ``width`` channels and every other group whole (every removable block kept), after the evaluator's
    adaptive BN (``CandidateEvaluator.build``). Used by ``group_drops`` and by ``edgeprune analyze``."""
    from edgeprune.model.evaluate import accuracy

    widths = [g.full for g in analysis.groups] + [1] * len(analysis.blocks)
    widths[i] = width
    return accuracy(evaluator.build(Candidate(tuple(widths)))[0], x, y, device=device)


def sensitivity_features(drops: np.ndarray, depth: np.ndarray, widths: np.ndarray, *,
                         weight: float = 2.0) -> np.ndarray:
    """Clustering rows (n_groups × 3): the accuracy drop scaled to [0, 1] by the largest, times
    ``weight`` (the drop decides first), then relative depth and log width (``structural_features``).

    The drop enters as its square root: drops are skewed (most groups lose a point or less, a few lose
    tens), and on the raw scale every mildly sensitive group would share one cluster with the harmless ones.
    """
    return np.concatenate([drop_column(drops, weight), structural_features(depth, widths)], axis=1)


def drop_column(drops: np.ndarray, weight: float = 2.0) -> np.ndarray:
    """The drop column of ``sensitivity_features`` (n × 1): square root of the drop (negatives as 0),
    scaled to [0, ``weight``] by the largest."""
    d = np.sqrt(np.clip(np.asarray(drops, dtype=float), 0.0, None))
    d = d / d.max() if d.max() > 0 else d
    return weight * d[:, None]


def clustering_features(model, analysis, drops: np.ndarray) -> np.ndarray:
    """``sensitivity_features`` of every analysed group, in ``analysis.groups`` order, laid out like the
    importance features (``cluster.with_structure``): with removable blocks one row follows per block
    (drop 0, its depth, the smallest width, 1 in an extra column), so blocks cluster with blocks."""
    return with_structure(model, analysis, drop_column(drops))
