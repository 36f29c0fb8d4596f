"""Clustering of prunable groups (paper (a): Fan, Mu, Zhang, ECCV 2022).

Groups whose channel-importance distributions look alike are pruned alike: all groups of one cluster
share one keep fraction, which turns a 12–25-dimensional search into a k-dimensional one.
"""

from __future__ import annotations

import numpy as np

N_BINS = 12


def importance_features(importances: list[np.ndarray]) -> np.ndarray:
    """One feature row per group: the square root of the histogram of its channel importances, each
    scaled to [0, 1] by the group's maximum (shape n_groups × N_BINS).

    The square root (Hellinger embedding) makes the Euclidean distance used by Ward's criterion a proper
    divergence between the two distributions, close in ranking to Jensen–Shannon.
    """
    rows = []
    for imp in importances:
        v = np.asarray(imp, dtype=float)
        v = v / v.max() if v.size and v.max() > 0 else np.zeros_like(v)
        hist, _ = np.histogram(v, bins=N_BINS, range=(0.0, 1.0))
        rows.append(np.sqrt(hist / max(1, hist.sum())))
    return np.asarray(rows)


def structural_features(depth: np.ndarray, widths: np.ndarray, *, weight: float = 1.0) -> np.ndarray:
    """Two columns per group: relative depth in [0, 1] and log2 width scaled to [0, 1], times ``weight``.

    Importance histograms alone put layers of different stages and widths into one cluster (on ResNet-20:
    a 64-channel residual group with a 16-channel conv), where one shared keep fraction maps to very
    different channel grids; adding position and width keeps clusters to layers that prune alike.
    """
    depth = np.asarray(depth, dtype=float)
    rel = (depth - depth.min()) / max(1e-9, np.ptp(depth))
    lw = np.log2(np.asarray(widths, dtype=float))
    lw = (lw - lw.min()) / max(1e-9, np.ptp(lw))
    return weight * np.stack([rel, lw], 1)


def group_features(model, input_shape: tuple[int, ...], analysis) -> np.ndarray:
    """Clustering features of every analysed group (n_groups × (N_BINS + 2)): its importance histogram
    (``importance_features``) next to its relative depth and width (``structural_features``).

    With removable blocks (``analysis.blocks``, depth pruning) one row follows per block and one column is
    added ((n_groups + n_blocks) × (N_BINS + 3)): a block has no channel histogram (zeros), its depth, the
    smallest width, and 1 in the last column, so blocks cluster with blocks (a keep decision, not a width)."""
    from edgeprune.model.prune import group_importances

    return with_structure(model, analysis, importance_features(group_importances(model, input_shape, analysis)))


def with_structure(model, analysis, per_group: np.ndarray) -> np.ndarray:
    """Clustering rows: ``per_group`` (n_groups × k, one row per analysed group) next to each group's
    relative depth and width (``structural_features``); with removable blocks, one row per block follows
    (zeros in the k columns, its depth, the smallest width) and a last column that is 1 for blocks."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    blocks = analysis.blocks
    depth = np.array([order[g.name] for g in analysis.groups] + [order[b] for b in blocks])
    widths = np.array([g.full for g in analysis.groups] + [1] * len(blocks))
    per_group = np.asarray(per_group, dtype=float)
    if blocks:
        per_group = np.concatenate([per_group, np.zeros((len(blocks), per_group.shape[1]))])
    feats = np.concatenate([per_group, structural_features(depth, widths)], axis=1)
    if blocks:
        is_block = np.r_[np.zeros(len(analysis.groups)), np.ones(len(blocks))][:, None]
        feats = np.concatenate([feats, is_block], axis=1)
    return feats


def ward_clusters(features: np.ndarray, k: int) -> np.ndarray:
    """Labels 0..k'-1 (k' ≤ k) of Ward hierarchical clustering of the rows of ``features``."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(features)
    if k >= n:
        return np.arange(n)
    if k <= 1:
        return np.zeros(n, dtype=int)
    labels = fcluster(linkage(features, method="ward"), t=k, criterion="maxclust") - 1
    # Renumber by first appearance so labels are stable and dense.
    _, first = np.unique(labels, return_index=True)
    order = {lab: i for i, lab in enumerate(labels[np.sort(first)])}
    return np.array([order[lab] for lab in labels])


def contiguous_clusters(n: int, k: int) -> np.ndarray:
    """Structural fallback: k runs of consecutive groups (depth order)."""
    return np.minimum((np.arange(n) * min(k, n)) // max(1, n), min(k, n) - 1)


def default_clusters(n_groups: int) -> int:
    """k ≈ √n, between 2 and 8: 3 for ResNet-20 (12 groups), 5 for MobileNetV2 (25) and ResNet-56 (30)."""
    return int(min(n_groups, max(2, min(8, round(n_groups**0.5)))))
