"""Candidate evaluation: prune → adaptive BN → validation accuracy → export + simplify → measured latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.export.onnx import export_verified
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.meter import Meter
from edgeprune.model.evaluate import accuracy, count_macs_params, on_device, recalibrate_bn
from edgeprune.model.prune import Analysis, prune
from edgeprune.types import Candidate, EvalResult, Measurement


@dataclass
class CandidateEvaluator:
    """Evaluates candidates of one model against one latency target.

    ``latency_ratio`` is the target as a fraction of the baseline's p10 latency; ``baseline_ms`` is the
    baseline's reference p10 latency (ms), used to express a candidate's ratio in milliseconds.
    ``val`` is the search validation subset, ``calib`` the BN-recalibration images (N×C×H×W).
    ``device`` is where BN recalibration and accuracy run (the resolved ``--train-device``); the pruned
    model comes back to the CPU for export and measurement.
    """

    model: nn.Module
    input_shape: tuple[int, ...]
    analysis: Analysis
    val: tuple[torch.Tensor, torch.Tensor]
    calib: torch.Tensor
    meter: Meter
    latency_ratio: float
    baseline_ms: float
    verify_samples: int = 4
    device: str = "cpu"

    def build(self, candidate: Candidate) -> tuple[nn.Module, list]:
        """The pruned, BN-recalibrated model for ``candidate`` and its pruning history."""
        pruned, history = prune(self.model, self.input_shape, self.analysis, candidate.widths)
        recalibrate_bn(pruned, self.calib, device=self.device)
        return pruned, history

    def remeasure(self, candidate: Candidate, *, rounds: int | None) -> Measurement:
        """Measure ``candidate`` again, interleaved with the baseline, over ``rounds`` rounds (None: the
        meter's search plan)."""
        pruned, _ = prune(self.model, self.input_shape, self.analysis, candidate.widths)
        onnx_bytes, _, _ = export_verified(pruned, self.input_shape, self.calib[: self.verify_samples])
        return self.meter.measure(Artifact(onnx_bytes, label=candidate.key), rounds=rounds).candidate

    def evaluate(self, candidate: Candidate) -> EvalResult:
        return self.evaluate_many([candidate])[0]

    def evaluate_many(self, candidates: list[Candidate]) -> list[EvalResult]:
        """Evaluate candidates; their latencies are measured together when the meter measures in parallel
        (several remote devices), else one after another."""
        prepared = [self._prepare(c) for c in candidates]
        t = time.perf_counter()
        if len(prepared) > 1 and self.meter.parallel > 1:
            pairs = self.meter.measure_many([Artifact(p[0], label=c.key) for p, c in zip(prepared, candidates)])
            per = (time.perf_counter() - t) / len(prepared)
            laps = [per] * len(prepared)
        else:
            pairs, laps = [], []
            for p in prepared:
                t = time.perf_counter()
                pairs.append(self.meter.measure(Artifact(p[0])))
                laps.append(time.perf_counter() - t)
        out = []
        for (onnx_bytes, acc, macs, params, seconds), (m, _), lap in zip(prepared, pairs, laps):
            seconds["latency"] = round(lap, 4)
            ratio = float(m.ratio_to_baseline)
            out.append(EvalResult(accuracy=acc, latency_ms=ratio * self.baseline_ms, measurement=m, macs=macs,
                                  params=params, feasible=ratio <= self.latency_ratio, seconds=seconds))
        return out

    def _prepare(self, candidate: Candidate):
        """Everything but the latency: (onnx bytes, accuracy, MACs, params, stage seconds)."""
        seconds: dict[str, float] = {}
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            seconds[stage] = round(now - t, 4)
            t = now

        pruned, _ = prune(self.model, self.input_shape, self.analysis, candidate.widths)
        lap("prune")
        with on_device(self.device, pruned):  # one trip to the device and back for both
            recalibrate_bn(pruned, self.calib, device=self.device)
            lap("bn_recalibration")
            acc = accuracy(pruned, *self.val, device=self.device)
        lap("accuracy")
        onnx_bytes, _, _ = export_verified(pruned, self.input_shape, self.calib[: self.verify_samples])
        lap("export_simplify_verify")
        macs, params = count_macs_params(pruned, self.input_shape)
        lap("count")
        return onnx_bytes, acc, macs, params, seconds
