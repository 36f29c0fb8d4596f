"""The analysis's probe: every searched group test-pruned on a copy of the model, the copy run; groups whose
pruning fails (or changes the output shape) are frozen with the first line of the error as the reason."""

from __future__ import annotations

import time

import torch
from torch import nn

from edgeprune.model.prune import Analysis, ModelCopyError, PrunableGroup, _first_line, prune


def _half(g: PrunableGroup) -> int:
    w = g.width(0.5)
    return w if w < g.full else g.choices[-2]


def _smallest(g: PrunableGroup) -> int:
    return g.choices[0]


# The probe prunes every group to about half, then to the smallest width the space allows, then every other
# group to about half (groups pruned alike can hide a failure: a reshape that holds while two widths shrink
# together). A failure that depends on the width or on another group shows in one of these more often than in
# none; the probe is a screen, not a proof, and a candidate whose surgery still fails is one clear error.
# Each: (width of a probed group, first group, step): all at half, all at smallest, even ones, odd ones.
_PROBE_WIDTHS = ((_half, 0, 1), (_smallest, 0, 1), (_half, 0, 2), (_half, 1, 2))


def _try_prune(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis, which: list[int],
               expected: tuple[int, ...], width=_half) -> str | None:
    """Prune only groups ``which`` (to ``width(group)``) on a copy and run it: None when that works, else why
    not."""
    widths = tuple(width(g) if i in which else g.full for i, g in enumerate(analysis.groups))
    try:
        pruned, _ = prune(model, input_shape, analysis, widths)
        with torch.no_grad():
            out = pruned(torch.zeros(1, *input_shape))
    except ModelCopyError:
        raise  # no group is to blame: nothing can be pruned
    except Exception as e:  # noqa: BLE001 - any failure freezes the groups that caused it
        return f"pruning it breaks the model ({_first_line(e)})"
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != expected:
        return f"pruning it changes the output shape ({expected} to {shape})"
    return None


def probe(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis, budget_s: float = 60.0) -> Analysis:
    """Freeze the groups whose pruning fails: for each of ``_PROBE_WIDTHS`` the groups are tried together, then
    halves (bisection; sets of up to 3 one by one) where that fails, until ``budget_s`` runs out. Groups that
    fail only together with others are frozen together."""
    with torch.no_grad():
        expected = tuple(model.eval()(torch.zeros(1, *input_shape)).shape)
    reasons: dict[int, str] = {}

    deadline = time.monotonic() + budget_s

    def bad_in(ids: list[int], width) -> None:
        why = _try_prune(model, input_shape, analysis, ids, expected, width)
        if why is None:
            return
        if len(ids) == 1:
            reasons[ids[0]] = why
            return
        if time.monotonic() > deadline:  # large graphs: each try costs seconds; stop isolating
            reasons.update({i: f"{why}; frozen with {len(ids) - 1} other groups (the probe's "
                               f"{budget_s:.0f} s ran out before the failure was isolated)" for i in ids})
            return
        before = len(reasons)
        if len(ids) <= 3:  # cheaper one by one than halving
            for i in ids:
                bad_in([i], width)
        else:
            half = len(ids) // 2
            bad_in(ids[:half], width)
            bad_in(ids[half:], width)
        if len(reasons) == before:  # each part works alone, not together
            reasons.update({i: why for i in ids})

    for width, first, step in _PROBE_WIDTHS:
        for _ in range(3):  # groups that fail only beside others show up in another pass
            remaining = [i for i in range(first, len(analysis.groups), step) if i not in reasons]
            if not remaining:
                break
            found = len(reasons)
            bad_in(remaining, width)
            if len(reasons) == found:
                break
    if not reasons:
        return analysis
    groups = tuple(g for i, g in enumerate(analysis.groups) if i not in reasons)
    frozen = analysis.frozen + tuple((analysis.groups[i].name, reasons[i]) for i in sorted(reasons))
    return Analysis(groups, analysis.ignored, analysis.unsupported, frozen)
