"""Torch-Pruning's dependency graph, made tolerant and fast: reshapes and concatenations it cannot map are left
unmapped (the groups through them are frozen, not the model refused), flatten mappings that would explode
(channels-last reshapes) are refused fast (``MappingTooLargeError``), a group is built by a walk that visits
each index of a node once, and the graph's index mappings are recomputed only after something was pruned.

Every candidate and every probe try prunes a fresh copy of the same model: ``copy_with_graph`` copies the model
together with the graph traced once on it (``traced``), instead of tracing each copy again (a trace is 0.3–1.5 s
on a Swin or MaxViT; copying instead saved 5–20% of their analysis, docs/benchmarks.md)."""

from __future__ import annotations

import copy
import types
import warnings

import torch
from torch import nn

from edgeprune.errors import UnsupportedLayerError

_MAX_MAPPED_INDICES = 200_000
_mapped = [0]  # indices mapped through flattens while building the current group


class MappingTooLargeError(RuntimeError):
    """Torch-Pruning's index mapping for a group would hold more than ``_MAX_MAPPED_INDICES`` indices."""


def _patch_torch_pruning() -> None:
    """Torch-Pruning 1.6, patched in place once (each part is explained where it is installed):

    - reshapes and concatenations it cannot map are left unmapped instead of failing the model;
    - flatten mappings that would explode are refused fast (``MappingTooLargeError``);
    - ``get_pruning_group`` builds a group with ``_pruning_group``'s walk (each index through a node once);
    - index mappings are recomputed only after ``Group.prune``.

    The first: Torch-Pruning divides by zero mapping channel indices through a reshape whose input or output
    width it infers as 0 (ShuffleNet's channel shuffle), when it builds the graph and again for every pruning
    group (and sums None widths at some concatenations). Such a node is left unmapped and recorded in
    ``graph.unmapped``, so that the groups through it are frozen instead of the whole model failing; every
    other reshape is mapped as before."""
    from torch_pruning.dependency import index_mapping

    if getattr(index_mapping.update_reshape_index_mapping, "edgeprune_tolerant", False):
        return

    def tolerant(original, errors):
        def update(graph, node):
            try:
                return original(graph, node)
            except errors:
                unmapped = graph.__dict__.setdefault("unmapped", [])
                if all(n is not node for n in unmapped):
                    unmapped.append(node)
                return None

        update.edgeprune_tolerant = True
        return update

    index_mapping.update_reshape_index_mapping = tolerant(index_mapping.update_reshape_index_mapping, ZeroDivisionError)
    # A concatenation whose input widths Torch-Pruning cannot infer (None: torchvision Swin's channels-last patch
    # merging) fails the same way, with a TypeError summing them.
    index_mapping.update_concat_index_mapping = tolerant(index_mapping.update_concat_index_mapping, TypeError)

    # A flatten mapping multiplies every channel index by its stride. Through channels-last reshapes (torchvision
    # Swin) strides compound into lists of 10^8 indices and one group takes many minutes to build; such a
    # mapping is wrong for channels anyway. Refuse it fast: that root's group is frozen.
    flatten_call = index_mapping._FlattenIndexMapping.__call__

    def bounded(self, idxs):
        if not self.reverse:
            _mapped[0] += len(idxs) * self._stride
            if _mapped[0] > _MAX_MAPPED_INDICES:
                raise MappingTooLargeError(f"following its channels maps more than {_MAX_MAPPED_INDICES} indices "
                                           f"(a flatten with stride {self._stride}: channels-last reshapes?)")
        if not FAST[0]:
            return flatten_call(self, idxs)
        return _flatten(self, idxs)

    from torch_pruning.dependency.graph import DependencyGraph

    # Torch-Pruning asks for a module's pruner millions of times on large graphs (its shape inference walks the
    # graph for every reshape, every time the mappings are recomputed; ~20% of MaxViT-T's analysis), each time
    # through a chain of isinstance checks. For every module but a convolution (depthwise or not depends on its
    # current widths) the answer depends on the class alone: kept per graph and class.
    pruner_of = DependencyGraph.get_pruner_of_module

    def cached_pruner_of(self, module):
        if not FAST[0] or isinstance(module, nn.modules.conv._ConvNd):
            return pruner_of(self, module)
        cache = self.__dict__.setdefault("edgeprune_pruner_of_class", {})
        cls = type(module)
        if cls not in cache:
            cache[cls] = pruner_of(self, module)
        return cache[cls]

    DependencyGraph.get_pruner_of_module = cached_pruner_of

    def counted(self, module, pruning_fn, idxs):  # the bound is per group
        _mapped[0] = 0
        return _pruning_group(self, module, pruning_fn, idxs)

    DependencyGraph.torch_pruning_get_pruning_group = DependencyGraph.get_pruning_group  # kept for the tests
    DependencyGraph.get_pruning_group = counted

    # Torch-Pruning recomputes every index mapping of the graph (channel widths through each reshape, concat,
    # split…) before it builds any group: ~1 s per group on a Swin, most of the analysis. The mappings change
    # only when something is pruned, so they are recomputed only then (``edgeprune_mapped`` is cleared by
    # ``Group.prune``, set when the mappings are fresh).
    from torch_pruning.dependency.group import Group

    group_prune = Group.prune

    def prune_and_mark(self, *args, **kwargs):
        try:
            return group_prune(self, *args, **kwargs)
        finally:
            if self._DG is not None:
                self._DG.__dict__["edgeprune_mapped"] = False

    Group.prune = prune_and_mark
    index_mapping._FlattenIndexMapping.__call__ = bounded

    # Recomputing the mappings, Torch-Pruning infers the channels at every reshape, concat, split… by walking the
    # graph from that node each time, again for every node it passes (MaxViT-T: ~460 reshapes, ~10,000 walk
    # steps per recomputation, a quarter of its analysis). Within one recomputation nothing they read changes,
    # so each node's answer is kept (``_update_mappings``), with the steps it took: its walk-step limit applies
    # as before (see ``_memoised``).
    from torch_pruning.dependency import shape_infer

    shape_infer.infer_out_channels_recursively = _memoised("out", shape_infer.infer_out_channels_recursively)
    shape_infer.infer_in_channels_recursively = _memoised("in", shape_infer.infer_in_channels_recursively)


_shape_memo: list = [None]  # while ``_update_mappings`` runs: {(direction, id(node)): (channels, walk steps)}


def _memoised(direction: str, infer):
    """Torch-Pruning's ``infer_{out,in}_channels_recursively(graph, node, recursive_depth)``, answered from
    ``_shape_memo`` where it holds the node. ``recursive_depth[0]`` counts walk steps; every step checks it
    against ``MAX_RECURSION_DEPTH`` and gives up (None) past it. An answer is kept only from a walk that stayed
    within the limit, with its number of steps, and reused only where the steps counted so far plus its own
    stay within the limit: exactly where the walk itself would give the same answer (it reads nothing that
    changes during a recomputation); the count advances as the walk would have advanced it."""
    from torch_pruning.dependency import constants

    def memoised(graph, node, recursive_depth):
        memo = _shape_memo[0]
        if memo is None:
            return infer(graph, node, recursive_depth)
        key, start = (direction, id(node)), recursive_depth[0]
        hit = memo.get(key)
        if hit is not None and start + hit[1] <= constants.MAX_RECURSION_DEPTH:
            recursive_depth[0] = start + hit[1]
            return hit[0]
        out = infer(graph, node, recursive_depth)
        if recursive_depth[0] <= constants.MAX_RECURSION_DEPTH:
            memo[key] = (out, recursive_depth[0] - start)
        return out

    return memoised


def _update_mappings(dg) -> None:
    """Torch-Pruning's ``update_index_mapping(dg)``, each node's inferred channels computed once (``_memoised``;
    not with ``FAST`` off)."""
    from torch_pruning.dependency import index_mapping

    _shape_memo[0] = {} if FAST[0] else None
    try:
        index_mapping.update_index_mapping(dg)
    finally:
        _shape_memo[0] = None


# False: Torch-Pruning's own flatten mapping and pruner lookup, and a walk for every sub-group (``sub_group``
# unused; tools/bench_analysis.py compares the two).
FAST = [True]


def _flatten(mapping, idxs):
    """Torch-Pruning's ``_FlattenIndexMapping.__call__``, same indices in the same order, with the index tuples
    built directly (its keyword construction of millions of them was ~20% of MaxViT-T's analysis)."""
    from torch_pruning._helpers import _HybridIndex

    new, stride = tuple.__new__, mapping._stride
    if mapping.reverse:
        return list(set([new(_HybridIndex, (i.idx // stride, i.root_idx)) for i in idxs]))
    return [new(_HybridIndex, (k, i.root_idx)) for i in idxs for k in range(i.idx * stride, (i.idx + 1) * stride)]


def _pruning_group(dg, module: nn.Module, pruning_fn, idxs):
    """Torch-Pruning 1.6's ``DependencyGraph.get_pruning_group``, with one change: an index reaches a
    (node, pruning function) once. Torch-Pruning walks every path through the graph with the indices that path
    carries and stops only where a node gets exactly the same index list again; where residual paths slice and
    re-concatenate channels (timm's ReXNet adds its shortcut to the first channels only), each block doubles
    the paths and one group took over 10 minutes to build. Every index mapping (concat, split, slice,
    flatten, reshape) maps each index on its own, so walking only the indices a node has not had yet gives
    the same indices per layer; where several root channels reach one channel the root index recorded for it
    may be another of them (seen on 9 of GhostNet's 96 groups, 3 of EdgeNeXt's 51)."""
    from numbers import Number

    from torch_pruning import _helpers, ops
    from torch_pruning.dependency.dependency import Dependency
    from torch_pruning.dependency.group import Group
    from torch_pruning.pruner import function

    if module not in dg.module2node:
        raise ValueError(f"Module {module} is not in the dependency graph.")
    if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
        pruning_fn = function.prune_depthwise_conv_out_channels
    if isinstance(idxs, Number):
        idxs = [idxs]
    idxs = [_helpers._HybridIndex(idx=i, root_idx=i) for i in idxs]
    if not dg.__dict__.get("edgeprune_mapped"):  # see _patch_torch_pruning
        _update_mappings(dg)
        dg.__dict__["edgeprune_mapped"] = True

    root = dg.module2node[module]
    root_dep = Dependency(pruning_fn, pruning_fn, source=root, target=root)
    # Per (target node, pruning function): the first dependency that reached it and, per index, the first
    # (index, root index) that did, in Torch-Pruning's order: what its merge keeps. ``expanded``: the indices
    # each has passed on; a node passes on only indices it has not passed on before.
    reached: dict[tuple[int, object], tuple] = {(id(root), pruning_fn): (root_dep, {i.idx: i for i in idxs})}
    expanded: dict[tuple[int, object], set] = {}
    stack = [(root_dep, idxs)]
    several_roots = False  # some channel is reached from two root channels (see sub_group)
    while stack:
        dep, idxs = stack.pop()
        done = expanded.setdefault((id(dep.target), dep.handler), set())
        idxs = [i for i in idxs if i.idx not in done]
        if not idxs:
            continue
        done.update(i.idx for i in idxs)
        for new_dep in dep.target.dependencies:
            if not new_dep.is_triggered_by(dep.handler):
                continue
            new = idxs
            for mapping in new_dep.index_mapping:
                if mapping is not None:
                    new = mapping(new)
            if not new:
                continue
            k = (id(new_dep.target), new_dep.handler)
            if k not in reached:
                reached[k] = (new_dep, {})
            had = reached[k][1]
            for i in new:
                first = had.setdefault(i.idx, i)
                if first.root_idx != i.root_idx:
                    several_roots = True
            stack.append((new_dep, new))

    # Torch-Pruning's merge (Group.add_and_merge): one item per target and handler, each index once.
    merged = Group()
    merged._DG = dg
    ignored = {id(p) for p in dg.ignored_params}
    for dep, had in reached.values():
        if isinstance(dep.target.module, nn.Parameter) and id(dep.target.module) in ignored:
            continue
        hybrid = list(had.values())
        merged.add_dep(dep, _helpers.to_plain_idxs(hybrid))
        merged[len(merged) - 1].root_idxs = _helpers.to_root_idxs(hybrid)
    merged.edgeprune_one_root = not several_roots
    return merged


def sub_group(group, root_idxs):
    """The group that ``get_pruning_group`` would build from ``group``'s root and handler for the root
    channels ``root_idxs`` only, taken from ``group`` without a walk; None where that cannot be exact.

    Exact when every channel of ``group`` was reached from one root channel only (``edgeprune_one_root``,
    recorded by the walk): a channel is then reached from a subset of the roots exactly when its root is in
    it, since the walk passes indices through the same mappings index by index. Otherwise (several root
    channels reach one: GhostNet's cheap operations) the walk's recorded root is one of them, and only a
    walk can say which channels the subset reaches."""
    from torch_pruning.dependency.group import Group

    if not getattr(group, "edgeprune_one_root", False):
        return None
    keep = set(root_idxs)
    sub = Group()
    sub._DG = group._DG
    for item in group:
        pairs = [(i, r) for i, r in zip(item.idxs, item.root_idxs) if r in keep]
        sub.add_dep(item.dep, [i for i, _ in pairs])
        sub[len(sub) - 1].root_idxs = [r for _, r in pairs]
    return sub


def dependency_graph(model: nn.Module, input_shape: tuple[int, ...]):
    """Torch-Pruning's dependency graph; ``dg.unmapped`` holds the reshape nodes it could not map."""
    import torch_pruning as tp

    model.eval()
    _patch_torch_pruning()
    try:
        with warnings.catch_warnings():
            # "Unwrapped parameters detected": Torch-Pruning guesses their channel dim; the probe checks it.
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    except Exception as e:  # noqa: BLE001 - Torch-Pruning raises many kinds on graphs it cannot trace
        first = str(e).splitlines()[0][:300] if str(e) else ""
        raise UnsupportedLayerError(f"cannot trace the model's channel dependencies: {type(e).__name__}: {first}") from None
    dg.__dict__.setdefault("unmapped", [])
    dg.__dict__["edgeprune_mapped"] = True  # build_dependency has just computed them
    return dg


# The last model traced by ``traced``: (input shape, structure signature, graph; ``graph.model`` is the model).
# One entry: a graph keeps the model and the trace's autograd nodes alive, and runs prune one model at a time.
_last: list = []


def _signature(model: nn.Module) -> tuple:
    """What the traced graph depends on besides the forward code: module names and types, parameter and buffer
    shapes. A model changed in place (a layer replaced, channels pruned) gets a new signature."""
    return (tuple((n, type(m)) for n, m in model.named_modules()),
            tuple((n, tuple(p.shape)) for n, p in model.named_parameters()),
            tuple((n, tuple(b.shape)) for n, b in model.named_buffers()))


def traced(model: nn.Module, input_shape: tuple[int, ...]):
    """``dependency_graph(model, input_shape)``, traced once and kept for the last model asked for, while that
    model's structure is unchanged. Not to be pruned: ``copy_with_graph`` gives a copy to prune."""
    sig = _signature(model)
    if _last:
        shape, old_sig, dg = _last[0]
        if dg.model is model and shape == tuple(input_shape) and old_sig == sig:
            return dg
    was_training = model.training
    try:
        dg = dependency_graph(model, input_shape)
    finally:
        model.train(was_training)  # the trace runs in eval mode; the caller's model keeps its mode
    _last[:] = [(tuple(input_shape), sig, dg)]
    return dg


def _shared(dg) -> dict[int, object]:
    """A deepcopy memo that keeps what a graph copy must share with the original: the autograd nodes of the
    trace (read for saved sizes; they cannot be copied), Torch-Pruning's pruner objects (a dependency's
    trigger and handler are their bound methods, compared by equality) and modules/functions it refers to."""
    keep: list = [v for v in vars(dg).values() if isinstance(v, (types.ModuleType, types.FunctionType))]
    keep += list(dg.REGISTERED_PRUNERS.values()) + list(dg.CUSTOMIZED_PRUNERS.values())
    for node in dg.module2node.values():
        keep.append(node.grad_fn)
        for dep in node.dependencies:
            keep += [getattr(dep.trigger, "__self__", None), getattr(dep.handler, "__self__", None)]
    return {id(o): o for o in keep if o is not None}


def copy_with_graph(model: nn.Module, input_shape: tuple[int, ...]):
    """A deep copy of ``model`` in eval mode and its dependency graph, ready to prune: the graph traced once on
    ``model`` (``traced``) copied along with it, so that both refer to the copy's modules. Raises what
    ``copy.deepcopy`` raises; the caller then copies and traces the usual way."""
    dg = traced(model, input_shape)
    memo = _shared(dg)
    new_model = copy.deepcopy(model, memo).eval()
    # Nodes link to each other (inputs, outputs, dependencies): a plain deepcopy recurses along the whole graph
    # and overflows Python's stack on deep models (ResNet-56). Every node is entered in the memo first, then
    # filled, so copying one node's links never recurses into another node.
    nodes = list(dg.module2node.values())
    for node in nodes:
        memo[id(node)] = object.__new__(type(node))
    for node in nodes:
        memo[id(node)].__dict__.update(copy.deepcopy(vars(node), memo))
    new_dg = copy.deepcopy(dg, memo)
    return new_model, new_dg
