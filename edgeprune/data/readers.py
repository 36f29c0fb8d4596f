"""Readers for user data. Each returns (x float32 N×3×H×W in [0, 1], y int64 N)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from edgeprune.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


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


def _read_cifar(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
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
    x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
    return x, torch.from_numpy(np.concatenate(ys))


def _read_image_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    xs, ys, size = [], [], None
    for label, cdir in enumerate(classes):
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                img = np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8)
            except Exception as e:  # noqa: BLE001
                raise DataError(f"cannot read image {f}: {e}") from None
            if size is None:
                size = img.shape
            elif img.shape != size:
                raise DataError(f"image {f} is {img.shape[1]}×{img.shape[0]}, others are {size[1]}×{size[0]}")
            xs.append(img)
            ys.append(label)
    if not xs:
        raise DataError(f"no images found in class sub-folders of {folder}")
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    return x.contiguous(), torch.tensor(ys, dtype=torch.int64)


def _read_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
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
        x = x.transpose(0, 3, 1, 2)
    xt = torch.from_numpy(np.ascontiguousarray(x)).float()
    if x.dtype == np.uint8:
        xt = xt / 255.0
    return xt, torch.from_numpy(y.astype(np.int64))


def read(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if path.is_file() and path.suffix == ".npz":
        return _read_npz(path)
    if path.is_dir() and (any(path.glob("data_batch_*")) or (path / "test_batch").exists()):
        return _read_cifar(path)
    if path.is_dir():
        return _read_image_folder(path)
    raise DataError(f"{path}: expected a CIFAR-10 batch folder, a folder of class sub-folders, or an .npz")
