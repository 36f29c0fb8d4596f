"""Depth pruning: residual blocks with an identity shortcut found in the graph, dropped, and replayed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from edgeprune.export.onnx import export_verified
from edgeprune.model.depth import BLOCK, drop_blocks, dropped_blocks, is_identity_residual, removable_blocks
from edgeprune.model.prune import analyse, copy_model, prune, replay_history
from edgeprune.model.zoo import mobilenet_v2, resnet20
from edgeprune.search.cluster import group_features
from edgeprune.search.space import SearchSpace

SHAPE = (3, 32, 32)


class TorchvisionStyle(nn.Module):
    """torchvision's BasicBlock form: ``out += identity`` and a ReLU module after it."""

    def __init__(self, c: int, downsample: bool = False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.downsample = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)) if downsample else None

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Plain(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


class Doubled(nn.Module):
    """x + x is not a residual block: nothing is computed from the input on the other side."""

    def forward(self, x):
        return x + x


def test_identity_residuals_are_found_and_others_are_not():
    assert is_identity_residual(TorchvisionStyle(8))
    assert not is_identity_residual(TorchvisionStyle(8, downsample=True))  # a projection shortcut
    assert not is_identity_residual(Plain(8))
    assert not is_identity_residual(Doubled())
    # ResNet-20: every block but the first of stages 2 and 3 (strided, projection shortcuts)
    assert removable_blocks(resnet20(), SHAPE) == ("layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2",
                                                   "layer3.1", "layer3.2")
    mb = mobilenet_v2()
    found = removable_blocks(mb, SHAPE)
    assert found and all(mb.get_submodule(n).use_res for n in found)
    assert all(n in found for n, m in mb.named_modules() if getattr(m, "use_res", False))
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), TorchvisionStyle(8), TorchvisionStyle(8, True), Plain(8))
    assert removable_blocks(net, SHAPE) == ("1",)


def _analysis(model):
    a = analyse(model, SHAPE, round_to=8)
    return replace(a, blocks=removable_blocks(model, SHAPE))


def test_dropping_blocks_equals_identity_and_replays_on_a_fresh_model():
    torch.manual_seed(0)
    model = resnet20().eval()
    a = _analysis(model)
    space = SearchSpace.of(a)
    assert space.dim == len(a.groups) + 7
    assert [g.name for g in space.groups[len(a.groups):]] == [BLOCK + b for b in a.blocks]
    drop = {"layer1.1", "layer3.2"}
    widths = tuple(g.full for g in a.groups) + tuple(0 if b in drop else 1 for b in a.blocks)
    pruned, history = prune(model, SHAPE, a, widths)
    assert set(dropped_blocks(history)) == drop
    assert isinstance(pruned.layer1[1], nn.Identity) and not isinstance(model.layer1[1], nn.Identity)
    x = torch.randn(4, *SHAPE)
    reference = drop_blocks(copy_model(model), drop).eval()
    with torch.no_grad():
        assert torch.allclose(pruned.eval()(x), reference(x), atol=1e-6)
    # narrower too, then rebuilt from the history on a fresh model with the pruned weights
    cand = space.candidate([0.5] * len(a.groups) + [0.0, 1, 1, 1, 1, 1, 0.2])
    assert cand.widths[-7:] == (0, 1, 1, 1, 1, 1, 0)
    pruned, history = prune(model, SHAPE, a, cand.widths)
    fresh = replay_history(resnet20(), history, SHAPE)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned.eval()(x))
    # fewer ONNX nodes than the same widths without dropping: the fixed cost width pruning cannot touch
    keep_all = cand.widths[: len(a.groups)] + (1,) * 7
    n_drop = len(_onnx_nodes(pruned, x))
    n_keep = len(_onnx_nodes(prune(model, SHAPE, a, keep_all)[0], x))
    assert n_drop < n_keep
    with pytest.raises(ValueError, match="blocks"):
        prune(model, SHAPE, a, cand.widths[:-1])
    assert prune(model, SHAPE, a, cand.widths[: len(a.groups)])[1] == [h for h in history if not h[0].startswith("block:")]


def _onnx_nodes(model, x):
    import onnx

    data, _, verdict = export_verified(model, SHAPE, x)
    assert verdict.ok
    return onnx.load_from_string(data).graph.node


def test_blocks_get_their_own_feature_rows_and_column():
    model = resnet20().eval()
    a = _analysis(model)
    f = group_features(model, SHAPE, a)
    assert f.shape == (len(a.groups) + len(a.blocks), 12 + 3)
    assert (f[: len(a.groups), -1] == 0).all() and (f[len(a.groups):, -1] == 1).all()
    assert group_features(model, SHAPE, replace(a, blocks=())).shape == (len(a.groups), 14)


@pytest.mark.vision
@pytest.mark.parametrize("arch, shape, expect", [
    ("torchvision.models:resnet18", (3, 64, 64), ("layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1")),
    ("torchvision.models:mobilenet_v3_small", (3, 64, 64), None),
    ("torchvision.models:convnext_tiny", (3, 64, 64), None),
    ("timm:deit_tiny_patch16_224", (3, 224, 224), tuple(f"blocks.{i}" for i in range(12))),
])
def test_users_architectures_drop_blocks_and_verify(arch, shape, expect):
    """torchvision/timm blocks (``out += identity``, stochastic depth, layer scale, transformer blocks with
    two residual adds) are found, dropped after the channel surgery, and the result exports and verifies."""
    pytest.importorskip("torchvision")
    pytest.importorskip("timm")
    from edgeprune.model.arch import build as build_arch

    torch.manual_seed(0)
    model = build_arch(arch, {"num_classes": 10}).eval()
    blocks = removable_blocks(model, shape)
    if expect is not None:
        assert blocks == expect
    assert len(blocks) >= 4
    a = replace(analyse(model, shape, round_to=8, probe=False), blocks=blocks)
    widths = tuple(g.full for g in a.groups) + tuple(i % 2 for i in range(len(blocks)))  # every other dropped
    pruned, history = prune(model, shape, a, widths)
    assert len(dropped_blocks(history)) == (len(blocks) + 1) // 2
    x = torch.randn(2, *shape)
    data, _, verdict = export_verified(pruned, shape, x)
    assert verdict.ok
    fresh = replay_history(build_arch(arch, {"num_classes": 10}), history, shape)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), pruned.eval()(x), atol=1e-5)
