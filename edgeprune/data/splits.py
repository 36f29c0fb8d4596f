"""Load a data set by name or path, bring it to the model's input shape and normalisation, and split it
deterministically into train / validation / calibration.

Every split holds float32 N×C×H×W images, RGB in [0, 1] normalised as ``(x - mean) / std`` per channel
(``Normalisation``; without one, edgeprune's legacy ``(x - 0.5) / 0.25``), and int64 labels. The same
normalisation is recorded in checkpoints, reports and the manifest: the exported ONNX model expects
normalised inputs.

Sizes. Built-in data are generated at 32×32 and resized (bilinear, antialiased); at sizes where their
13000 (``shapes``) images would take more than ``MAX_BUILTIN_BYTES`` (1.5 GB) as float32, fewer images are
generated, with validation and calibration splits of about 24% and 12% of them (at 224×224: 2491 images,
598 val, 299 calib, 1594 train); the summary's ``note`` says so. User data (``readers.py``) are read
lazily and brought to the model's size chunk by chunk; a data set that would take more than
``MAX_USER_BYTES`` (4 GB) as float32 at the model's size is refused with a ``DataError`` that names the
number of images and the size (use a subset, or a smaller ``--input-shape``): subsampling it silently
would change what the validation accuracy means.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from edgeprune.data.normalisation import LEGACY, Normalisation
from edgeprune.data.readers import Source, array_source
from edgeprune.errors import DataError, InputShapeError

MEAN, STD = 0.5, 0.25  # the legacy normalisation (LEGACY), kept for callers that imported these
BUILTINS = ("shapes", "shapes-hard", "digits")
MAX_BUILTIN_BYTES = 1.5e9  # built-in splits, float32, all three together
MAX_USER_BYTES = 4e9  # user data, float32 at the model's size
CHUNK = 256  # images brought to size and normalised at a time


@dataclass(frozen=True)
class DataSplits:
    """Three disjoint splits of one data set. ``calib`` feeds BN recalibration and artifact verification."""

    name: str
    num_classes: int
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    calib: tuple[torch.Tensor, torch.Tensor]
    normalisation: Normalisation = LEGACY
    source_shape: tuple[int, ...] | None = None  # C×H×W of the data as read; None when images differ in size
    resize: str | None = None  # how the data were brought to ``input_shape``; None when they already had it
    note: str | None = None  # e.g. a built-in data set generated with fewer images at a large size

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def summary(self) -> dict:
        norm = self.normalisation.for_channels(self.input_shape[0]) if self.input_shape else self.normalisation
        return {"name": self.name, "num_classes": self.num_classes, "input_shape": list(self.input_shape),
                "train": len(self.train[1]), "val": len(self.val[1]), "calib": len(self.calib[1]),
                "normalisation": norm.to_dict(),
                "source_shape": list(self.source_shape) if self.source_shape else "images of different sizes",
                "resize": self.resize, "note": self.note}


def _fill(source: Source, idx: torch.Tensor, shape: tuple[int, ...], mean: torch.Tensor,
          std: torch.Tensor) -> torch.Tensor:
    """Images ``idx`` of ``source`` at C×H×W ``shape``, normalised, one chunk at a time (no full-size copy)."""
    out = torch.empty((len(idx), *shape), dtype=torch.float32)
    ids = idx.numpy()
    for i in range(0, len(ids), CHUNK):
        part = out[i : i + CHUNK]
        part.copy_(source.fetch(ids[i : i + CHUNK], tuple(shape[1:])))
        part.sub_(mean).div_(std)
    return out


def _split(source: Source, *, n_val: int, n_calib: int, shape: tuple[int, ...], norm: Normalisation,
           keep: int | None = None, note: str | None = None, seed: int = 0) -> DataSplits:
    name, n = source.name, len(source)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if keep is not None:
        perm = perm[:keep]
    if len(perm) < n_val + n_calib + 10:
        raise DataError(f"data set {name!r} has only {len(perm)} samples; need more than {n_val + n_calib + 10}")
    c = shape[0]
    norm = norm.for_channels(c)
    mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float32).view(1, c, 1, 1)
    y = source.labels
    parts = {}
    for key, sl in (("val", slice(0, n_val)), ("calib", slice(n_val, n_val + n_calib)), ("train", slice(n_val + n_calib, None))):
        idx = perm[sl]
        parts[key] = (_fill(source, idx, shape, mean, std), y[idx])
    native = source.native_size()
    source_shape = (source.channels, *native) if native else None
    resize = None if source_shape == tuple(shape) else source.resize
    return DataSplits(name, int(y.max()) + 1, parts["train"], parts["val"], parts["calib"], norm, source_shape,
                      resize, note)


def _check_channels(source: Source, shape: tuple[int, ...]) -> None:
    if source.channels != shape[0]:
        raise InputShapeError(f"data {source.name!r} has {source.channels}-channel images but the model expects "
                              f"{shape[0]} channels (input shape {'×'.join(map(str, shape))}); give data with "
                              f"{shape[0]} channels, or the model's input shape with --input-shape")


def _builtin(spec: str, shape: tuple[int, ...] | None, norm: Normalisation) -> DataSplits:
    from edgeprune.data import builtin

    full, (n_val, n_calib) = {"shapes": (13000, (2000, 1000)), "shapes-hard": (26000, (4000, 1000)),
                              "digits": (1797, (360, 180))}[spec]
    shape = tuple(shape or (3, 32, 32))
    per_image = 4 * int(np.prod(shape))
    keep = min(full, int(MAX_BUILTIN_BYTES // per_image))
    note = None
    if keep < full:
        n_val, n_calib = min(n_val, round(0.24 * keep)), min(n_calib, round(0.12 * keep))
        note = (f"built-in {spec!r} uses {keep} of its {full} images at {'×'.join(map(str, shape))} so that "
                f"the splits stay under {MAX_BUILTIN_BYTES / 1e9:g} GB as float32 ({n_val} val, {n_calib} calib, "
                f"{keep - n_val - n_calib} train)")
    if spec == "shapes":  # fewer images generated, rather than generated and dropped
        x, y = builtin.make_shapes(keep, seed=20261122)
    elif spec == "shapes-hard":
        x, y = builtin.make_shapes(keep, seed=20261201, hard=True)
    else:
        x, y = builtin.make_digits()
    source = array_source(spec, x, y, resize="generated at 3×32×32, resized to the model's H×W (bilinear, antialiased)")
    _check_channels(source, shape)
    return _split(source, n_val=n_val, n_calib=n_calib, shape=shape, norm=norm,
                  keep=keep if len(source) > keep else None, note=note)


@lru_cache(maxsize=4)
def _load(spec: str, norm: Normalisation, shape: tuple[int, ...] | None) -> DataSplits:
    if spec in BUILTINS:
        return _builtin(spec, shape, norm)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data {spec!r} is neither a built-in ({', '.join(BUILTINS)}) nor an existing path")
    from edgeprune.data import readers

    source = readers.read(path)
    if shape is None:
        native = source.native_size()
        if native is None:
            raise DataError(f"the images in {path} have different sizes: give the model's input shape "
                            f"(--input-shape C,H,W) to bring them to one")
        shape = (source.channels, *native)
    _check_channels(source, shape)
    n = len(source)
    size = 4.0 * n * int(np.prod(shape))
    if size > MAX_USER_BYTES:
        most = int(MAX_USER_BYTES // (4 * int(np.prod(shape))))
        raise DataError(f"data {spec!r} holds {n} images; at the model's input size {'×'.join(map(str, shape))} "
                        f"they would take {size / 1e9:.1f} GB as float32 (the limit is {MAX_USER_BYTES / 1e9:g} GB): "
                        f"give a subset of at most {most} images, or a smaller --input-shape")
    return _split(source, n_val=min(5000, n // 5), n_calib=min(1000, n // 10), shape=tuple(shape), norm=norm)


def load_data(spec: str, normalisation: Normalisation | None = None,
              input_shape: tuple[int, ...] | None = None) -> DataSplits:
    """``spec`` is a built-in name (``shapes``, ``digits``) or a path: a CIFAR-10 python-batch folder,
    a folder of class sub-folders of images, or an ``.npz`` with ``x`` (N×H×W×C or N×C×H×W) and ``y``.

    ``normalisation``: what the model expects (default: edgeprune's legacy mean 0.5, std 0.25);
    ``input_shape``: the model's C×H×W, which the images are brought to (default: the data's own size).
    Cached on all three (the most recent four data sets stay in memory); ``load_data.cache_clear()``.
    """
    shape = tuple(int(v) for v in input_shape) if input_shape is not None else None
    return _load(str(spec), normalisation or LEGACY, shape)


load_data.cache_clear = _load.cache_clear  # type: ignore[attr-defined]
load_data.cache_info = _load.cache_info  # type: ignore[attr-defined]
