"""Offline built-in data sets (nothing is downloaded).

``shapes``: a procedurally generated 10-class 32×32 RGB task. Each image holds one class-defining
pattern at a random position, scale, small rotation and colour, over a textured random background,
with low-contrast clutter and pixel noise, so that a ResNet-20 needs its capacity to learn it and
loses accuracy when over-pruned.

``shapes-hard``: the benchmark task that separates search methods (issue 14): 20 classes — the ten
patterns above and ten finer variants of them (thin ring, rounded square, downward triangle, diagonal
cross, vertical grating, fine checker, vertical dots, left half disk, ellipse, diamond) — smaller and
lower-contrast, with three distractors, an occluding patch on half the images and stronger noise.

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


HARD_CLASSES = SHAPE_CLASSES + (
    "thin-ring", "rounded-square", "triangle-down", "diagonal-cross", "vertical-grating-disk",
    "fine-checker-square", "vertical-dots", "left-half-disk", "ellipse", "diamond",
)


def _hard_score(k: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``shapes-hard``: classes 0–9 as ``_class_score``; 10–19 a finer variant of class ``k − 10``."""
    if k < 10:
        return _class_score(k, u, v)
    r = np.sqrt(u**2 + v**2)
    if k == 10:  # thin ring
        return np.minimum(r - 0.78, 1.0 - r)
    if k == 11:  # rounded square (superellipse, p = 4)
        return 0.85 - (u**4 + v**4) ** 0.25
    if k == 12:  # triangle pointing down
        return _class_score(4, u, -v)
    if k == 13:  # plus turned 45°
        return _class_score(5, (u + v) / np.sqrt(2), (u - v) / np.sqrt(2))
    if k == 14:  # grating across the other axis
        return np.minimum(1.0 - r, 0.5 * np.sin(7.0 * v))
    if k == 15:  # checker of twice the frequency
        return np.minimum(0.8 - np.maximum(np.abs(u), np.abs(v)), 0.5 * np.sin(9.0 * u) * np.sin(9.0 * v))
    if k == 16:  # two dots, one above the other
        return _class_score(8, v, u)
    if k == 17:  # half disk, the other half
        return np.minimum(1.0 - r, -u)
    if k == 18:  # ellipse
        return 1.0 - np.sqrt((u / 1.0) ** 2 + (v / 0.6) ** 2)
    return 0.8 - (np.abs(u) + np.abs(v))  # diamond


def _class_mask(cls: np.ndarray, u: np.ndarray, v: np.ndarray, score=_class_score, classes: int = 10) -> np.ndarray:
    """Soft masks (N×H×W, values in [0,1]) of each sample's class pattern in its local frame (u, v)."""
    out = np.empty_like(u)
    for k in range(classes):
        idx = np.nonzero(cls == k)[0]
        out[idx] = score(k, u[idx], v[idx])
    # A logistic edge about one pixel wide anti-aliases the pattern.
    return 1.0 / (1.0 + np.exp(np.clip(-out / np.float32(0.06), -30, 30)))


def _u(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return rng.uniform(lo, hi, shape).astype(np.float32)


def make_shapes(n: int, seed: int, hard: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` labelled images of the ``shapes`` task (``hard``: ``shapes-hard``), deterministically
    from ``seed``."""
    rng = np.random.default_rng(seed)
    size = 32
    ys = np.linspace(-1, 1, size, dtype=np.float32)
    gy, gx = np.meshgrid(ys, ys, indexing="ij")
    classes = len(HARD_CLASSES) if hard else len(SHAPE_CLASSES)
    score = _hard_score if hard else _class_score
    y = rng.integers(0, classes, n)

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
        mask = _class_mask(cls, u, v, score, classes)[:, None]
        colour = _u(rng, 0, 1, (n, 3, 1, 1))
        alpha = _u(rng, contrast_lo, contrast_hi, (n, 1, 1, 1))
        return img * (1 - alpha * mask) + colour * alpha * mask

    if not hard:
        other = (y + rng.integers(1, classes, n)) % classes
        img = paint(other, 0.2, 0.3, 0.1, 0.3, np.pi)
        img = paint(y, 0.55, 0.8, 0.7, 1.0, np.pi / 9)
        noise = 0.06
    else:
        for _ in range(3):  # distractors: other classes, smaller, fainter, any orientation
            other = (y + rng.integers(1, classes, n)) % classes
            img = paint(other, 0.2, 0.35, 0.15, 0.45, np.pi)
        img = paint(y, 0.45, 0.75, 0.45, 0.9, np.pi / 12)
        # An occluding patch over part of the pattern on half the images.
        cx, cy = _u(rng, -0.6, 0.6, (2, n, 1, 1))
        w, h = _u(rng, 0.15, 0.45, (2, n, 1, 1))
        patch = ((np.abs(gx - cx) < w) & (np.abs(gy - cy) < h) & (rng.random((n, 1, 1)) < 0.5))[:, None]
        img = np.where(patch, _u(rng, 0, 1, (n, 3, 1, 1)), img)
        noise = 0.1
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    x = np.clip(img, 0, 1).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def make_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 real handwritten digits as N×3×32×32 in [0, 1] (bilinear upsampling)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return x.repeat(1, 3, 1, 1).contiguous(), torch.from_numpy(d.target.astype(np.int64))
