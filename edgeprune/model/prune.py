"""Graph analysis and channel surgery on top of Torch-Pruning's dependency graph.

A *prunable group* is a set of coupled channels (a conv's outputs, the BN after it, the inputs of the
layers that read them, residual additions) rooted at one conv or linear layer. The search space is the
kept width of each group, in multiples of the target's ``round_to``: torch-pruning's own rounding floors
small groups to zero and then refuses the pruning, so the ratio → width map is not monotone
(docs/design/STACK.md); widths are therefore chosen here and pruned by exact channel indices.

Structures, and what happens to them (issue 10):

- grouped convolutions and GroupNorm split a group's channels into ``parts`` equal parts; the same positions
  are removed from every part (as Torch-Pruning's own pruner does), so ``groups`` stays consistent, and the
  widths offered are multiples of ``parts``;
- depthwise convolutions, concatenations, splits, residual chains and SE gating are followed by the
  dependency graph;
- attention: the q/k/v projections of a module with ``num_heads`` (timm, Swin…) and whole
  ``nn.MultiheadAttention`` modules are kept whole (their outputs are reshaped into heads); the MLP hidden
  widths around them are searched;
- a reshape the dependency graph cannot map (a channel shuffle: Torch-Pruning divides by zero on it) is
  left unmapped, and every group whose channels pass through it is frozen;
- finally every group is *probed*: pruned on a copy, the copy is run; a group whose pruning fails (or
  changes the output shape) is frozen, found by bisection, with the first line of the error as its reason.

A model fails only when nothing at all can be pruned. ``Analysis.frozen`` lists every frozen group with
its reason; the report shows them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.errors import UnsupportedLayerError
from edgeprune.model.attention import attention_layers, fused_qkv, sync_attention
from edgeprune.model import depgraph
from edgeprune.model.depgraph import copy_with_graph, dependency_graph, sub_group, traced
from edgeprune.model.depth import BLOCK, block_entries, drop_blocks, dropped_blocks

# Leaf modules whose channels Torch-Pruning can follow; anything else with parameters is reported.
_SUPPORTED_PARAM_LEAVES = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.PReLU)


@dataclass(frozen=True)
class PrunableGroup:
    """One group of coupled channels. ``full`` channels now; ``choices`` the widths the search may pick."""

    name: str  # name of the root module, e.g. "layer1.0.conv1"
    full: int
    choices: tuple[int, ...]  # ascending kept-channel counts; the last is ``full``
    depthwise: bool = False  # the group contains a depthwise conv (channels cost differently)
    parts: int = 1  # grouped conv / GroupNorm / attention heads: channels in this many equal parts, pruned alike
    heads: bool = False  # a fused q/k/v projection: ``full`` is the width of each of q, k and v (head dim × heads)

    def width(self, keep: float) -> int:
        """The allowed width closest to ``keep * full`` (``keep`` in [0, 1])."""
        want = keep * self.full
        return min(self.choices, key=lambda c: (abs(c - want), -c))


@dataclass(frozen=True)
class Analysis:
    groups: tuple[PrunableGroup, ...]
    ignored: tuple[str, ...]  # output layers kept whole
    unsupported: tuple[str, ...]  # "name (Type)" of layers the pruner cannot follow; left unpruned
    frozen: tuple[tuple[str, str], ...] = ()  # (group root name, why it is kept whole)
    # Residual blocks the search may drop whole (model.depth; empty unless depth pruning is asked for).
    blocks: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"groups": [{"name": g.name, "full": g.full, "choices": list(g.choices), "depthwise": g.depthwise,
                            "parts": g.parts, "heads": g.heads} for g in self.groups],
                "ignored": list(self.ignored), "unsupported": list(self.unsupported),
                "frozen": [{"name": n, "reason": r} for n, r in self.frozen], "blocks": list(self.blocks)}


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


def _is_depthwise(group) -> bool:
    return any(isinstance(it.dep.target.module, nn.Conv2d) and it.dep.target.module.groups > 1
               and it.dep.target.module.groups == it.dep.target.module.in_channels for it in group)


def _parts(dg, group) -> int:
    """Into how many equal parts grouped convolutions and GroupNorms in ``group`` split its channels (1: none).
    Depthwise convs are not counted: their channels follow one to one."""
    parts = 1
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.Conv2d) and m.groups == m.out_channels:
            continue
        if isinstance(m, nn.MultiheadAttention):  # heads keep equal widths: the same positions from each
            parts = parts * m.num_heads // math.gcd(parts, m.num_heads)
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None:
            continue
        try:
            g = pruner.get_out_channel_groups(m) if dg.is_out_channel_pruning_fn(dep.handler) else pruner.get_in_channel_groups(m)
        except Exception:  # noqa: BLE001 - pruners of pseudo-modules (reshape, concat) have no groups
            continue
        if isinstance(g, int) and g > 1:
            parts = parts * g // math.gcd(parts, g)
    return parts


def _through_unmapped(dg, group) -> bool:
    bad = {id(n) for n in getattr(dg, "unmapped", ())}
    return bool(bad) and any(id(dep.source) in bad or id(dep.target) in bad for dep, _ in group)


def _groups(model: nn.Module, dg, ignored: list[nn.Module], on_error=None, only: set[str] | None = None):
    """Yield (root name, group) for every prunable group, computed lazily so pruning may happen between.

    Torch-Pruning's ``get_all_groups``, except that a root whose group Torch-Pruning cannot build (index
    mapping through a split or reshape it does not understand) is passed to ``on_error(name, exception)``
    and skipped instead of ending the enumeration. ``only``: build the groups of these roots only (the
    analysed groups, when pruning: building a group costs time, most on large graphs)."""
    skip = {id(m) for m in list(ignored) + list(dg.IGNORED_LAYERS_IN_TRACING)}
    visited: set[int] = set()
    for m in list(dg.module2node.keys()):
        if id(m) in skip or id(m) in visited or not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        pruner = dg.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        name = dg._module2name.get(m, type(m).__name__)
        if only is not None and name not in only:
            continue
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(pruner.get_out_channels(m))))
        except Exception as e:  # noqa: BLE001 - Torch-Pruning's index mappings raise many kinds
            if on_error is not None:
                on_error(name, e)
            continue
        prunable = True
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                visited.add(id(dep.target.module))
                prunable = prunable and id(dep.target.module) not in skip
        if prunable and dg.is_out_channel_pruning_fn(group[0].dep.handler):
            yield name, group


def _first_line(e: BaseException) -> str:
    text = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _choices(full: int, parts: int, round_to: int, min_keep: float) -> tuple[int, ...]:
    """Allowed widths: multiples of ``parts`` (equal parts) and of ``round_to`` where ``parts`` allows it,
    at least one unit and ``min_keep`` of ``full``, plus ``full``."""
    step = parts * round_to // math.gcd(parts, round_to)  # the least common multiple
    if step >= full:
        step = parts  # round_to would leave nothing to choose: any whole number of units per part
    lo = max(step, int(-(-min_keep * full // step)) * step)
    return tuple(sorted({*range(lo, full, step), full}))


def analyse(model: nn.Module, input_shape: tuple[int, ...], *, round_to: int = 8, min_keep: float = 0.0,
            probe: bool = True, probe_budget_s: float = 60.0) -> Analysis:
    """Find the prunable groups of ``model`` for inputs of shape C×H×W.

    Widths are multiples of ``round_to`` (at least one unit, at least ``min_keep`` of the group), plus the
    full width; a group narrower than two units cannot be pruned and is left out of the search. With
    ``probe`` every group is test-pruned (see the module docstring) and frozen when that fails; once the
    probe has run ``probe_budget_s`` seconds, a failing set of groups is frozen whole instead of bisected.
    """
    bad = unsupported_layers(model)
    attention = attention_layers(model)
    ignored = _output_layers(model) + [m for _, m in bad] + [m for _, m, _ in attention]
    dg = traced(model, input_shape)  # kept: prune's copies reuse it
    groups, frozen = [], [(n, why) for n, _, why in attention]

    def cannot_group(name: str, e: BaseException) -> None:
        frozen.append((name, f"Torch-Pruning cannot follow its channels ({_first_line(e)})"))

    fused = fused_qkv(model)
    names = {m: n for n, m in model.named_modules()}
    members: dict[str, frozenset[str]] = {}  # group → the modules it cuts (the probe's suspects)
    for name, group in _groups(model, dg, ignored, on_error=cannot_group):
        root = group[0].dep.target.module
        if root in fused:  # a fused qkv: widths are q's (= k's = v's), in equal parts per head
            g_full, parts, heads, depthwise = root.out_features // 3, fused[root].num_heads, True, False
        else:
            if _through_unmapped(dg, group):
                frozen.append((name, "its channels pass through a reshape or concatenation Torch-Pruning cannot "
                                     "map (a channel shuffle, a channels-last merge)"))
                continue
            g_full, parts, heads, depthwise = len(group[0].idxs), _parts(dg, group), False, _is_depthwise(group)
            if g_full % parts:
                frozen.append((name, f"{g_full} channels do not split into its {parts} groups"))
                continue
        choices = _choices(g_full, parts, round_to, min_keep)
        if len(choices) > 1:
            g = PrunableGroup(name, g_full, choices, depthwise, parts, heads=heads)
            why = _refused(dg, group, g)
            if why:
                frozen.append((name, why))
            else:
                groups.append(g)
                members[name] = frozenset(names[d.target.module] for d, _ in group
                                          if isinstance(d.target.module, nn.Module) and d.target.module in names)
    analysis = Analysis(tuple(groups), tuple(names[m] for m in _output_layers(model)),
                        tuple(f"{n} ({type(m).__name__})" for n, m in bad), tuple(frozen))
    if probe and groups:
        from edgeprune.model.probe import probe as run_probe  # it prunes with prune() below

        analysis = run_probe(model, input_shape, analysis, probe_budget_s, members=members)
    return analysis


def _refused(dg, group, g: PrunableGroup) -> str | None:
    """Why Torch-Pruning would refuse to cut ``g`` to its smallest width (None: it would not). A check on the
    analysis graph, without copying or pruning the model: the cheap part of the probe."""
    n_drop = g.full - g.choices[0]
    drop = [p + k * (g.full // g.parts) for k in range(g.parts) for p in range(n_drop // g.parts)]
    try:
        # From the group already built where that is exact (a new walk is ~0.5 s per group on a MaxViT).
        sub = sub_group(group, drop) if depgraph.FAST[0] else None
        if sub is None:
            sub = dg.get_pruning_group(group[0].dep.target.module, group[0].dep.handler, drop)
        if dg.check_pruning_group(sub):
            return None
        return "Torch-Pruning refuses to prune it (a coupled layer would lose all its channels)"
    except Exception as e:  # noqa: BLE001
        return f"Torch-Pruning cannot prune it ({_first_line(e)})"


def _ignored_modules(model: nn.Module, analysis: Analysis) -> list[nn.Module]:
    """The modules of ``model`` (a copy of the analysed one) that the analysis kept whole."""
    names = set(analysis.ignored) | {u.split(" ")[0] for u in analysis.unsupported}
    out = [m for n, m in model.named_modules() if n in names]
    return out + [m for _, m, _ in attention_layers(model)]


class ModelCopyError(UnsupportedLayerError):
    """The model cannot be deep-copied, so no candidate can be built from it."""


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode.

    Some models cache tensors computed from their parameters in eval mode (timm's LeViT and EfficientFormer
    keep attention biases per device); those are not graph leaves and cannot be deep-copied. Their
    ``train()`` drops the cache, so on failure the model is switched to training mode and back (its mode is
    restored) and copied again."""
    try:
        return copy.deepcopy(model).eval()
    except Exception:  # noqa: BLE001 - deepcopy raises RuntimeError, TypeError… for such tensors
        pass
    was_training = model.training
    model.train()
    model.train(was_training)
    try:
        return copy.deepcopy(model).eval()
    except Exception as e:  # noqa: BLE001
        raise ModelCopyError(f"the model cannot be copied for pruning ({_first_line(e)}): it holds tensors that "
                             "are not parameters or buffers (a cache?) and do not support deepcopy") from None


def _copy_and_graph(model: nn.Module, input_shape: tuple[int, ...]):
    """A copy of ``model`` to prune (or score) and its dependency graph: the graph traced once on ``model``,
    copied with it; where the model does not deep-copy as it is, ``copy_model`` and a new trace."""
    try:
        return copy_with_graph(model, input_shape)
    except UnsupportedLayerError:
        raise  # the model cannot be traced at all
    except Exception:  # noqa: BLE001 - deepcopy fails on some models' caches: copy_model handles those
        pruned = copy_model(model)
        return pruned, dependency_graph(pruned, input_shape)


def _drop_indices(scores: torch.Tensor, n_drop: int, parts: int) -> list[int]:
    """The ``n_drop`` lowest-scoring channels; with ``parts`` > 1 the same positions in every part, ranked by
    the mean score over the parts (``n_drop`` is a multiple of ``parts``)."""
    if parts == 1:
        return torch.argsort(scores)[:n_drop].tolist()
    size = len(scores) // parts
    pos = torch.argsort(scores.reshape(parts, size).mean(0))[: n_drop // parts]
    return sorted(int(p) + k * size for k in range(parts) for p in pos.tolist())


def prune(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis,
          widths: tuple[int, ...], scores: dict[str, torch.Tensor] | None = None) -> tuple[nn.Module, list]:
    """Return a pruned deep copy of ``model`` with group ``i`` cut to ``widths[i]`` output channels, keeping
    the channels of largest group L1 magnitude, and the pruning history that replays it on a fresh model.

    ``widths`` may go on with one entry per ``analysis.blocks`` (0: drop that block, 1: keep it); the
    channels are pruned first, on the whole model, then the dropped blocks are replaced by ``nn.Identity``.
    ``scores``: per group name, the channel scores to rank by instead of L1 magnitude (GDP's gate values).

    Raises ``UnsupportedLayerError`` (one line naming the group) when Torch-Pruning refuses or fails."""
    import torch_pruning as tp

    n = len(analysis.groups)
    if len(widths) not in (n, n + len(analysis.blocks)):
        raise ValueError(f"{len(widths)} widths for {n} groups and {len(analysis.blocks)} blocks")
    dropped = [b for b, keep in zip(analysis.blocks, widths[n:]) if not keep]
    widths = widths[:n]
    want = {g.name: w for g, w in zip(analysis.groups, widths)}
    fulls = {g.name: g.full for g in analysis.groups}
    parts = {g.name: g.parts for g in analysis.groups}
    heads = {g.name for g in analysis.groups if g.heads}
    pruned, dg = _copy_and_graph(model, input_shape)
    ignored = _ignored_modules(pruned, analysis)
    importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    cut = {g.name for g in analysis.groups if want[g.name] < g.full}  # building a group costs time: only these
    for name, group in _groups(pruned, dg, ignored, only=cut):
        full = len(group[0].idxs) // (3 if name in heads else 1)
        n_prune = full - want[name]
        if full != fulls[name]:
            raise UnsupportedLayerError(f"group {name} has {full} channels, its analysis {fulls[name]}: the analysis "
                                        "is of another model (or of this one before it changed)")
        try:
            if scores is not None and name in scores:
                score = torch.as_tensor(scores[name], dtype=torch.float32)
            else:
                with torch.no_grad():
                    score = importance(group)
            if name in heads and score is not None and len(score) == 3 * full:
                score = score.reshape(3, full).sum(0)  # q, k and v lose the same positions: rank them together
            if score is None or len(score) != full:
                raise ValueError(f"importance has {None if score is None else len(score)} scores for {full} channels")
            # For a fused qkv the indices are q's; Torch-Pruning adds k's and v's (and proj's inputs).
            idxs = _drop_indices(score, n_prune, parts.get(name, 1))
            root = group[0].dep.target.module
            sub = dg.get_pruning_group(root, group[0].dep.handler, idxs)
            if not dg.check_pruning_group(sub):
                raise UnsupportedLayerError(f"Torch-Pruning refused to prune group {name} to {want[name]} channels")
            sub.prune()
        except UnsupportedLayerError:
            raise
        except Exception as e:  # noqa: BLE001 - surgery failures become one line naming the group
            raise UnsupportedLayerError(f"pruning group {name} to {want[name]} channels failed "
                                        f"({_first_line(e)})") from None
    sync_attention(pruned)
    history = [[str(n), bool(out), [int(i) for i in idxs]] for n, out, idxs in dg.pruning_history()]
    drop_blocks(pruned, dropped)
    return pruned, history + block_entries(dropped)


def group_importances(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis) -> list:
    """Per-channel group L1 importance of every analysed group (numpy arrays, in ``analysis.groups`` order);
    the same scores ``prune`` ranks channels by."""
    import torch_pruning as tp

    work, dg = _copy_and_graph(model, input_shape)
    ignored = _ignored_modules(work, analysis)
    importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None)
    scores = {}
    heads = {g.name: g.full for g in analysis.groups if g.heads}
    for name, group in _groups(work, dg, ignored, only={g.name for g in analysis.groups}):
        with torch.no_grad():  # only around scoring: the graph is traced lazily with autograd
            sc = importance(group).detach().cpu()
        scores[name] = (sc.reshape(3, heads[name]).sum(0) if name in heads else sc).numpy()
    return [scores[g.name] for g in analysis.groups]


def replay_history(model: nn.Module, history: list, input_shape: tuple[int, ...]) -> nn.Module:
    """Apply a recorded pruning history to a freshly built model, in place (then load its state dict):
    the channel entries, then the dropped blocks (``block:NAME`` entries)."""
    channels = [[n, bool(o), list(i)] for n, o, i in history if not str(n).startswith(BLOCK)]
    dg = dependency_graph(model, input_shape)
    try:
        dg.load_pruning_history(channels)
    except Exception as e:  # noqa: BLE001
        raise UnsupportedLayerError(f"cannot replay the pruning history on this architecture: {e}") from None
    sync_attention(model)
    try:
        return drop_blocks(model, dropped_blocks(history))
    except (AttributeError, IndexError) as e:
        raise UnsupportedLayerError(f"cannot replay the pruning history on this architecture: a dropped block "
                                    f"is missing ({e})") from None


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Output channels (or features) of every conv and linear layer, by module name."""
    return {n: (m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
