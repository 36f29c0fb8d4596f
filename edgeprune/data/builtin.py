"""Offline built-in data sets (nothing is downloaded).

``shapes``: a procedurally generated 10-class 32×32 RGB task. Each image holds one class-defining
pattern at a random position, scale, small rotation and colour, over a textured random background,
with low-contrast clutter and pixel noise, so that a ResNet-20 needs its capacity to learn it and
loses accuracy when over-pruned.

``digits``: scikit-learn's real handwritten digits (1797 8×8 grey images), upsampled to 32×32 RGB.

Images are float32 N×3×32×32 in [0, 1]; labels int64 N.
"""

from __future__ import annotations

import numpy as np
import torch

SHAPE_CLASSES = (
    "disk", "ring", "square", "square-outline", "triangle",
    "plus", "grating-disk", "checker-square", "two-dots", "half-disk",
)


def _class_score(k: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed "inside" score of class ``k``'s pattern at local coordinates (u, v): positive inside."""
    r = np.sqrt(u**2 + v**2)
    box = np.maximum(np.abs(u), np.abs(v))
    if k == 0:  # disk
        return 1.0 - r
    if k == 1:  # ring
        return np.minimum(r - 0.55, 1.0 - r)
    if k == 2:  # square
        return 0.8 - box
    if k == 3:  # square outline
        return np.minimum(box - 0.45, 0.8 - box)
    if k == 4:  # triangle
        return np.minimum(v + 0.6, 0.55 * (0.7 - v) - np.abs(u))
    if k == 5:  # plus
        return np.maximum(np.minimum(0.25 - np.abs(u), 0.9 - np.abs(v)), np.minimum(0.25 - np.abs(v), 0.9 - np.abs(u)))
    if k == 6:  # grating in a disk
        return np.minimum(1.0 - r, 0.5 * np.sin(7.0 * u))
    if k == 7:  # checker in a square
        return np.minimum(0.8 - box, 0.5 * np.sin(5.0 * u) * np.sin(5.0 * v))
    if k == 8:  # two dots
        return np.maximum(0.35 - np.sqrt((u - 0.55) ** 2 + v**2), 0.35 - np.sqrt((u + 0.55) ** 2 + v**2))
    return np.minimum(1.0 - r, u)  # half disk


def _class_mask(cls: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft masks (N×H×W, values in [0,1]) of each sample's class pattern in its local frame (u, v)."""
    out = np.empty_like(u)
    for k in range(len(SHAPE_CLASSES)):
        idx = np.nonzero(cls == k)[0]
        out[idx] = _class_score(k, u[idx], v[idx])
    # A logistic edge about one pixel wide anti-aliases the pattern.
    return 1.0 / (1.0 + np.exp(np.clip(-out / np.float32(0.06), -30, 30)))


def _u(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(np.float32)


def make_shapes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` labelled images of the ``shapes`` task, deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    size = 32
    ys = np.linspace(-1, 1, size, dtype=np.float32)
    gy, gx = np.meshgrid(ys, ys, indexing="ij")
    y = rng.integers(0, len(SHAPE_CLASSES), n)

    # Background: two random colours blended along a random direction, plus low-frequency texture.
    c0, c1 = _u(rng, 0, 1, (n, 3, 1, 1)), _u(rng, 0, 1, (n, 3, 1, 1))
    ang = _u(rng, 0, 2 * np.pi, (n, 1, 1))
    t = (np.cos(ang) * gx + np.sin(ang) * gy + 1.0) / 2.0
    img = c0 * (1 - t[:, None]) + c1 * t[:, None]
    fx, fy, ph = _u(rng, -4, 4, (3, n, 1, 1))
    img = img + 0.05 * np.sin(fx * 3 * gx + fy * 3 * gy + ph * 6)[:, None]

    # Clutter: a low-contrast pattern of a random other class, small, somewhere else.
    def paint(cls, scale_lo, scale_hi, contrast_lo, contrast_hi, rot):
        s = _u(rng, scale_lo, scale_hi, (n, 1, 1))
        cx, cy = _u(rng, -0.5, 0.5, (2, n, 1, 1))
        th = _u(rng, -rot, rot, (n, 1, 1))
        dx, dy = (gx - cx) / s, (gy - cy) / s
        u = np.cos(th) * dx + np.sin(th) * dy
        v = -np.sin(th) * dx + np.cos(th) * dy
        mask = _class_mask(cls, u, v)[:, None]
        colour = _u(rng, 0, 1, (n, 3, 1, 1))
        alpha = _u(rng, contrast_lo, contrast_hi, (n, 1, 1, 1))
        return img * (1 - alpha * mask) + colour * alpha * mask

    other = (y + rng.integers(1, len(SHAPE_CLASSES), n)) % len(SHAPE_CLASSES)
    img = paint(other, 0.2, 0.3, 0.1, 0.3, np.pi)
    img = paint(y, 0.55, 0.8, 0.7, 1.0, np.pi / 9)
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.06)
    x = np.clip(img, 0, 1).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def make_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 real handwritten digits as N×3×32×32 in [0, 1] (bilinear upsampling)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1).contiguous(), torch.from_numpy(d.target.astype(np.int64))
