"""Graph analysis and channel surgery on top of Torch-Pruning's dependency graph.

A *prunable group* is a set of coupled channels (a conv's outputs, the BN after it, the inputs of the
layers that read them, residual additions) rooted at one conv or linear layer. The search space is the
kept width of each group, in multiples of the target's ``round_to``: torch-pruning's own rounding floors
small groups to zero and then refuses the pruning, so the ratio → width map is not monotone
(docs/design/STACK.md); widths are therefore chosen here and pruned by exact channel indices.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.errors import UnsupportedLayerError

# Leaf modules whose channels Torch-Pruning can follow; anything else with parameters is reported.
_SUPPORTED_PARAM_LEAVES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


@dataclass(frozen=True)
class PrunableGroup:
    """One group of coupled channels. ``full`` channels now; ``choices`` the widths the search may pick."""

    name: str  # name of the root module, e.g. "layer1.0.conv1"
    full: int
    choices: tuple[int, ...]  # ascending kept-channel counts; the last is ``full``
    depthwise: bool = False  # the group contains a depthwise conv (channels cost differently)

    def width(self, keep: float) -> int:
        """The allowed width closest to ``keep * full`` (``keep`` in [0, 1])."""
        want = keep * self.full
        return min(self.choices, key=lambda c: (abs(c - want), -c))


@dataclass(frozen=True)
class Analysis:
    groups: tuple[PrunableGroup, ...]
    ignored: tuple[str, ...]  # output layers kept whole
    unsupported: tuple[str, ...]  # "name (Type)" of layers the pruner cannot follow; left unpruned

    def to_dict(self) -> dict:
        return {"groups": [{"name": g.name, "full": g.full, "choices": list(g.choices), "depthwise": g.depthwise}
                           for g in self.groups],
                "ignored": list(self.ignored), "unsupported": list(self.unsupported)}


def _output_layers(model: nn.Module) -> list[nn.Module]:
    """The classifier: the last Linear (or the last conv when there is no Linear) is never pruned."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return [linears[-1]]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1:]


def unsupported_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_modules():
        if next(m.children(), None) is not None:
            continue
        if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, _SUPPORTED_PARAM_LEAVES):
            out.append((name, m))
    return out


def _dependency_graph(model: nn.Module, input_shape: tuple[int, ...]):
    import torch_pruning as tp

    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    except Exception as e:  # noqa: BLE001 - Torch-Pruning raises many kinds on graphs it cannot trace
        raise UnsupportedLayerError(f"cannot trace the model's channel dependencies: {type(e).__name__}: {e}") from None


def _is_depthwise(group) -> bool:
    return any(isinstance(it.dep.target.module, nn.Conv2d) and it.dep.target.module.groups > 1
               and it.dep.target.module.groups == it.dep.target.module.in_channels for it in group)


def _groups(model: nn.Module, dg, ignored: list[nn.Module]):
    """Yield (root name, group) for every prunable group, computed lazily so pruning may happen between."""
    for group in dg.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        root = group[0].dep.target.module
        if not dg.is_out_channel_pruning_fn(group[0].dep.handler):
            continue
        yield dg._module2name[root], group


def analyse(model: nn.Module, input_shape: tuple[int, ...], *, round_to: int = 8, min_keep: float = 0.0) -> Analysis:
    """Find the prunable groups of ``model`` for inputs of shape C×H×W.

    Widths are multiples of ``round_to`` (at least one unit, at least ``min_keep`` of the group), plus the
    full width; a group narrower than two units cannot be pruned and is left out of the search.
    """
    bad = unsupported_layers(model)
    ignored = _output_layers(model) + [m for _, m in bad]
    dg = _dependency_graph(model, input_shape)
    groups = []
    for name, group in _groups(model, dg, ignored):
        full = len(group[0].idxs)
        lo = max(round_to, int(-(-min_keep * full // round_to)) * round_to)
        choices = tuple(sorted({*range(lo, full, round_to), full}))
        if len(choices) > 1:
            groups.append(PrunableGroup(name, full, choices, _is_depthwise(group)))
    names = {m: n for n, m in model.named_modules()}
    return Analysis(tuple(groups), tuple(names[m] for m in _output_layers(model)),
                    tuple(f"{n} ({type(m).__name__})" for n, m in bad))


def _ignored_modules(model: nn.Module, analysis: Analysis) -> list[nn.Module]:
    """The modules of ``model`` (a copy of the analysed one) that the analysis kept whole."""
    names = set(analysis.ignored) | {u.split(" ")[0] for u in analysis.unsupported}
    return [m for n, m in model.named_modules() if n in names]


def prune(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis,
          widths: tuple[int, ...]) -> tuple[nn.Module, list]:
    """Return a pruned deep copy of ``model`` with group ``i`` cut to ``widths[i]`` output channels, keeping
    the channels of largest group L1 magnitude, and the pruning history that replays it on a fresh model."""
    import torch_pruning as tp

    if len(widths) != len(analysis.groups):
        raise ValueError(f"{len(widths)} widths for {len(analysis.groups)} groups")
    want = {g.name: w for g, w in zip(analysis.groups, widths)}
    pruned = copy.deepcopy(model).eval()
    ignored = _ignored_modules(pruned, analysis)
    dg = _dependency_graph(pruned, input_shape)
    importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    for name, group in _groups(pruned, dg, ignored):
        if name not in want:
            continue
        full = len(group[0].idxs)
        n_prune = full - want[name]
        if n_prune <= 0:
            continue
        with torch.no_grad():
            scores = importance(group)
        idxs = torch.argsort(scores)[:n_prune].tolist()
        root = group[0].dep.target.module
        sub = dg.get_pruning_group(root, group[0].dep.handler, sorted(idxs))
        if not dg.check_pruning_group(sub):
            raise UnsupportedLayerError(f"Torch-Pruning refused to prune group {name} to {want[name]} channels")
        sub.prune()
    history = [[str(n), bool(out), [int(i) for i in idxs]] for n, out, idxs in dg.pruning_history()]
    return pruned, history


def group_importances(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis) -> list:
    """Per-channel group L1 importance of every analysed group (numpy arrays, in ``analysis.groups`` order);
    the same scores ``prune`` ranks channels by."""
    import torch_pruning as tp

    work = copy.deepcopy(model).eval()
    ignored = _ignored_modules(work, analysis)
    importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    scores = {}
    for name, group in _groups(work, _dependency_graph(work, input_shape), ignored):
        with torch.no_grad():  # only around scoring: the graph is traced lazily with autograd
            scores[name] = importance(group).detach().cpu().numpy()
    return [scores[g.name] for g in analysis.groups]


def replay_history(model: nn.Module, history: list, input_shape: tuple[int, ...]) -> nn.Module:
    """Apply a recorded pruning history to a freshly built model, in place (then load its state dict)."""
    dg = _dependency_graph(model, input_shape)
    try:
        dg.load_pruning_history([[n, bool(o), list(i)] for n, o, i in history])
    except Exception as e:  # noqa: BLE001
        raise UnsupportedLayerError(f"cannot replay the pruning history on this architecture: {e}") from None
    return model


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (or features) of every conv and linear layer, by module name."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
