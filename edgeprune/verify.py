"""One numerical verification for every artifact: outputs compared with a reference on real inputs.

Every artifact (the simplified ONNX model against PyTorch, the TVM library against ONNX Runtime, here or
on a device, the written ``model.pt`` reloaded against the model that was exported) is checked with
``compare`` and the one tolerance below: ``|got - ref| <= ATOL + RTOL * |ref|`` elementwise, float32
logits. Conv/BN folding and TVM's fusion reorder sums, which gives ~1e-6 differences on ResNet-20.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ATOL, RTOL = 1e-4, 1e-3


@dataclass(frozen=True)
class Verdict:
    """How an artifact compared with its reference: ``max_abs_diff`` over ``samples`` inputs; ``ok`` when
    every output is within tolerance. ``method`` says what was compared with what, and where."""

    ok: bool
    max_abs_diff: float
    samples: int
    atol: float = ATOL
    rtol: float = RTOL
    top1_agreement: float = 1.0
    method: str = ""

    def to_dict(self) -> dict:
        d = {"ok": self.ok, "max_abs_diff": self.max_abs_diff, "samples": self.samples, "atol": self.atol,
             "rtol": self.rtol, "top1_agreement": self.top1_agreement}
        if self.method:
            d["method"] = self.method
        return d


def compare(ref: np.ndarray, got: np.ndarray, *, method: str = "") -> Verdict:
    """Compare outputs ``got`` with ``ref`` (both N×K, one row per input) within ``ATOL + RTOL·|ref|``."""
    ref = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    got = np.asarray(got, dtype=np.float64).reshape(len(got), -1)
    if ref.shape != got.shape:
        return Verdict(False, float("inf"), len(ref), method=f"{method} (output shapes differ: {got.shape} vs {ref.shape})")
    diff = np.abs(got - ref)
    ok = bool(np.all(diff <= ATOL + RTOL * np.abs(ref)))
    agree = float(np.mean(got.argmax(1) == ref.argmax(1))) if len(ref) else 1.0
    return Verdict(ok, float(diff.max()) if diff.size else 0.0, len(ref), top1_agreement=agree, method=method)
