"""Gates with differentiable polarization (GDP, paper (c)): one gate per channel of each prunable group.

Where: a group's channels pass through the BatchNorm layers of that group (a conv's BN; for the residual
stream, every block's last BN and the stem's; for an inverted residual, the expansion BN *and* the
depthwise BN, so a zero gate zeroes the channel where it enters the next regular convolution — the paper's
"before every convolution but not depthwise ones"). A gate vector ``g`` multiplies the outputs of all its
group's BNs alike, so channel ``c`` of the group is ``g_c ×`` what it was, everywhere (ReLU-family
activations commute with a non-negative scale and map 0 to 0).

Gate function (our reading of the paper's smoothed L0): ``g(θ) = θ² / (θ² + ε)`` in [0, 1), exactly 0 at
θ = 0, near 1 once |θ| ≫ √ε; ε is annealed down during training so gates end near 0 or near 1.

Fold: a gate after BN is ``g·(γ x̂ + β) = (gγ) x̂ + gβ``: folded into the BN's affine parameters the model
is unchanged; a channel whose gate is 0 then outputs exactly 0 and is removed with no change at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class GateSite:
    """Group ``group`` (index into the analysis) with ``full`` channels, gated at these BN modules."""

    group: int
    name: str
    full: int
    modules: tuple[str, ...]


def gate_sites(model: nn.Module, input_shape: tuple[int, ...], analysis) -> tuple[list[GateSite], dict[str, str]]:
    """Find each group's BNs by pruning the group alone (``prune``) and seeing which BNs shrink by as many
    channels: those whose width is the group's (channel ``c`` of the BN is channel ``c`` of the group).
    Returns (sites, {group name: why it is not gated}) — a group with no BN, or whose BNs hold other
    channels too (a concat), is kept whole by GDP."""
    from edgeprune.model.prune import prune

    widths0 = {n: m.num_features for n, m in model.named_modules() if isinstance(m, _BN)}
    full = [g.full for g in analysis.groups]
    sites, skipped = [], {}
    for i, g in enumerate(analysis.groups):
        if g.heads or g.parts > 1:
            skipped[g.name] = "attention heads / grouped channels: not gated"
            continue
        small = g.choices[0]
        if small == g.full:
            skipped[g.name] = "cannot be pruned below its full width"
            continue
        widths = list(full) + [1] * len(analysis.blocks)
        widths[i] = small
        pruned, _ = prune(model, input_shape, analysis, widths)
        now = {n: m.num_features for n, m in pruned.named_modules() if isinstance(m, _BN)}
        moved = [n for n, w in widths0.items() if n in now and now[n] != w]
        if not moved:
            skipped[g.name] = "no BatchNorm carries its channels"
            continue
        if any(widths0[n] != g.full or widths0[n] - now[n] != g.full - small for n in moved):
            skipped[g.name] = "its BatchNorms hold other channels too (concatenation)"
            continue
        sites.append(GateSite(i, g.name, g.full, tuple(moved)))
    return sites, skipped


class Gates(nn.Module):
    """The gate parameters θ (one vector per site) and the hooks that apply them to ``model``."""

    def __init__(self, model: nn.Module, sites: list[GateSite], eps: float = 0.1, init: float = 1.0):
        super().__init__()
        self.sites = sites
        self.eps = eps
        self.theta = nn.ParameterList([nn.Parameter(torch.full((s.full,), float(init))) for s in sites])
        # Gates forced to exactly 0 (the channels that will be removed), per site; None: none forced.
        self.forced: list[torch.Tensor | None] = [None] * len(sites)
        modules = dict(model.named_modules())
        self._hooks = []
        for k, s in enumerate(sites):
            for name in s.modules:
                self._hooks.append(modules[name].register_forward_hook(self._hook(k)))

    def _hook(self, k: int):
        def fn(_m, _args, out):
            g = self.value(k)
            shape = (1, -1) + (1,) * (out.dim() - 2)
            return out * g.view(shape).to(out.dtype)
        return fn

    def value(self, k: int) -> torch.Tensor:
        """Gate values of site ``k`` (``full`` values in [0, 1))."""
        t = self.theta[k]
        g = t * t / (t * t + self.eps)
        if self.forced[k] is not None:
            g = g * (~self.forced[k]).to(device=g.device, dtype=g.dtype)  # forced may come from a CPU checkpoint
        return g

    def values(self) -> list[torch.Tensor]:
        return [self.value(k) for k in range(len(self.sites))]

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def polarization(gates: list[torch.Tensor], weights: list[torch.Tensor], t: float = 1.0) -> torch.Tensor:
    """Σ_c w_c (t·|g_c| − |g_c − ḡ|), ḡ the mean of all gates (Zhuang et al., NeurIPS 2020): the L1 term
    pushes gates down, the spread term pushes them away from the common mean, so they split into a group at
    0 and a group far from it. ``weights``: per-channel cost (mean 1), e.g. the latency its removal saves.
    A sum, not a mean: each gate's pull is its own cost, whatever the model's size."""
    g = torch.cat(gates)
    w = torch.cat(weights).to(device=g.device, dtype=g.dtype)
    # ḡ is held constant in the gradient: through the mean, every gate below it (many, once some die) would
    # pull every gate above it up by Σ w / N, more than the (t - 1)·w that pushes it down.
    return (w * (t * g.abs() - (g - g.mean().detach()).abs())).sum()


@torch.no_grad()
def fold(model: nn.Module, gates: Gates) -> None:
    """Fold the gates into the BNs they follow (in place) and remove the hooks: the model computes what the
    gated one did."""
    modules = dict(model.named_modules())
    values = [v.detach().clone() for v in gates.values()]
    gates.remove()
    for s, g in zip(gates.sites, values):
        for name in s.modules:
            bn = modules[name]
            bn.weight.mul_(g)
            bn.bias.mul_(g)
