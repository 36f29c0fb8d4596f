"""How input images are normalised before they reach the model: ``(x - mean) / std`` per channel, with
``x`` RGB in [0, 1].

The normalisation is chosen once per run (``resolve_normalisation``), in this order:

1. ``--normalize imagenet|unit|MEAN,STD|M1,M2,M3,S1,S2,S3`` (``CompileConfig.normalize``);
2. the one recorded in an edgeprune checkpoint's ``meta["normalisation"]``; an edgeprune checkpoint that
   records none was trained by edgeprune on its built-in data (``tools/train.py``): mean 0.5, std 0.25
   (``LEGACY``), and so were the zoo's architectures given as a bare state dict;
3. the model's own config (timm models carry ``pretrained_cfg`` / ``default_cfg`` with ``mean``/``std``);
4. ImageNet's, with a warning saying it was assumed and how to change it.

The exported ONNX model does not normalise: callers feed it normalised images (``onnx_input``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgeprune.errors import EdgePruneError


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean`` and ``std`` (one value each for every channel, or one value for all channels);
    ``name`` is ``imagenet``, ``unit``, ``legacy`` or ``custom``. Hashable: ``load_data`` caches on it."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "custom"

    def __post_init__(self):
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if not mean or len(mean) != len(std):
            raise EdgePruneError(f"normalisation needs as many means as stds, got mean {mean}, std {std}")
        if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise EdgePruneError(f"normalisation std must be > 0 and every value finite, got mean {mean}, std {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def for_channels(self, channels: int) -> "Normalisation":
        """The same normalisation with one mean and one std per channel (a single value is repeated)."""
        if len(self.mean) == channels:
            return self
        if len(self.mean) == 1:
            return Normalisation(self.mean * channels, self.std * channels, self.name)
        raise EdgePruneError(f"normalisation {self.name} has {len(self.mean)} channels (mean {list(self.mean)}) "
                             f"but the model's input has {channels}")

    def describe(self) -> str:
        return f"{self.name} (mean {_fmt(self.mean)}, std {_fmt(self.std)})"

    def onnx_input(self, input_shape: tuple[int, ...]) -> str:
        """A plain statement of what the exported model expects, for reports and the manifest."""
        c, h, w = (tuple(input_shape) + (None, None, None))[:3]
        colour = "RGB" if c == 3 else ("grey" if c == 1 else f"{c}-channel")
        return (f"float32 N×{c}×{h}×{w} (any batch size N), {colour} in [0,1], then (x − mean)/std per channel "
                f"with mean {_fmt(self.mean)}, std {_fmt(self.std)}")

    def to_dict(self) -> dict:
        return {"name": self.name, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d) -> "Normalisation":
        """From a checkpoint's or report's record: ``{"mean": 0.5, "std": 0.25}`` (scalars, as older edgeprune
        wrote) or lists, with an optional ``name``."""
        if not isinstance(d, dict) or "mean" not in d or "std" not in d:
            raise EdgePruneError(f"a recorded normalisation needs 'mean' and 'std', got {d!r}")
        mean, std = d["mean"], d["std"]
        mean = tuple(mean) if isinstance(mean, (list, tuple)) else (mean,)
        std = tuple(std) if isinstance(std, (list, tuple)) else (std,)
        name = d.get("name") or _known_name(mean, std)
        return cls(mean, std, str(name))


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


IMAGENET = Normalisation((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "imagenet")
UNIT = Normalisation((0.0,), (1.0,), "unit")
LEGACY = Normalisation((0.5,), (0.25,), "legacy")  # edgeprune's built-in data and the bundled examples


def _known_name(mean, std) -> str:
    n = len(mean)
    for known in (IMAGENET, UNIT, LEGACY):
        if len(known.mean) in (1, n):
            k = known.for_channels(n)
            if all(abs(float(a) - b) < 1e-6 for a, b in zip(tuple(mean) + tuple(std), k.mean + k.std)):
                return known.name
    return "custom"


def parse_normalisation(text: str) -> Normalisation:
    """``imagenet``, ``unit``, ``MEAN,STD`` (two floats, every channel) or ``M1,M2,M3,S1,S2,S3``."""
    t = str(text).strip().lower()
    if t == "imagenet":
        return IMAGENET
    if t == "unit":
        return UNIT
    if t == "legacy":
        return LEGACY
    usage = (f"--normalize {text!r}: give imagenet, unit, MEAN,STD (e.g. 0.5,0.25) or one mean and one std per "
             f"channel (M1,M2,M3,S1,S2,S3)")
    try:
        values = [float(v) for v in t.replace(" ", "").split(",")]
    except ValueError:
        raise EdgePruneError(usage) from None
    if len(values) < 2 or len(values) % 2:
        raise EdgePruneError(usage)
    half = len(values) // 2
    mean, std = tuple(values[:half]), tuple(values[half:])
    if min(std) <= 0 or not all(math.isfinite(v) for v in values):
        raise EdgePruneError(f"--normalize {text!r}: every std must be > 0 and every value finite")
    return Normalisation(mean, std, _known_name(mean, std))


def _model_cfg(model) -> dict | None:
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
            return {"attr": attr, "mean": cfg["mean"], "std": cfg["std"]}
    return None


def resolve_normalisation(flag: str | None, *, channels: int, checkpoint_meta: dict | None = None,
                          zoo_arch: str | None = None, model=None) -> tuple[Normalisation, str, str | None]:
    """(normalisation for ``channels`` channels, where it came from, a warning to show or None).

    ``checkpoint_meta``: an edgeprune checkpoint's ``meta`` (None for any other kind of model file);
    ``zoo_arch``: the zoo architecture of a bare state dict; ``model``: the loaded module, for its config.
    """
    if flag:
        return parse_normalisation(flag).for_channels(channels), "--normalize", None
    if checkpoint_meta is not None:
        rec = checkpoint_meta.get("normalisation")
        if rec is not None:
            return Normalisation.from_dict(rec).for_channels(channels), "the checkpoint's meta", None
        return (LEGACY.for_channels(channels), "edgeprune checkpoint without a recorded normalisation: edgeprune's "
                "training default (mean 0.5, std 0.25)", None)
    if zoo_arch is not None:
        return LEGACY.for_channels(channels), f"edgeprune zoo architecture {zoo_arch!r}: its training default", None
    cfg = _model_cfg(model) if model is not None else None
    if cfg is not None:
        mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
        norm = Normalisation(mean, std, _known_name(mean, std))
        return norm.for_channels(channels), f"the model's {cfg['attr']}", None
    norm = IMAGENET if channels == 3 else UNIT.for_channels(channels)  # ImageNet's is for RGB only
    return norm, "assumed (no flag, checkpoint record or model config)", (
        f"input normalisation not known for this model: assuming {norm.describe()}; if it was "
        f"trained otherwise, pass --normalize unit|MEAN,STD|M1,M2,M3,S1,S2,S3")
