"""Load a data set by name or path and split it deterministically into train / validation / calibration.

Every split holds float32 N×C×H×W images normalised as ``(x - 0.5) / 0.25`` (inputs in [0, 1]) and
int64 labels. The same normalisation is recorded in checkpoints and reports: the exported ONNX
model expects normalised inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from edgeprune.errors import DataError

MEAN, STD = 0.5, 0.25
BUILTINS = ("shapes", "digits")


@dataclass(frozen=True)
class DataSplits:
    """Three disjoint splits of one data set. ``calib`` feeds BN recalibration and artifact verification."""

    name: str
    num_classes: int
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    calib: tuple[torch.Tensor, torch.Tensor]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def summary(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "train": len(self.train[1]), "val": len(self.val[1]), "calib": len(self.calib[1]),
                "normalisation": {"mean": MEAN, "std": STD}}


def _split(name: str, x: torch.Tensor, y: torch.Tensor, *, n_val: int, n_calib: int, seed: int = 0) -> DataSplits:
    if len(x) != len(y):
        raise DataError(f"data set {name!r}: {len(x)} images but {len(y)} labels")
    if len(x) < n_val + n_calib + 10:
        raise DataError(f"data set {name!r} has only {len(x)} samples; need more than {n_val + n_calib + 10}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x = ((x.float() - MEAN) / STD)[perm]
    y = y.long()[perm]
    v, c = slice(0, n_val), slice(n_val, n_val + n_calib)
    t = slice(n_val + n_calib, None)
    num_classes = int(y.max()) + 1
    return DataSplits(name, num_classes, (x[t], y[t]), (x[v], y[v]), (x[c], y[c]))


@lru_cache(maxsize=4)
def load_data(spec: str) -> DataSplits:
    """``spec`` is a built-in name (``shapes``, ``digits``) or a path: a CIFAR-10 python-batch folder,
    a folder of class sub-folders of images, or an ``.npz`` with ``x`` (N×H×W×C or N×C×H×W) and ``y``."""
    if spec == "shapes":
        from edgeprune.data.builtin import make_shapes

        x, y = make_shapes(13000, seed=20261122)
        return _split("shapes", x, y, n_val=2000, n_calib=1000)
    if spec == "digits":
        from edgeprune.data.builtin import make_digits

        x, y = make_digits()
        return _split("digits", x, y, n_val=360, n_calib=180)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data {spec!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing path")
    from edgeprune.data import readers

    x, y = readers.read(path)
    n = len(y)
    return _split(path.name, x, y, n_val=min(5000, n // 5), n_calib=min(1000, n // 10))
