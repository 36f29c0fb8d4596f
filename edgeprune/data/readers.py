"""Readers for user data, as ``Source``s: the labels at once, the images later, by index, at the size asked.

Nothing is converted to float32 at the model's size until the splits are filled (``splits.py``), one chunk
at a time, so memory holds the raw data (uint8 where the file is uint8; image folders: only file names)
plus the splits themselves.

Bringing images to the model's H×W:

- image folders: an image already H×W is taken as it is; any other is resized (PIL bilinear) so that its
  shorter side is ``round(max(H, W) / 0.875)`` and centre-cropped to H×W (the standard ImageNet evaluation
  transform: 256 then 224 for a 224×224 model); always converted to RGB;
- ``.npz`` arrays and CIFAR-10 batches: resized with ``torch.nn.functional.interpolate`` (bilinear,
  ``antialias=True``) when their H×W differ.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgeprune.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}
_RESIZED = "resized to the model's H×W (torch interpolate, bilinear, antialiased)"
CROP_PCT = 0.875  # ImageNet evaluation: resize to H / 0.875 (256 for 224), then centre-crop H×W


@dataclass(frozen=True)
class Source:
    """A data set before it is brought to the model's size. ``fetch(indices, (H, W))`` returns those images
    as float32 k×C×H×W in [0, 1]. ``native_size()`` is the (H, W) every image has, None when they differ."""

    name: str
    labels: torch.Tensor  # int64 N
    channels: int
    native_size: Callable[[], tuple[int, int] | None]
    fetch: Callable[[np.ndarray, tuple[int, int]], torch.Tensor]
    resize: str  # how images of another size are brought to H×W, said in the data summary

    def __len__(self) -> int:
        return len(self.labels)


def resize_images(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Float images k×C×h×w to k×C×H×W: bilinear, antialiased (a no-op when the size already matches)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(hw), mode="bilinear", align_corners=False, antialias=True)


def array_source(name: str, x, y, *, resize: str) -> Source:
    """A source over in-memory images N×C×h×w (numpy or torch; uint8 is scaled by 1/255, floats are taken
    as they are) and labels N; ``resize`` says how other sizes are met, for the data summary."""
    if len(x) != len(y):
        raise DataError(f"data set {name!r}: {len(x)} images but {len(y)} labels")
    is_uint8 = (x.dtype == np.uint8) if isinstance(x, np.ndarray) else (x.dtype == torch.uint8)

    def fetch(idx: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        part = x[np.asarray(idx)] if isinstance(x, np.ndarray) else x[torch.as_tensor(np.asarray(idx))]
        t = torch.from_numpy(np.ascontiguousarray(part)) if isinstance(part, np.ndarray) else part
        t = t.float() / 255.0 if is_uint8 else t.float()
        return resize_images(t, hw)

    labels = torch.as_tensor(np.asarray(y)).long()
    size = (int(x.shape[2]), int(x.shape[3]))
    return Source(name, labels, int(x.shape[1]), lambda: size, fetch, resize)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles; allow only what they hold (dicts, lists, numpy arrays),
    so that a malicious file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar(folder: Path) -> Source:
    xs, ys = [], []
    for f in sorted(folder.glob("data_batch_*")) + sorted(folder.glob("test_batch")):
        try:
            with open(f, "rb") as fh:
                d = _CifarUnpickler(fh, encoding="bytes").load()
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            labels = np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as e:  # noqa: BLE001 - any failure here is a bad file
            raise DataError(f"cannot read CIFAR batch {f}: {e}") from None
        xs.append(data)
        ys.append(labels)
    return array_source(folder.name, np.concatenate(xs), np.concatenate(ys), resize=_RESIZED)


def eval_transform(img, hw: tuple[int, int]):
    """The ImageNet evaluation transform on a PIL image: shorter side to ``round(max(H, W) / 0.875)``
    (PIL bilinear, as torchvision's ``Resize``), then a centre crop of H×W (as ``CenterCrop``)."""
    from PIL import Image

    h_out, w_out = hw
    scale = round(max(h_out, w_out) / CROP_PCT)
    w, h = img.size
    if w <= h:
        new = (scale, int(scale * h / w))
    else:
        new = (int(scale * w / h), scale)
    img = img.resize(new, Image.BILINEAR)
    w, h = img.size
    top, left = int(round((h - h_out) / 2.0)), int(round((w - w_out) / 2.0))
    return img.crop((left, top, left + w_out, top + h_out))


def _load_image(f: Path, hw: tuple[int, int]) -> np.ndarray:
    """H×W×3 uint8: as it is when already H×W, else through ``eval_transform``."""
    from PIL import Image

    try:
        with Image.open(f) as img:
            rgb = img.convert("RGB")
            if rgb.size != (hw[1], hw[0]):
                rgb = eval_transform(rgb, hw)
            return np.asarray(rgb, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read image {f}: {e}") from None


def _image_size(f: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(f) as img:  # reads the header only
            return img.size[1], img.size[0]
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read image {f}: {e}") from None


def _read_image_folder(folder: Path) -> Source:
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    files, labels = [], []
    for label, cdir in enumerate(classes):
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise DataError(f"no images found in class sub-folders of {folder}")

    def fetch(idx: np.ndarray, hw: tuple[int, int]) -> torch.Tensor:
        x = np.stack([_load_image(files[int(i)], hw) for i in idx])
        return torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def native_size() -> tuple[int, int] | None:
        # Only the headers are read; a folder whose images all have one size needs no shape from the model.
        first = _image_size(files[0])
        return first if all(_image_size(f) == first for f in files[1:]) else None

    return Source(folder.name, torch.tensor(labels, dtype=torch.int64), 3, native_size, fetch,
                  f"images already at the model's H×W taken as they are; others resized (PIL bilinear) to "
                  f"shorter side round(H/{CROP_PCT}) and centre-cropped to H×W; RGB")


def _read_npz(path: Path) -> Source:
    try:
        with np.load(path, allow_pickle=False) as z:
            x, y = np.asarray(z["x"]), np.asarray(z["y"])
    except KeyError as e:
        raise DataError(f"{path}: an .npz needs arrays 'x' and 'y' ({e} missing)") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read {path}: {e}") from None
    if x.ndim != 4:
        raise DataError(f"{path}: x must be N×H×W×C or N×C×H×W, got shape {x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # a view: each chunk is made contiguous when it is fetched
    return array_source(path.name, x, y.astype(np.int64), resize=_RESIZED)


def read(path: Path) -> Source:
    if path.is_file() and path.suffix == ".npz":
        return _read_npz(path)
    if path.is_dir() and (any(path.glob("data_batch_*")) or (path / "test_batch").exists()):
        return _read_cifar(path)
    if path.is_dir():
        return _read_image_folder(path)
    raise DataError(f"{path}: expected a CIFAR-10 batch folder, a folder of class sub-folders, or an .npz")
