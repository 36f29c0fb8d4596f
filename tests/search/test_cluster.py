import numpy as np

from edgeprune.model.prune import analyse, group_importances
from edgeprune.model.zoo import resnet20
from edgeprune.search.cluster import contiguous_clusters, default_clusters, importance_features, ward_clusters


def test_ward_recovers_planted_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 5
    truth = np.repeat([0, 1, 2], 5)
    rng.shuffle(truth)
    feats = centres[truth] + rng.normal(0, 0.1, (15, 3))
    labels = ward_clusters(feats, 3)
    # Same partition as the truth, whatever the label names.
    assert len(set(zip(labels, truth))) == 3 and set(labels) == {0, 1, 2}
    assert labels[0] == 0  # renumbered by first appearance


def test_importance_features_separate_different_distributions():
    rng = np.random.default_rng(0)
    flat = [rng.uniform(0.5, 1.0, 64) for _ in range(3)]
    skewed = [rng.exponential(0.1, 64) for _ in range(3)]
    f = importance_features(flat + skewed)
    assert f.shape == (6, 12)
    assert np.allclose((f**2).sum(1), 1.0)  # square roots of probability vectors
    labels = ward_clusters(f, 2)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]


def test_features_from_a_real_model_and_defaults():
    model = resnet20().eval()
    a = analyse(model, (3, 32, 32))
    imps = group_importances(model, (3, 32, 32), a)
    assert [len(v) for v in imps] == [g.full for g in a.groups]
    assert default_clusters(12) == 3 and default_clusters(25) == 5 and default_clusters(2) == 2
    assert contiguous_clusters(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert ward_clusters(importance_features(imps), 12).tolist() == list(range(12))
