"""Stage 6, finish: fine-tune the chosen candidate, export and verify it, and measure it against the
baseline in the same rounds with the long plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from edgeprune.export.onnx import export_verified
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.meter import Meter, Pair, measure_confirmed
from edgeprune.model.evaluate import accuracy, count_macs_params, recalibrate_bn
from edgeprune.model.finetune import TrainConfig, train
from edgeprune.model.depth import dropped_blocks
from edgeprune.model.prune import channel_counts
from edgeprune.verify import Verdict

FINAL_VERIFY_SAMPLES = 200  # calibration images compared between ONNX Runtime and PyTorch


@dataclass(frozen=True)
class FinalModel:
    """The fine-tuned pruned model, its verified ONNX export and its final measurement.

    ``accuracy`` is top-1 on the whole validation split (fraction); ``pair`` the final model and the
    baseline measured in the same rounds; ``meets_target`` compares the final p10 ratio with the target.
    """

    model: nn.Module = field(repr=False)
    history: list = field(repr=False)
    onnx_bytes: bytes = field(repr=False)
    simplifier: str
    verdict: Verdict
    pair: Pair
    accuracy_before_finetune: float
    accuracy: float
    macs: int
    params: int
    channels: dict
    finetune: dict
    candidate_index: int
    widths: tuple[int, ...]
    meets_target: bool
    layer_latency: dict = field(default_factory=dict)  # per ONNX node, baseline vs final (``layer_latency``)
    measured_ratios: tuple[float, ...] = ()  # every long measurement's p10 ratio (``measure_confirmed``)

    def to_dict(self) -> dict:
        """The report's ``final`` section."""
        f, b = self.pair
        return {"accuracy_before_finetune": self.accuracy_before_finetune, "accuracy": self.accuracy,
                "macs": self.macs, "params": self.params, "channels": self.channels, "latency": f.to_dict(),
                "baseline_latency_same_run": b.to_dict(), "speedup_median": b.median_ms / f.median_ms,
                "simplifier": self.simplifier, "onnx_verification": self.verdict.to_dict(), "finetune": self.finetune,
                "candidate_index": self.candidate_index, "widths": list(self.widths),
                "dropped_blocks": dropped_blocks(self.history),
                "meets_latency_target": self.meets_target, "measured_ratios": list(self.measured_ratios),
                "layer_latency": self.layer_latency}


TOP_NODES = 20  # nodes listed in the per-layer comparison


def layer_latency(baseline_onnx: bytes, final_onnx: bytes, example, *, threads: int = 1) -> dict:
    """Where the time goes, before and after: ONNX Runtime's profiler on this machine (ms per inference,
    profiler overhead included, so compare shares and ratios). Nodes are matched by name: the exporter names
    them after the modules, which pruning keeps."""
    from edgeprune.latency.backends.onnxruntime import profile_nodes

    before = {n: (op, ms) for n, op, ms in profile_nodes(baseline_onnx, example, threads=threads)}
    after = {n: ms for n, _, ms in profile_nodes(final_onnx, example, threads=threads)}
    by_op: dict[str, list[float]] = {}
    for n, (op, ms) in before.items():
        slot = by_op.setdefault(op, [0.0, 0.0])
        slot[0] += ms
        slot[1] += after.get(n, 0.0)
    nodes = [{"node": n, "op": op, "baseline_ms": ms, "final_ms": after.get(n)}
             for n, (op, ms) in sorted(before.items(), key=lambda kv: -kv[1][1])[:TOP_NODES]]
    return {"where": f"ONNX Runtime profiler on this machine, {threads} thread(s)", "nodes": nodes,
            "by_op": {op: {"baseline_ms": b, "final_ms": f} for op, (b, f) in sorted(by_op.items(), key=lambda kv: -kv[1][0])}}


def finish(*, pruned: nn.Module, history: list, teacher: nn.Module, data, shape, calib, meter: Meter, rounds: int,
           ratio: float, epochs: int, lr: float, distill: bool, seed: int, candidate_index: int,
           widths: tuple[int, ...], rep, baseline_onnx: bytes | None = None, device: str = "cpu") -> FinalModel:
    """Fine-tune ``pruned`` in place (``epochs`` of SGD + cosine; knowledge distillation from ``teacher``
    when ``distill``; then BN statistics re-estimated on ``calib``), export and verify it against PyTorch on
    calibration images (N×C×H×W), and measure it against the baseline over ``rounds`` rounds (re-measured twice when that misses ``ratio``, the target
    as a fraction of the baseline: ``measure_confirmed``).
    ``device``: where fine-tuning and accuracy run; the model is back on the CPU for export and measurement."""
    acc_before = accuracy(pruned, *data.val, device=device)
    tcfg = TrainConfig(epochs=epochs, lr=lr, distill=distill, seed=seed)
    rep.train_start(epochs * -(-len(data.train[1]) // tcfg.batch_size))
    try:
        train(pruned, *data.train, tcfg, teacher=teacher if distill else None, on_step=rep.train_step, device=device)
    finally:
        rep.train_end()
    recalibrated = 0
    if epochs > 0:
        # The running statistics after fine-tuning are averages over batches of weights that kept changing,
        # and with a small BN momentum (torchvision's MobileNetV3: 0.01) mostly the pre-fine-tuning ones: the
        # adaptive BN the search gives its candidates (on the first --search-bn-samples calibration images,
        # 100 by default), here on all of ``calib`` for the model that is written.
        recalibrate_bn(pruned, calib, device=device)
        recalibrated = int(len(calib))
    onnx_bytes, simplifier, verdict = export_verified(pruned, shape, calib[:FINAL_VERIFY_SAMPLES], full_check=True)
    pair, tries = measure_confirmed(meter, Artifact(onnx_bytes, label="final"), rounds=rounds, ratio=ratio)
    macs, params = count_macs_params(pruned, shape)
    layers = (layer_latency(baseline_onnx, onnx_bytes, calib[:1].numpy(), threads=meter.settings.threads)
              if baseline_onnx is not None else {})
    return FinalModel(pruned, history, onnx_bytes, simplifier, verdict, pair, acc_before,
                      accuracy(pruned, *data.val, device=device), macs, params, channel_counts(pruned),
                      {"epochs": tcfg.epochs, "lr": tcfg.lr, "distill": tcfg.distill, "device": device,
                       "bn_recalibrated_images": recalibrated},
                      candidate_index, tuple(widths), pair.candidate.ratio_to_baseline <= ratio, layers, tries)
