import numpy as np

from edgeprune.search.cluster import ward_clusters
from edgeprune.search.sensitivity import sensitivity_features


def test_groups_cluster_by_how_much_they_lose_when_cut():
    # Six groups of one stage (same width, neighbouring depths): three harmless, three that lose a lot.
    drops = np.array([0.002, 0.30, 0.001, 0.25, 0.004, 0.35])
    feats = sensitivity_features(drops, depth=np.arange(6), widths=np.full(6, 16))
    assert feats.shape == (6, 3) and feats[:, 0].max() == 2.0  # drop column scaled to the weight
    labels = ward_clusters(feats, 2)
    assert len(set(labels[[0, 2, 4]])) == 1 and len(set(labels[[1, 3, 5]])) == 1 and labels[0] != labels[1]


def test_square_root_keeps_mild_drops_apart_from_harmless_ones():
    # One group loses 40 points; on a linear scale 0.0 and 0.04 would sit 0.2 apart, with the root 0.63.
    f = sensitivity_features(np.array([0.0, 0.04, 0.4]), depth=np.zeros(3), widths=np.full(3, 8), weight=1.0)
    assert np.isclose(f[1, 0] - f[0, 0], np.sqrt(0.1))
    assert np.allclose(f[:, 1:], 0.0)  # one depth, one width: the structural columns say nothing


def test_negative_drops_count_as_harmless():
    f = sensitivity_features(np.array([-0.01, 0.0, 0.09]), depth=np.arange(3), widths=np.full(3, 8), weight=1.0)
    assert f[0, 0] == f[1, 0] == 0.0 and f[2, 0] == 1.0


def test_a_trained_resnet_is_most_sensitive_where_the_residual_stream_is_cut():
    """examples/resnet20.pt (trained on shapes): cutting the last stage's residual channels to half costs
    tens of points, a block's inner convolution about nothing — what the features must tell apart."""
    from pathlib import Path

    from edgeprune.data import load_data
    from edgeprune.model.load import load_model
    from edgeprune.model.prune import analyse
    from edgeprune.search.evaluate import CandidateEvaluator
    from edgeprune.search.sensitivity import group_drops

    loaded = load_model(Path(__file__).resolve().parents[2] / "examples" / "resnet20.pt")
    data = load_data("shapes", input_shape=(3, 32, 32))
    a = analyse(loaded.model, (3, 32, 32), round_to=8)
    # Only val, build and model are used: no latency is measured (meter None).
    ev = CandidateEvaluator(loaded.model, (3, 32, 32), a, (data.val[0][:300], data.val[1][:300]),
                            data.calib[0][:100], None, 0.5, 1.0)
    drops = dict(zip((g.name for g in a.groups), group_drops(ev, a, samples=300)))
    inner = [d for name, d in drops.items() if name.endswith(".conv1")]
    assert drops["layer3.0.shortcut.0"] >= 0.10 and drops["layer3.0.shortcut.0"] > max(inner)
    assert np.median(inner) < 0.03
