import pytest
import torch

from edgeprune.model.evaluate import count_macs_params, recalibrate_bn
from edgeprune.model.prune import analyse, channel_counts, prune, replay_history
from edgeprune.model.zoo import mobilenet_v2, resnet20
from tests.conftest import tiny_resnet

SHAPE = (3, 32, 32)


def test_resnet20_has_twelve_groups_with_aligned_choices():
    a = analyse(resnet20(), SHAPE, round_to=8)
    assert len(a.groups) == 12
    assert a.ignored == ("fc",)
    for g in a.groups:
        assert g.choices[-1] == g.full
        assert all(c % 8 == 0 and c >= 8 for c in g.choices)


def test_width_picks_nearest_allowed_choice():
    g = analyse(resnet20(), SHAPE, round_to=8).groups[0]  # a 64-channel group
    assert g.full == 64
    assert g.width(0.5) == 32 and g.width(0.0) == 8 and g.width(1.0) == 64 and g.width(0.55) == 32


def test_prune_gives_exact_widths_and_history_replays():
    model = tiny_resnet()
    a = analyse(model, SHAPE, round_to=8)
    widths = tuple(g.choices[0] for g in a.groups)
    pruned, history = prune(model, SHAPE, a, widths)
    counts = channel_counts(pruned)
    for g, w in zip(a.groups, widths):
        assert counts[g.name] == w
    assert count_macs_params(pruned, SHAPE)[0] < count_macs_params(model, SHAPE)[0] / 3
    # The original model is untouched.
    assert channel_counts(model)["layer3.0.conv1"] == 64
    fresh = tiny_resnet()
    replay_history(fresh, history, SHAPE)
    fresh.load_state_dict(pruned.state_dict())
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), pruned(x), atol=1e-6)


def test_prune_keeps_the_largest_magnitude_channels():
    model = tiny_resnet()
    a = analyse(model, SHAPE, round_to=8)
    name = "layer1.0.conv1"
    idx = [g.name for g in a.groups].index(name)
    conv = dict(model.named_modules())[name]
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[3] = 1.0  # channel 3 has by far the largest L1 norm
    widths = tuple(8 if i == idx else g.full for i, g in enumerate(a.groups))
    pruned, _ = prune(model, SHAPE, a, widths)
    kept = dict(pruned.named_modules())[name].weight
    assert kept.shape[0] == 8
    assert any(torch.all(kept[i] == 1.0) for i in range(8))


def test_mobilenet_v2_depthwise_groups_prune_consistently():
    model = mobilenet_v2().eval()
    a = analyse(model, SHAPE, round_to=8)
    assert any(g.depthwise for g in a.groups)
    pruned, _ = prune(model, SHAPE, a, tuple(g.width(0.5) for g in a.groups))
    with torch.no_grad():
        assert pruned(torch.randn(1, *SHAPE)).shape == (1, 10)


def test_unsupported_layer_is_reported_and_left_whole():
    class WithEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = tiny_resnet()
            self.scale = torch.nn.Embedding(1, 10)

        def forward(self, x):
            return self.body(x) * self.scale.weight

    a = analyse(WithEmbedding().eval(), SHAPE)
    assert a.unsupported == ("scale (Embedding)",)
    assert len(a.groups) > 0


def test_recalibrate_bn_replaces_stale_statistics():
    model = tiny_resnet()
    model.bn1.running_mean.fill_(100.0)
    x = torch.randn(64, *SHAPE)
    recalibrate_bn(model, x)
    assert float(model.bn1.running_mean.abs().max()) < 10
    assert not model.training
    with pytest.raises(ValueError):
        prune(model, SHAPE, analyse(model, SHAPE), (8,))
