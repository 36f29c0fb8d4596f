"""Candidate evaluation: prune → adaptive BN → export + simplify + verify → validation accuracy (on the
exported model, stopped early when clearly below the incumbent) → measured latency → MAC count."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from edgeprune.export.onnx import export_verified
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.meter import Meter
from edgeprune.model.evaluate import count_macs_params, moves, on_device, recalibrate_bn
from edgeprune.model.prune import Analysis, prune
from edgeprune.search.accuracy import EarlyStop, SearchAccuracy, ort_predictor, search_accuracy
from edgeprune.types import Candidate, EvalResult, Measurement


@dataclass
class CandidateEvaluator:
    """Evaluates candidates of one model against one latency target.

    ``latency_ratio`` is the target as a fraction of the baseline's p10 latency; ``baseline_ms`` is the
    baseline's reference p10 latency (ms), used to express a candidate's ratio in milliseconds.
    ``val`` is the search validation subset, ``calib`` the BN-recalibration images (N×C×H×W).
    ``device`` is where BN recalibration runs (the resolved ``--train-device``); the pruned model comes
    back to the CPU for export and measurement.

    Speed (docs/benchmarks.md, *One candidate evaluation*): BN statistics are re-estimated from the first
    ``bn_samples`` calibration images (None: all of ``calib``); accuracy runs on the exported, simplified
    ONNX model in ONNX Runtime with ``threads`` threads (``accuracy_on="torch"``, or a CUDA ``device``: in
    eager torch, on that device), and stops early (``early``) once the candidate is clearly below the
    incumbent's accuracy (``bar`` given to ``evaluate_many``, from the search loop). With ``quantize`` the
    measured form is the INT8 model (its accuracy in ONNX Runtime, its latency).
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
    bn_samples: int | None = None
    early: EarlyStop = EarlyStop()
    threads: int = 2
    accuracy_on: str = "onnxruntime"  # or "torch"
    # --quantize-in-search: each candidate is quantized (ONNX Runtime static INT8, QDQ, activation ranges
    # from the first ``quantize_calib`` calibration images) and its accuracy and latency are the INT8
    # model's, so the latency target is met by the form that will be deployed.
    quantize: bool = False
    quantize_calib: int = 64

    def _measured_form(self, onnx_bytes: bytes) -> bytes:
        """The bytes that are measured: the verified float model, or its INT8 form with ``quantize``."""
        if not self.quantize:
            return onnx_bytes
        from edgeprune.export.quantize import quantize_int8

        return quantize_int8(onnx_bytes, self.calib[: self.quantize_calib].numpy())

    def _recalibrate(self, pruned: nn.Module) -> None:
        calib = self.calib if self.bn_samples is None else self.calib[: self.bn_samples]
        recalibrate_bn(pruned, calib, device=self.device)

    def build(self, candidate: Candidate) -> tuple[nn.Module, list]:
        """The pruned, BN-recalibrated model for ``candidate`` and its pruning history."""
        pruned, history = prune(self.model, self.input_shape, self.analysis, candidate.widths)
        self._recalibrate(pruned)
        return pruned, history

    def remeasure(self, candidate: Candidate, *, rounds: int | None) -> Measurement:
        """Measure ``candidate`` again, interleaved with the baseline, over ``rounds`` rounds (None: the
        meter's search plan)."""
        pruned, _ = self.build(candidate) if self.quantize else prune(self.model, self.input_shape, self.analysis,
                                                                         candidate.widths)
        onnx_bytes, _, _ = export_verified(pruned, self.input_shape, self.calib[: self.verify_samples])
        return self.meter.measure(Artifact(self._measured_form(onnx_bytes), label=candidate.key),
                                  rounds=rounds).candidate

    def evaluate(self, candidate: Candidate) -> EvalResult:
        return self.evaluate_many([candidate])[0]

    def evaluate_many(self, candidates: list[Candidate], *, bar: float | None = None) -> list[EvalResult]:
        """Evaluate candidates; their latencies are measured together when the meter measures in parallel
        (several remote devices), else one after another. ``bar``: the incumbent's search accuracy
        (fraction), below which a candidate's accuracy may be stopped early; None: every image is used."""
        prepared = [self._prepare(c, bar) for c in candidates]
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
            out.append(EvalResult(accuracy=acc.accuracy, latency_ms=ratio * self.baseline_ms, measurement=m,
                                  macs=macs, params=params, feasible=ratio <= self.latency_ratio, seconds=seconds,
                                  accuracy_images=acc.images))
        return out

    def accuracy_of(self, pruned: nn.Module, onnx_bytes: bytes, bar: float | None = None) -> SearchAccuracy:
        """Search accuracy of a pruned (BN-recalibrated) model and its exported ONNX bytes on ``val``."""
        x, y = self.val[0].numpy(), self.val[1].numpy()
        if not self.quantize and (self.accuracy_on == "torch" or moves(self.device)):
            @torch.no_grad()
            def predict(xb):
                return pruned(torch.from_numpy(xb).to(self.device, non_blocking=True)).cpu().numpy()

            pruned.eval()
            with on_device(self.device, pruned):
                return search_accuracy(predict, x, y, bar=bar, early=self.early)
        return search_accuracy(ort_predictor(onnx_bytes, self.threads), x, y, bar=bar, early=self.early)

    def _prepare(self, candidate: Candidate, bar: float | None = None):
        """Everything but the latency: (onnx bytes, SearchAccuracy, MACs, params, stage seconds)."""
        seconds: dict[str, float] = {}
        t = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            seconds[stage] = round(now - t, 4)
            t = now

        pruned, _ = prune(self.model, self.input_shape, self.analysis, candidate.widths)
        lap("prune")
        self._recalibrate(pruned)
        lap("bn_recalibration")
        onnx_bytes, _, _ = export_verified(pruned, self.input_shape, self.calib[: self.verify_samples])
        lap("export_simplify_verify")
        if self.quantize:
            onnx_bytes = self._measured_form(onnx_bytes)
            lap("quantize")
        # On the exported model: the graph that is measured and deployed, and 2-3x faster than eager torch.
        acc = self.accuracy_of(pruned, onnx_bytes, bar)
        lap("accuracy")
        macs, params = count_macs_params(pruned, self.input_shape)
        lap("count")
        return onnx_bytes, acc, macs, params, seconds
