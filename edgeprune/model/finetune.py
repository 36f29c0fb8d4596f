"""Training and fine-tuning on in-memory splits, optionally distilling from the original model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.02  # peak SGD learning rate, cosine-annealed to 0 over all steps
    momentum: float = 0.9
    weight_decay: float = 5e-4
    distill: bool = False  # add a KD loss from the teacher's logits
    distill_temperature: float = 4.0
    distill_weight: float = 0.7  # weight of the KD term; (1 - weight) on the label loss
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"invalid training config: {self}")


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, on a batch N×C×H×W."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=g)
    dy = torch.randint(0, 9, (n,), generator=g)
    rows = (dy[:, None] + torch.arange(h)[None]).clamp(max=h + 7)
    cols = (dx[:, None] + torch.arange(w)[None]).clamp(max=w + 7)
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, *,
          teacher: nn.Module | None = None,
          on_step: Callable[[int, int, float], None] | None = None, device=None) -> list[float]:
    """Train ``model`` in place with SGD + cosine schedule; returns the mean loss of each epoch.

    ``on_step(step, total_steps, loss)`` is called after every step (progress reporting). ``device``
    ("cuda"): the model (and teacher) train there and come back to the CPU; batches are augmented on the
    CPU with the seeded generator, as on the CPU path, then moved. None or "cpu": nothing is moved.
    """
    from edgeprune.model.evaluate import moves, on_device

    with on_device(device, *(m for m in (model, teacher) if m is not None)):
        return _train(model, x, y, cfg, teacher, on_step, device if moves(device) else None)


def _train(model, x, y, cfg: TrainConfig, teacher, on_step, device) -> list[float]:
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, nesterov=True)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = max(1, cfg.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if cfg.distill and teacher is None:
        raise ValueError("distillation needs a teacher model")
    if teacher is not None:
        teacher.eval()
    losses, step = [], 0
    for _ in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        running = 0.0
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            xb, yb = augment(x[idx], g), y[idx]
            if device is not None:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if cfg.distill:
                with torch.no_grad():
                    t_logits = teacher(xb)
                T = cfg.distill_temperature
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean") * T * T
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_value = loss.item()
            running += loss_value * len(idx)
            if on_step:
                on_step(step, total, loss_value)
        losses.append(running / len(x))
    model.eval()
    return losses
