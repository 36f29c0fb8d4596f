"""Torch-Pruning's dependency graph, made tolerant: reshapes and concatenations it cannot map are left
unmapped (the groups through them are frozen, not the model refused), and flatten mappings that would
explode (channels-last reshapes) are refused fast (``MappingTooLargeError``)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from edgeprune.errors import UnsupportedLayerError

_MAX_MAPPED_INDICES = 200_000
_mapped = [0]  # indices mapped through flattens while building the current group


class MappingTooLargeError(RuntimeError):
    """Torch-Pruning's index mapping for a group would hold more than ``_MAX_MAPPED_INDICES`` indices."""


def _install_tolerant_reshape_mapping() -> None:
    """Torch-Pruning 1.6 divides by zero mapping channel indices through a reshape whose input or output width
    it infers as 0 (ShuffleNet's channel shuffle), when it builds the graph and again for every pruning
    group (and sums None widths at some concatenations). Leave such a node unmapped and record it in ``graph.unmapped``, so that the groups through it
    are frozen instead of the whole model failing. Installed once; every other reshape is mapped as before."""
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
        return flatten_call(self, idxs)

    from torch_pruning.dependency.graph import DependencyGraph

    group_call = DependencyGraph.get_pruning_group

    def counted(self, *args, **kwargs):  # the bound is per group
        _mapped[0] = 0
        return group_call(self, *args, **kwargs)

    DependencyGraph.get_pruning_group = counted
    index_mapping._FlattenIndexMapping.__call__ = bounded


def dependency_graph(model: nn.Module, input_shape: tuple[int, ...]):
    """Torch-Pruning's dependency graph; ``dg.unmapped`` holds the reshape nodes it could not map."""
    import torch_pruning as tp

    model.eval()
    _install_tolerant_reshape_mapping()
    try:
        with warnings.catch_warnings():
            # "Unwrapped parameters detected": Torch-Pruning guesses their channel dim; the probe checks it.
            warnings.simplefilter("ignore")
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))
    except Exception as e:  # noqa: BLE001 - Torch-Pruning raises many kinds on graphs it cannot trace
        first = str(e).splitlines()[0][:300] if str(e) else ""
        raise UnsupportedLayerError(f"cannot trace the model's channel dependencies: {type(e).__name__}: {first}") from None
    dg.__dict__.setdefault("unmapped", [])
    return dg
