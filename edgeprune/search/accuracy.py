"""A candidate's search accuracy: run on the exported ONNX model, stopped early when clearly worse.

During the search a candidate's accuracy only has to rank it against the incumbent (the best feasible
candidate so far). ``search_accuracy`` runs the validation subset through the candidate in chunks and, after
each ``EarlyStop.every`` images, asks whether the candidate's accuracy on the *whole* subset could still
reach the incumbent's; when it clearly cannot, it stops and returns the accuracy of the images seen so far.

The test. The subset's images are in random order (``data.splits`` permutes them), so after ``n`` of
``N`` images with ``k`` correct, ``p̂ = k / n`` estimates the candidate's accuracy ``p`` on all ``N``,
sampled without replacement: ``Var(p̂) = p(1 − p) / n · (N − n) / (N − 1)``. The candidate is stopped when
the one-sided upper bound ``p̂ + z·se`` lies below the incumbent's accuracy ``bar`` (measured on the same
``N`` images). ``se`` uses ``max(p̂, bar)`` inside ``p(1 − p)`` (a larger variance near the bar, so a lucky
low start does not stop a close candidate). With ``z = 3`` each look wrongly stops a candidate that
could match the bar with probability ≤ 0.14%; at most ``N / every − 1`` looks are taken (4 for 1000
images), ≤ 0.6% overall (Bonferroni). A stopped estimate is the first ``n`` images' accuracy: unbiased for
a fixed ``n``, slightly low on average given that it stopped (optional stopping); it is always below the
incumbent, so the choice of the best candidate is unchanged.

Shapes: ``x`` N×C×H×W float32 (normalised as the model expects), ``y`` N int64 labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class EarlyStop:
    """When to look and how sure to be. ``every``: images between looks (also the first look);
    ``z``: the one-sided bound's width in standard errors; ``enabled=False`` always runs all images."""

    every: int = 200
    z: float = 3.0
    enabled: bool = True

    def __post_init__(self):
        if self.every < 1 or self.z <= 0:
            raise ValueError(f"invalid early-stop settings: {self}")

    def clearly_below(self, correct: int, seen: int, total: int, bar: float | None) -> bool:
        """Whether ``correct`` of the first ``seen`` of ``total`` images show, with the bound above, that the
        accuracy on all ``total`` images is below ``bar`` (a fraction; None: no incumbent, never stop)."""
        if not self.enabled or bar is None or seen >= total or seen <= 0:
            return False
        p = correct / seen
        q = max(p, min(bar, 1.0))
        fpc = (total - seen) / (total - 1) if total > 1 else 0.0
        se = math.sqrt(max(q * (1.0 - q), 1.0 / seen) / seen * fpc)
        return p + self.z * se < bar


@dataclass(frozen=True)
class SearchAccuracy:
    """``accuracy`` (fraction) on the first ``images`` of the ``total`` validation images;
    ``stopped_early`` when the test stopped before ``total``."""

    accuracy: float
    images: int
    total: int

    @property
    def stopped_early(self) -> bool:
        return self.images < self.total


def search_accuracy(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray, *,
                    bar: float | None = None, early: EarlyStop = EarlyStop(), batch: int = 100) -> SearchAccuracy:
    """Top-1 accuracy of ``predict`` (a batch B×C×H×W → logits B×classes) on ``x``/``y`` in batches of
    ``batch`` images, stopped at a look (every ``early.every`` images) once clearly below ``bar``."""
    total = len(y)
    correct = seen = 0
    next_look = early.every
    while seen < total:
        end = min(total, seen + batch, next_look)
        logits = predict(x[seen:end])
        correct += int((np.asarray(logits).argmax(1) == y[seen:end]).sum())
        seen = end
        if seen >= next_look:
            if early.clearly_below(correct, seen, total, bar):
                break
            next_look += early.every
    return SearchAccuracy(correct / max(1, seen), seen, total)


def ort_predictor(onnx_bytes: bytes, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A batch predictor on ONNX Runtime's CPU provider for an exported model (input ``input`` with a
    dynamic batch axis, output ``logits``), using ``threads`` intra-op threads. Accuracy needs throughput,
    not the target's timing conditions, so it may use all the threads the machine gives torch."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def predict(xb: np.ndarray) -> np.ndarray:
        return sess.run(None, {name: np.ascontiguousarray(xb, dtype=np.float32)})[0]

    return predict
