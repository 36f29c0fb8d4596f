"""The analysis's probe: every searched group test-pruned on a copy of the model, the copy run; groups whose
pruning fails (or changes the output shape) are frozen with the first line of the error as the reason."""

from __future__ import annotations

import time

import torch
from torch import nn

from edgeprune.model import depgraph
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


def _failed_in(model: nn.Module, e: BaseException) -> str | None:
    """The name of the innermost module of ``model`` whose ``forward`` was running when ``e`` was raised
    ("" for the model itself), or None when no module of it was (the surgery failed, not the run)."""
    names = {id(m): n for n, m in model.named_modules()}
    where, tb = None, e.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names:
            where = names[id(owner)]
        tb = tb.tb_next
    return where


def _try_prune(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis, which: list[int],
               expected: tuple[int, ...], width=_half) -> tuple[str | None, str | None]:
    """Prune only groups ``which`` (to ``width(group)``) on a copy and run it. Returns (None when that works,
    else why not; where the run failed: ``_failed_in``)."""
    widths = tuple(width(g) if i in which else g.full for i, g in enumerate(analysis.groups))
    pruned = None
    try:
        pruned, _ = prune(model, input_shape, analysis, widths)
        with torch.no_grad():
            out = pruned(torch.zeros(1, *input_shape))
    except ModelCopyError:
        raise  # no group is to blame: nothing can be pruned
    except Exception as e:  # noqa: BLE001 - any failure freezes the groups that caused it
        return f"pruning it breaks the model ({_first_line(e)})", _failed_in(pruned, e) if pruned is not None else None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    if shape != expected:
        return f"pruning it changes the output shape ({expected} to {shape})", None
    return None, None


def _suspects(ids: list[int], where: str | None, analysis: Analysis, members: dict[str, frozenset[str]]) -> list[int]:
    """The groups of ``ids`` that cut a module inside ``where`` (a module's name, "" the whole model)."""
    if not where:
        return []
    inside = where + "."
    return [i for i in ids
            if any(m == where or m.startswith(inside) for m in members.get(analysis.groups[i].name, ()))]


def probe(model: nn.Module, input_shape: tuple[int, ...], analysis: Analysis, budget_s: float = 60.0, *,
          members: dict[str, frozenset[str]] | None = None) -> Analysis:
    """Freeze the groups whose pruning fails: for each of ``_PROBE_WIDTHS`` the groups are tried together, then
    parts (sets of up to 3 one by one) where that fails, until ``budget_s`` runs out. Groups that fail only
    together with others are frozen together.

    The parts: where the run failed inside a module and ``members`` (group name → names of the modules it
    cuts) names the groups that cut something in it, those suspects and the rest; else halves. Why: on
    torchvision's MaxViT-T four of 51 groups fail, each in its own attention layer, and halving took 34
    tries of 1–7 s to isolate them; a failure's module names its group in one try."""
    with torch.no_grad():
        expected = tuple(model.eval()(torch.zeros(1, *input_shape)).shape)
    reasons: dict[int, str] = {}

    deadline = time.monotonic() + budget_s

    passed: set[tuple] = set()  # (width, groups) tried and working: pruning is deterministic, no need to retry

    def bad_in(ids: list[int], width) -> None:
        if (width, tuple(ids)) in passed:
            return
        why, where = _try_prune(model, input_shape, analysis, ids, expected, width)
        if why is None:
            passed.add((width, tuple(ids)))
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
            suspects = _suspects(ids, where, analysis, members or {}) if depgraph.FAST[0] else []
            if 0 < len(suspects) < len(ids):
                parts = [suspects, [i for i in ids if i not in suspects]]
            else:
                parts = [ids[: len(ids) // 2], ids[len(ids) // 2:]]
            for part in parts:
                bad_in(part, width)
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
