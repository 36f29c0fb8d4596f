import numpy as np
import torch

from edgeprune.data import load_data
from edgeprune.data.builtin import SHAPE_CLASSES, make_digits, make_shapes


def test_shapes_is_deterministic_balanced_and_in_range():
    x1, y1 = make_shapes(500, seed=3)
    x2, y2 = make_shapes(500, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (500, 3, 32, 32) and x1.dtype == torch.float32
    assert 0.0 <= float(x1.min()) and float(x1.max()) <= 1.0
    counts = torch.bincount(y1, minlength=len(SHAPE_CLASSES))
    assert counts.min() > 25  # every class present, roughly balanced
    x3, _ = make_shapes(500, seed=4)
    assert not torch.equal(x1, x3)


def test_shapes_classes_differ_in_mean_image():
    # The class pattern must leave a signal: mean images of two classes differ beyond noise.
    x, y = make_shapes(2000, seed=0)
    centre = x[:, :, 8:24, 8:24].std(dim=(1, 2, 3))
    means = torch.stack([centre[y == k].mean() for k in range(10)])
    assert float(means.max() - means.min()) > 0.01


def test_digits_are_real_upsampled_digits():
    x, y = make_digits()
    assert x.shape == (1797, 3, 32, 32)
    assert set(np.unique(y.numpy())) == set(range(10))


def test_splits_are_disjoint_and_deterministic():
    d = load_data("digits")
    assert d.num_classes == 10 and d.input_shape == (3, 32, 32)
    n = len(d.train[1]) + len(d.val[1]) + len(d.calib[1])
    assert n == 1797
    # Disjoint: no validation image appears in train (rows compared exactly).
    train_rows = {tuple(r.tolist()) for r in d.train[0][:, 0, 16, :]}
    assert not any(tuple(r.tolist()) in train_rows for r in d.val[0][:50, 0, 16, :])
    load_data.cache_clear()
    d2 = load_data("digits")
    assert torch.equal(d.val[0], d2.val[0])


def test_shapes_hard_has_twenty_distinct_classes_and_is_harder():
    from edgeprune.data.builtin import HARD_CLASSES, _hard_score

    assert len(HARD_CLASSES) == 20 and HARD_CLASSES[:10] == SHAPE_CLASSES
    x1, y1 = make_shapes(600, seed=5, hard=True)
    x2, y2 = make_shapes(600, seed=5, hard=True)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (600, 3, 32, 32) and 0.0 <= float(x1.min()) and float(x1.max()) <= 1.0
    assert torch.bincount(y1, minlength=20).min() > 10
    # every finer variant is a different pattern from the class it varies (masks differ on the grid)
    g = np.linspace(-1, 1, 64, dtype=np.float32)
    v, u = np.meshgrid(g, g, indexing="ij")
    for k in range(10, 20):
        assert np.mean((_hard_score(k, u, v) > 0) != (_hard_score(k - 10, u, v) > 0)) > 0.03, HARD_CLASSES[k]
    # harder: a nearest-class-mean classifier on raw pixels does worse than on shapes (chance 10% vs 5%)
    def centroid_accuracy(hard):
        x, y = make_shapes(4000, seed=6, hard=hard)
        xf = x.reshape(len(x), -1)
        k = int(y.max()) + 1
        means = torch.stack([xf[:3000][y[:3000] == c].mean(0) for c in range(k)])
        return float((torch.cdist(xf[3000:], means).argmin(1) == y[3000:]).float().mean())
    assert centroid_accuracy(True) < centroid_accuracy(False)


def test_shapes_hard_loads_as_a_builtin():
    d = load_data("shapes-hard")
    assert d.num_classes == 20 and d.input_shape == (3, 32, 32)
    assert (len(d.train[1]), len(d.val[1]), len(d.calib[1])) == (21000, 4000, 1000)
