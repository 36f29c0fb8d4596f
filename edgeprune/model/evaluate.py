"""Accuracy, BatchNorm recalibration and cost counting on in-memory splits."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on N×C×H×W images ``x`` with labels ``y``."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(1, len(x))


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, *, batch_size: int = 100) -> None:
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
    for i in range(0, len(x), batch_size):
        model(x[i : i + batch_size])
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
