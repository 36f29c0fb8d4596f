"""The dependency-graph walk that builds a pruning group (edgeprune.model.depgraph): the same groups as
Torch-Pruning's own walk, without its path explosion on residuals that slice and re-concatenate channels."""

import torch
from torch import nn

from edgeprune.export.onnx import export_verified
from edgeprune.model.depgraph import copy_with_graph, dependency_graph
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


class GroupedSE(nn.Module):
    """A grouped conv, squeeze-excitation gating and a residual: structures whose groups couple several
    layers, to check a copied graph against a fresh trace."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.grouped = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(32)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(32, 8, 1), nn.ReLU(), nn.Conv2d(8, 32, 1),
                                nn.Sigmoid())
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn(self.grouped(x))
        return self.fc((x + y * self.se(y)).mean((2, 3)))


def _fresh_trace_prune(model, shape, analysis, widths):
    """``prune`` as it was before graphs were copied: copy the model, trace the copy."""
    from edgeprune.model import prune as prune_module

    original = prune_module._copy_and_graph

    def fresh(m, s):
        c = prune_module.copy_model(m)
        return c, dependency_graph(c, s)

    prune_module._copy_and_graph = fresh
    try:
        return prune(model, shape, analysis, widths)
    finally:
        prune_module._copy_and_graph = original


def test_pruning_a_copied_graph_equals_pruning_a_fresh_trace():
    from edgeprune.model.zoo import mobilenet_v2, resnet20

    for model in (resnet20(10), mobilenet_v2(10), SliceResidualNet(depth=3), GroupedSE()):
        model.eval()
        torch.manual_seed(0)
        for p in model.parameters():  # distinct magnitudes, so the kept channels depend on the scores
            p.data.normal_()
        a = analyse(model, SHAPE)
        copied, graph = copy_with_graph(model, SHAPE)  # the path prune takes (not its fallback)
        originals = {id(m) for m in model.modules()}
        assert graph.model is copied and not any(id(m) in originals for m in graph.module2node)
        widths = tuple(g.choices[len(g.choices) // 2] for g in a.groups)
        assert any(w < g.full for w, g in zip(widths, a.groups))
        new, new_history = prune(model, SHAPE, a, widths)
        old, old_history = _fresh_trace_prune(model, SHAPE, a, widths)
        assert new_history == old_history
        new_sd, old_sd = new.state_dict(), old.state_dict()
        assert new_sd.keys() == old_sd.keys()
        assert all(torch.equal(new_sd[k], old_sd[k]) for k in new_sd)
        x = torch.randn(2, *SHAPE)
        with torch.no_grad():
            torch.testing.assert_close(new(x), old(x))
        # the analysed model itself is untouched, and a second candidate from the same graph prunes alike
        assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in new.parameters())
        again, again_history = prune(model, SHAPE, a, widths)
        assert again_history == new_history


def test_the_kept_graph_is_retraced_when_the_model_changes():
    from edgeprune.model.depgraph import traced

    model = TwoBranchConcat().train()
    dg = traced(model, SHAPE)
    assert model.training  # the trace ran in eval mode and left the caller's mode alone
    assert traced(model, SHAPE) is dg
    assert traced(model, (3, 8, 8)) is not dg  # another input shape
    dg = traced(model, SHAPE)
    model.mix = nn.Conv2d(40, 8, 3, padding=1)  # same names, another parameter shape
    assert traced(model, SHAPE) is not dg
    other = TwoBranchConcat()
    assert traced(other, SHAPE).model is other


def test_a_sub_group_taken_from_the_built_group_equals_a_new_walk():
    """``sub_group`` (the cheap refusal check of the analysis) gives the walk's indices for a subset of root
    channels wherever it answers, and declines where several root channels reach one channel."""
    import random

    from edgeprune.model.depgraph import sub_group
    from edgeprune.model.zoo import mobilenet_v2, resnet20

    rng = random.Random(0)
    for model, shape in ((SliceResidualNet(depth=4), SHAPE), (resnet20(), (3, 32, 32)), (mobilenet_v2(), (3, 32, 32))):
        dg = dependency_graph(model.eval(), shape)
        names = dg._module2name
        exact = declined = 0
        for m, pruner, idxs in _roots(dg):
            group = dg.get_pruning_group(m, pruner.prune_out_channels, idxs)
            drop = sorted(rng.sample(idxs, max(1, len(idxs) // 3)))
            sub = sub_group(group, drop)
            if sub is None:
                declined += 1
                continue
            walk = dg.get_pruning_group(m, group[0].dep.handler, drop)
            assert {k: v for k, v in _canonical(sub, names).items() if v} == _canonical(walk, names), names[m]
            assert dg.check_pruning_group(sub) == dg.check_pruning_group(walk)
            exact += 1
        assert exact > 10
        # The slice residuals' shortcut channels are reached from two root channels: those groups need a walk.
        assert declined == (3 if isinstance(model, SliceResidualNet) else 0)


def _mappings(dg) -> list:
    """Every dependency's index mappings, as (source, target, handler, (mapping type, its attributes)…)."""
    def describe(m):
        return None if m is None else (type(m).__name__, tuple(sorted((k, repr(v)) for k, v in vars(m).items())))

    return [(str(n), str(d.target), str(d.handler), tuple(describe(m) for m in d.index_mapping))
            for n in dg.module2node.values() for d in n.dependencies]


def test_index_mappings_computed_with_kept_channel_answers_equal_torch_pruning_own(monkeypatch):
    """``_update_mappings`` keeps each node's inferred channels within one recomputation: the same mappings
    as Torch-Pruning's own, after pruning too, and where its walk-step limit cuts walks short."""
    from torch_pruning.dependency import constants

    from edgeprune.model import depgraph
    from edgeprune.model.zoo import mobilenet_v2

    class Heads(nn.Module):  # reshapes to heads and back, a flatten and a concat: mappings of every kind
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.qkv = nn.Linear(16, 48)
            self.proj = nn.Linear(16, 16)
            self.side = nn.Conv2d(16, 8, 1)
            self.fc = nn.Linear(24 * 4, 10)

        def forward(self, x):
            x = self.stem(x)
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            q, k, v = self.qkv(t).reshape(b, h * w, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
            a = (q @ k.transpose(-1, -2)).softmax(-1) @ v
            t = self.proj(a.transpose(1, 2).reshape(b, h * w, c)).transpose(1, 2).reshape(b, c, h, w)
            y = torch.cat([torch.nn.functional.adaptive_avg_pool2d(self.side(t), 2),
                           torch.nn.functional.adaptive_avg_pool2d(t, 2)], 1)
            return self.fc(y.flatten(1))

    class Taps(nn.Module):  # two flattens whose walks back to the conv share a chain: the second reuses answers
        def __init__(self):
            super().__init__()
            self.conv, self.near, self.far = nn.Conv2d(3, 8, 1), nn.Linear(8 * 16, 10), nn.Linear(8 * 16, 10)

        def forward(self, x):
            y, taps = self.conv(x), []
            for i in range(10):
                y = y * 1.5
                if i in (1, 9):
                    taps.append(y.flatten(1))
            return self.near(taps[0]) + self.far(taps[1])

    monkeypatch.setattr(depgraph, "FAST", [True])
    default = constants.MAX_RECURSION_DEPTH
    models = ((Heads, (3, 8, 8)), (Taps, (3, 4, 4)), (lambda: SliceResidualNet(depth=3), SHAPE),
              (mobilenet_v2, (3, 32, 32)))
    for limit in (default, 6, 9, 12):  # Taps' second walk crosses these limits before, at or after the reuse
        monkeypatch.setattr(constants, "MAX_RECURSION_DEPTH", limit)
        for build, shape in models:
            model = build()
            dg = dependency_graph(model.eval(), shape)
            # Pruned too where Torch-Pruning can prune (not Heads' concat, nor any concat under the low limit).
            steps = 1 if isinstance(model, Heads) or limit != default else 2
            for step in range(steps):
                seen = []
                for fast in (True, False):
                    depgraph.FAST[0] = fast
                    depgraph._update_mappings(dg)
                    seen.append(_mappings(dg))
                assert seen[0] == seen[1], (type(model).__name__, limit, step)
                if step + 1 == steps:
                    break
                # Prune a group, then compare the recomputed mappings again.
                m = next(m for m in dg.module2node if isinstance(m, nn.Conv2d))
                pruner = dg.get_pruner_of_module(m)
                dg.get_pruning_group(m, pruner.prune_out_channels, [0, 1]).prune()
