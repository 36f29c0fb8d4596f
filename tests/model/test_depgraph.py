"""The dependency-graph walk that builds a pruning group (edgeprune.model.depgraph): the same groups as
Torch-Pruning's own walk, without its path explosion on residuals that slice and re-concatenate channels."""

import torch
from torch import nn

from edgeprune.export.onnx import export_verified
from edgeprune.model.depgraph import dependency_graph
from edgeprune.model.prune import analyse, prune

SHAPE = (3, 16, 16)


class SliceResidual(nn.Module):
    """timm ReXNet's unit: expand → depthwise → project to more channels, the shortcut added to the first
    ``cin`` channels only (slice, add, concatenate)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.cin = cin
        self.exp = nn.Sequential(nn.Conv2d(cin, 2 * cin, 1, bias=False), nn.BatchNorm2d(2 * cin), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(2 * cin, 2 * cin, 3, padding=1, groups=2 * cin, bias=False),
                                nn.BatchNorm2d(2 * cin), nn.ReLU())
        self.pwl = nn.Sequential(nn.Conv2d(2 * cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.pwl(self.dw(self.exp(x)))
        return torch.cat([y[:, : self.cin] + x, y[:, self.cin:]], dim=1)


class SliceResidualNet(nn.Module):
    def __init__(self, depth: int):
        super().__init__()
        widths = [16 + 8 * i for i in range(depth + 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks = nn.Sequential(*(SliceResidual(a, b) for a, b in zip(widths, widths[1:])))
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def _canonical(group, names):
    """{(target, handler): sorted indices} of a built group."""
    return {(names.get(it.dep.target.module, str(it.dep.target)), str(it.dep.handler)): sorted(it.idxs)
            for it in group}


def _roots(dg):
    for m in list(dg.module2node):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            pruner = dg.get_pruner_of_module(m)
            n = pruner.get_out_channels(m)
            if n:
                yield m, pruner, list(range(n))


def test_groups_equal_torch_pruning_own_walk_on_slice_residuals():
    model = SliceResidualNet(depth=4).eval()
    dg = dependency_graph(model, SHAPE)
    names = dg._module2name
    checked = 0
    for m, pruner, idxs in _roots(dg):
        ours = dg.get_pruning_group(m, pruner.prune_out_channels, idxs)
        theirs = dg.torch_pruning_get_pruning_group(m, pruner.prune_out_channels, idxs)
        assert _canonical(ours, names) == _canonical(theirs, names), names[m]
        assert ours[0].dep.target.module is m  # the root stays first: callers read it from there
        # Every index keeps a root index (where several root channels reach one channel, Torch-Pruning's
        # walk and this one may name different ones; importance adds a channel's magnitude to its root's).
        roots = set(ours[0].idxs)
        for it in ours:
            assert len(it.root_idxs) == len(it.idxs) and set(it.root_idxs) <= roots
        checked += 1
    assert checked == 1 + 3 * 4 + 1


def test_deep_slice_residual_chain_is_analysed_pruned_and_exported():
    # 16 blocks, as ReXNet-1.0 has: Torch-Pruning's own walk doubles its paths at every block (timm's
    # rexnet_100 did not finish one group in 10 minutes); the stem's group reaches every block's shortcut.
    model = SliceResidualNet(depth=16).eval()
    dg = dependency_graph(model, SHAPE)
    pruner = dg.get_pruner_of_module(model.stem[0])
    group = dg.get_pruning_group(model.stem[0], pruner.prune_out_channels, list(range(16)))
    touched = {dg._module2name.get(it.dep.target.module) for it in group}
    assert {f"blocks.{i}.exp.0" for i in range(16)} <= touched
    assert {f"blocks.{i}.pwl.0" for i in range(16)} <= touched

    # Every block's expansion (its 1×1 expand and depthwise) is searched; the chain through the shortcuts is
    # one group, coupled to the stem, refused at its smallest width (the stem would lose every channel).
    a = analyse(model, SHAPE, round_to=8)
    assert {g.name for g in a.groups} == {f"blocks.{i}.dw.0" for i in range(16)}
    assert [n for n, _ in a.frozen] == ["blocks.15.pwl.0"]
    pruned, _ = prune(model, SHAPE, a, tuple(g.width(0.5) for g in a.groups))
    assert [b.exp[0].out_channels for b in pruned.blocks] == [g // 2 for g in range(32, 32 + 16 * 16, 16)]
    _, _, verdict = export_verified(pruned, SHAPE, torch.randn(2, *SHAPE))
    assert verdict.ok


class TwoBranchConcat(nn.Module):
    """Two convs concatenated, then a 1×1 over both: pruning one branch moves the other's channels in the
    concatenation, so the index mapping must be recomputed before the second group is built."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(3, 24, 3, padding=1)
        self.mix = nn.Conv2d(40, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.mix(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


def test_index_mappings_are_recomputed_after_pruning_only():
    model = TwoBranchConcat().eval()
    dg = dependency_graph(model, SHAPE)
    assert dg.edgeprune_mapped
    pa, pb = dg.get_pruner_of_module(model.a), dg.get_pruner_of_module(model.b)
    dg.get_pruning_group(model.a, pa.prune_out_channels, [0, 1])
    assert dg.edgeprune_mapped  # building a group prunes nothing
    dg.get_pruning_group(model.a, pa.prune_out_channels, list(range(8))).prune()
    assert not dg.edgeprune_mapped
    group = dg.get_pruning_group(model.b, pb.prune_out_channels, [0, 1, 2])
    assert dg.edgeprune_mapped
    mix_in = [it.idxs for it in group if it.dep.target.module is model.mix]
    assert mix_in == [[8, 9, 10]]  # b's channels now start after a's 8 remaining ones, not its 16
    group.prune()
    assert model.mix.in_channels == 40 - 8 - 3 and model(torch.randn(1, *SHAPE)).shape == (1, 4)
