"""Accuracy, BatchNorm recalibration and cost counting on in-memory splits.

``device`` (accuracy, recalibrate_bn, and ``finetune.train``): None or "cpu" runs where the model is, as
always (no copy of anything); "cuda" moves the model there for the call, each batch as it is used, and
the model back to the CPU before returning (export and latency measurement work on the CPU model)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from edgeprune.errors import EdgePruneError


def resolve_device(name: str | None) -> str:
    """``--train-device``: "auto" → "cuda" when torch sees a CUDA device, else "cpu"; "cuda" without one is
    an error (raised before any work)."""
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            build = (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build")
            raise EdgePruneError(f"--train-device cuda: no CUDA device is available here (torch {torch.__version__}, "
                                 f"{build}); use --train-device cpu, or auto to use CUDA only when there is one")
        return "cuda"
    raise EdgePruneError(f"--train-device {name!r}: give auto, cpu or cuda")


def moves(device) -> bool:
    """Whether running on ``device`` means moving tensors off the CPU."""
    return device is not None and torch.device(device).type != "cpu"


@contextmanager
def on_device(device, *models: nn.Module):
    """Run ``models`` on ``device`` inside the block and bring each back to where it was (the CPU) after it;
    nothing happens for None or "cpu". Nested blocks move nothing more."""
    if not moves(device):
        yield
        return
    homes = []
    for m in models:
        first = next(iter(m.parameters()), None)
        homes.append(first.device if first is not None else torch.device("cpu"))
        m.to(device)
    try:
        yield
    finally:
        for m, home in zip(models, homes):
            m.to(home)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500, device=None) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on N×C×H×W images ``x`` with labels ``y``."""
    model.eval()
    correct = 0
    move = moves(device)
    with on_device(device, model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            if move:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            correct += int((model(xb).argmax(1) == yb).sum())
    return correct / max(1, len(x))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, *, batch_size: int = 100, device=None) -> None:
    """Adaptive BN: re-estimate every BatchNorm's running mean/var from calibration images ``x``.

    Pruning removes channels whose activations fed the statistics of the layers after them, so the
    stored statistics are stale; a cumulative average over a few hundred images repairs most of the
    damage without any training (Li et al., EagleEye 2020).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all calibration batches
    model.train()
    move = moves(device)
    with on_device(device, model):
        for i in range(0, len(x), batch_size):
            model(x[i : i + batch_size].to(device, non_blocking=True) if move else x[i : i + batch_size])
    model.eval()
    for m, (mom, _) in zip(bns, saved):
        m.momentum = mom


def count_macs_params(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Multiply-accumulates and parameters for one input of shape C×H×W (batch 1)."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    model.train(was_training)
    return int(macs), int(params)
