"""What the evaluation benchmarks share: one model, its data splits, a meter opened with its baseline, and
its analysis, set up as the pipeline sets them up (the config's defaults)."""

from __future__ import annotations

import os

# Benchmarks compare methods from a cold start: earlier runs' history (edgeprune.history) stays out unless a
# tool turns it on for itself.
os.environ.setdefault("EDGEPRUNE_HISTORY", "off")

from dataclasses import dataclass

import torch

from edgeprune.config import CompileConfig
from edgeprune.data import load_data
from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, LocalMeter, get_backend
from edgeprune.model.load import load_model
from edgeprune.model.prune import Analysis, analyse
from edgeprune.targets import load_target


# host without the TVM comparison: for benchmarks of the search and of what runs before the deploy stage.
ORT_PROFILE = """name = "host-ort"
description = "host, ONNX Runtime only (benchmark profile)"
arch = "x86_64"
[runtime]
backend = "onnxruntime"
threads = 1
[pruning]
round_to = 8
"""


@dataclass
class Setup:
    defaults: CompileConfig
    loaded: object  # LoadedModel
    shape: tuple[int, ...]
    calib: torch.Tensor  # the first calib_samples calibration images
    val: tuple[torch.Tensor, torch.Tensor]  # the search validation subset
    meter: LocalMeter
    ref: object  # the baseline's reference Measurement
    analysis: Analysis
    profile: object


def evaluation_setup(model: str, data: str, target: str) -> Setup:
    """Load ``model`` and ``data``, measure the baseline on ``target`` (ONNX Runtime unless the profile says
    otherwise) and analyse the model; torch runs with the config's default threads."""
    defaults = CompileConfig(model=model)
    torch.set_num_threads(defaults.torch_threads)
    profile = load_target(target)
    loaded = load_model(model)
    splits = load_data(data)
    shape = loaded.input_shape
    calib = splits.calib[0][: defaults.calib_samples]
    val = (splits.val[0][: defaults.search_val_samples], splits.val[1][: defaults.search_val_samples])
    base, _, _ = export_verified(loaded.model, shape, calib[:16])
    runtime = "onnxruntime" if profile.backend == "auto" else profile.backend
    meter = LocalMeter(get_backend(runtime, profile), Artifact(base), calib[:1].numpy(), profile.measurement,
                       profile.where())
    ref = meter.baseline()
    analysis = analyse(loaded.model, shape, round_to=profile.round_to)
    return Setup(defaults, loaded, shape, calib, val, meter, ref, analysis, profile)


def best_feasible_curve(report: dict) -> tuple[float, list[float]]:
    """(best feasible search accuracy, the best-feasible-so-far after each evaluation; -1 before any) of a
    compile report's candidates."""
    best, curve = -1.0, []
    for c in report["candidates"]:
        if c["feasible"]:
            best = max(best, c["accuracy"])
        curve.append(best)
    return best, curve
