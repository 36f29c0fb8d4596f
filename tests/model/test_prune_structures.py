"""The structures of users' models (issue 10), each in a tiny model built here: grouped convolutions, channel
shuffle, attention heads, concatenation, GroupNorm, layers the pruner cannot follow. For each: the analysis
prunes what can be pruned safely, freezes the rest with a reason, and a pruned model runs and exports."""

import pytest
import torch
from torch import nn

from edgeprune.errors import UnsupportedLayerError
from edgeprune.export.onnx import export_verified
from edgeprune.model.prune import analyse, channel_counts, prune

SHAPE = (3, 16, 16)


def _run(model, shape=SHAPE):
    with torch.no_grad():
        return model.eval()(torch.randn(2, *shape))


def _smallest(a):
    return tuple(g.choices[0] for g in a.groups)


class ResNeXtBlock(nn.Module):
    """1×1 → grouped 3×3 (4 groups) → 1×1, with an identity shortcut: ResNeXt / RegNet's unit."""

    def __init__(self, c=32, width=32, groups=4):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(c, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=groups, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(width, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return torch.relu(x + self.c(self.b(self.a(x))))


class TinyResNeXt(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(ResNeXtBlock(), ResNeXtBlock())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_grouped_conv_prunes_whole_positions_in_every_group_and_keeps_groups():
    model = TinyResNeXt()
    a = analyse(model, SHAPE, round_to=8)
    grouped = [g for g in a.groups if g.parts > 1]
    assert grouped, "the groups around the grouped convolutions carry their part count"
    for g in grouped:
        assert g.parts == 4 and all(c % 4 == 0 for c in g.choices)
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    for name, m in pruned.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            assert m.groups == 4 and m.in_channels % 4 == 0 and m.out_channels % 4 == 0, name
            assert m.in_channels < 32
    assert _run(pruned).shape == (2, 10)
    _, _, verdict = export_verified(pruned, SHAPE, torch.randn(2, *SHAPE))
    assert verdict.ok


def test_grouped_conv_keeps_the_same_positions_in_each_group():
    """Channel k of every group goes together: what the grouped conv's weights need to stay aligned."""
    model = TinyResNeXt()
    a = analyse(model, SHAPE, round_to=8)
    idx = next(i for i, g in enumerate(a.groups) if g.name == "blocks.0.a.0")
    conv = model.blocks[0].a[0]
    with torch.no_grad():
        conv.weight.mul_(0.01)
        for k in range(4):  # position 1 of each of the 4 groups of 8 is by far the strongest
            conv.weight[k * 8 + 1] = 1.0
    widths = tuple(4 if i == idx else g.full for i, g in enumerate(a.groups))
    pruned, _ = prune(model, SHAPE, a, widths)
    kept = pruned.blocks[0].a[0].weight
    assert kept.shape[0] == 4
    assert all(torch.all(kept[k] == 1.0) for k in range(4))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: split channels in two, transform one half, concatenate, shuffle."""

    def __init__(self, c=32):
        super().__init__()
        h = c // 2
        self.branch = nn.Sequential(nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(),
                                    nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h),
                                    nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        out = torch.cat((a, self.branch(b)), dim=1)
        n, c, hh, ww = out.shape
        return out.view(n, 2, c // 2, hh, ww).transpose(1, 2).contiguous().view(n, c, hh, ww)


class TinyShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(), ShuffleUnit())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.units(self.stem(x)).mean((2, 3)))


def test_channel_shuffle_freezes_the_groups_through_it_and_prunes_the_branches():
    model = TinyShuffleNet()
    a = analyse(model, SHAPE, round_to=8)
    names = [g.name for g in a.groups]
    # Inside a branch (1×1 → depthwise → 1×1) no shuffle is on the way: that group is searched.
    assert any(".branch." in n for n in names), names
    assert a.frozen, "the trunk's channels go through the shuffle"
    assert all(why for _, why in a.frozen)
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert _run(pruned).shape == (2, 10)
    assert channel_counts(pruned)["units.0.branch.0"] == 8


class HeadsAttention(nn.Module):
    """timm-style attention: one fused qkv projection reshaped into ``num_heads`` heads of ``head_dim``."""

    def __init__(self, dim=32, num_heads=4, fixed=False):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_dim = num_heads, dim // num_heads, dim
        self.fixed = fixed  # reshape with widths stored at build time, as some models do: pruning cannot work
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        hd = self.fixed // self.num_heads if self.fixed else self.head_dim
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        x = (q @ k.transpose(-2, -1) * 0.25).softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, self.fixed or self.attn_dim))


class TinyViT(nn.Module):
    def __init__(self, dim=32, mha=False, fixed=False):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True) if mha else HeadsAttention(dim, fixed=fixed and dim)
        self.mha = mha
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 64)
        self.fc2 = nn.Linear(64, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        y = self.norm1(x)
        x = x + (self.attn(y, y, y, need_weights=False)[0] if self.mha else self.attn(y))
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


def test_fused_qkv_heads_lose_the_same_positions_in_q_k_v_of_every_head():
    model = TinyViT()
    a = analyse(model, SHAPE, round_to=8)
    g = next(g for g in a.groups if g.name == "attn.qkv")
    assert g.heads and g.parts == 4 and g.full == 32 and g.choices == (8, 16, 24, 32)
    idx = [x.name for x in a.groups].index("attn.qkv")
    widths = tuple(16 if i == idx else x.full for i, x in enumerate(a.groups))
    pruned, history = prune(model, SHAPE, a, widths)
    assert pruned.attn.qkv.out_features == 48 and pruned.attn.proj.in_features == 16
    assert pruned.attn.head_dim == 4 and pruned.attn.attn_dim == 16
    # Exactness: zeroing the removed q/k/v rows in the original gives the pruned model's outputs (q·k loses
    # only zero terms, v's removed dims only fed proj's removed inputs).
    kept = pruned.attn.qkv.weight[:16]
    full_q = model.attn.qkv.weight[:32]
    keep = [next(j for j in range(32) if torch.equal(full_q[j], kept[i])) for i in range(16)]
    assert sorted({j % 8 for j in keep}) == sorted({keep[0] % 8, *[j % 8 for j in keep]})  # the same in each head
    assert len({j % 8 for j in keep}) == 4  # 4 of 8 positions kept per head, in all 4 heads
    masked = __import__("copy").deepcopy(model)
    drop = [j for j in range(32) if j not in keep]
    with torch.no_grad():
        for part in range(3):
            rows = [part * 32 + j for j in drop]
            masked.attn.qkv.weight[rows] = 0
            masked.attn.qkv.bias[rows] = 0
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(masked.eval()(x), pruned(x), atol=1e-5)
    # model.pt's rebuild: the history replayed on a fresh model, then head_dim synced again.
    from edgeprune.model.prune import replay_history

    fresh = replay_history(TinyViT(), history, SHAPE)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(x), pruned(x), atol=1e-6)


def test_multihead_attention_embedding_width_stays_a_multiple_of_heads():
    model = TinyViT(mha=True)
    a = analyse(model, SHAPE, round_to=8)
    embed = next(g for g in a.groups if g.name == "fc2")  # the residual stream: patch conv, LayerNorms, MHA, fc2
    assert embed.parts == 4
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert pruned.attn.embed_dim == 8 and pruned.attn.embed_dim % pruned.attn.num_heads == 0
    assert _run(pruned).shape == (2, 10)


@pytest.mark.parametrize("kind", ["fixed-reshape"])
def test_attention_that_cannot_lose_head_dims_is_kept_whole_and_the_mlp_is_searched(kind):
    model = TinyViT(fixed=kind == "fixed-reshape")
    a = analyse(model, SHAPE, round_to=8)
    frozen = dict(a.frozen)
    assert "attn.qkv" not in {g.name for g in a.groups}
    assert any("attention" in why or "breaks" in why for why in frozen.values()), frozen
    assert "fc1" in [g.name for g in a.groups]
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert channel_counts(pruned)["fc1"] == 8
    assert _run(pruned).shape == (2, 10)


class DenseTiny(nn.Module):
    """Concatenation (DenseNet): each layer reads the concatenation of everything before it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.l1 = nn.Sequential(nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
        self.l2 = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 3, padding=1))
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], 1)
        return self.fc(x.mean((2, 3)))


def test_concat_is_followed():
    model = DenseTiny()
    a = analyse(model, SHAPE, round_to=8)
    assert {"stem", "l1.2", "l2.2"} <= {g.name for g in a.groups}
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert pruned.fc.in_features == 24
    assert _run(pruned).shape == (2, 10)


class GNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1)
        self.gn = nn.GroupNorm(4, 32)
        self.c2 = nn.Conv2d(32, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(self.c2(torch.relu(self.gn(self.c1(x)))).mean((2, 3)))


def test_groupnorm_keeps_equal_groups():
    model = GNNet()
    a = analyse(model, SHAPE, round_to=8)
    g = next(g for g in a.groups if g.name == "c1")
    assert g.parts == 4 and all(c % 8 == 0 for c in g.choices)
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert pruned.gn.num_channels % pruned.gn.num_groups == 0
    assert _run(pruned).shape == (2, 10)


class Scale(nn.Module):
    """timm's PoolFormer layer scale: the parameter is viewed as a fixed shape (C, 1, 1) stored at build time,
    which pruning C cannot update."""

    def __init__(self, c):
        super().__init__()
        self.shape = (c, 1, 1)
        self.scale = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return x * self.scale.view(self.shape)


class ScaledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.s = Scale(32)
        self.c3 = nn.Conv2d(32, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.s(self.c2(torch.relu(self.c1(x))))
        return self.fc(self.c3(x).mean((2, 3)))


def test_a_group_whose_pruning_breaks_the_model_is_frozen_with_its_reason():
    model = ScaledNet()
    a = analyse(model, SHAPE, round_to=8)
    assert "c2" not in {g.name for g in a.groups}
    reasons = dict(a.frozen)
    assert "c2" in reasons and "breaks" in reasons["c2"], reasons
    assert {"c1", "c3"} <= {g.name for g in a.groups}  # the rest is still searched
    assert "s (Scale)" in a.unsupported
    assert a.to_dict()["frozen"][0]["name"] == "c2"
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert _run(pruned).shape == (2, 10)


def test_surgery_failure_is_one_line_naming_the_group():
    model = ScaledNet()
    a = analyse(model, SHAPE, round_to=8, probe=False)  # without the probe, c2 stays in the search
    assert "c2" in {g.name for g in a.groups}
    widths = tuple(g.choices[0] if g.name == "c2" else g.full for g in a.groups)
    pruned, _ = prune(model, SHAPE, a, widths)  # the surgery itself succeeds; running it is what breaks
    with pytest.raises(RuntimeError):
        _run(pruned)


class CachingNet(nn.Module):
    """timm's LeViT/EfficientFormer: in eval mode a tensor computed from a parameter is cached (not a graph
    leaf, so ``copy.deepcopy`` refuses it); ``train()`` drops the cache."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bias = nn.Parameter(torch.zeros(1))
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)
        self.cache = {}

    def train(self, mode=True):
        super().train(mode)
        if mode:
            self.cache = {}
        return self

    def forward(self, x):
        if not self.training:
            self.cache.setdefault("b", self.bias * 2)
        b = self.cache["b"] if not self.training else self.bias * 2
        return self.fc(self.c2(torch.relu(self.c1(x) + b)).mean((2, 3)))


def test_a_model_with_an_eval_cache_is_copied_after_dropping_it():
    import copy

    model = CachingNet().eval()
    model(torch.randn(1, *SHAPE))  # with autograd on: caches a non-leaf tensor
    with pytest.raises(RuntimeError):
        copy.deepcopy(model)
    a = analyse(model, SHAPE, round_to=8)
    assert {"c1", "c2"} <= {g.name for g in a.groups}
    pruned, _ = prune(model, SHAPE, a, _smallest(a))
    assert _run(pruned).shape == (2, 10)
    assert not model.training  # its mode is restored


class FixedWidthMixer(nn.Module):
    """Like MaxViT's attention: its forward reshapes to the width fixed when it was built, so cutting its
    projection's output breaks the model (cutting its input does not)."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.proj = nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, _, h, w = x.shape
        return torch.softmax(self.proj(x).flatten(2), -1).reshape(b, self.c, h, w)


class MixerNet(nn.Module):
    def __init__(self, n=6, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*(nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
                                                    FixedWidthMixer(c) if i % 2 else nn.Conv2d(c, c, 1))
                                      for i in range(n)))
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def test_the_probe_isolates_failures_through_the_module_they_fail_in(monkeypatch):
    """The probe tries first the groups that cut something inside the module where the run failed: the same
    groups frozen as by halving, in fewer tries."""
    from edgeprune.model import depgraph, probe

    tries: list[int] = []
    original = probe._try_prune

    def counted(*args, **kwargs):
        tries.append(len(args[3]))
        return original(*args, **kwargs)

    monkeypatch.setattr(probe, "_try_prune", counted)
    monkeypatch.setattr(depgraph, "FAST", [True])
    results = {}
    for suspects_first in (True, False):
        depgraph.FAST[0] = suspects_first
        tries.clear()
        a = analyse(MixerNet().eval(), (3, 8, 8), round_to=4)
        results[suspects_first] = (sorted(n for n, _ in a.frozen), len(tries), list(tries))
        assert {g.name for g in a.groups} >= {"stem", "blocks.0.0", "blocks.1.0"}  # a mixer's input is cut
    frozen, n, order = results[True]
    assert frozen == ["blocks.1.2.proj", "blocks.3.2.proj", "blocks.5.2.proj"] == results[False][0]
    assert order[:2] == [13, 2]  # all 13 groups fail; then the two that cut blocks.1.2's projection
    assert n < results[False][1]
