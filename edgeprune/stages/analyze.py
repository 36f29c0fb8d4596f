"""``edgeprune analyze``: what pruning this model could give on this target, before any search.

For each prunable group, the accuracy after pruning that group alone to a few keep fractions (adaptive BN,
no training): its sensitivity. The groups left whole, with the reason. The measured latency of the
baseline, the share of it each ONNX node type and the heaviest nodes take (ONNX Runtime's profiler, on this
machine), and the latency floor: the measured ratio of the smallest model the search space allows — the
part of the latency that width pruning cannot remove.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeprune.config import CompileConfig
from edgeprune.export.onnx import export_verified
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.backends.onnxruntime import profile_nodes
from edgeprune.latency.where import open_meters, runtimes_for
from edgeprune.model.evaluate import accuracy
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.sensitivity import accuracy_cut_alone
from edgeprune.progress import Reporter
from edgeprune.report import data_summary
from edgeprune.stages.analyse import analyse_model
from edgeprune.stages.load import load

KEEPS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class GroupSensitivity:
    """One prunable group: its full width, the widths the search may choose, and the validation accuracy
    (fraction) after pruning it alone to each keep fraction (``{keep: (width, accuracy)}``)."""

    name: str
    full: int
    choices: tuple[int, ...]
    depthwise: bool
    accuracy: dict


@dataclass(frozen=True)
class ModelAnalysis:
    model: str
    target: str
    where_measured: str
    input_shape: tuple[int, ...]
    base_accuracy: float
    macs: int
    params: int
    groups: tuple[GroupSensitivity, ...]
    frozen: dict  # {layer: reason}: what the search leaves whole
    baseline_latency: dict  # a Measurement
    latency_floor_ratio: float  # the smallest candidate's p10 / the baseline's, same rounds
    op_share: dict  # {ONNX op type: fraction of kernel time}, this machine's ONNX Runtime
    top_nodes: list  # [{"node", "op", "ms", "share"}], heaviest first
    normalisation: dict | None = None  # the data's normalisation and where it came from (as in report.json)

    def to_dict(self) -> dict:
        return asdict(self)


def analyze(cfg: CompileConfig, *, keeps=KEEPS, val_samples: int = 500, rep: Reporter | None = None,
            opener=open_meters) -> ModelAnalysis:
    """Analyse ``cfg.model`` for ``cfg.target`` with ``cfg.data`` (``cfg.out`` is not written)."""
    rep = rep or Reporter()
    inputs = load(cfg, rep)
    analysed = analyse_model(inputs, rep)
    model, shape, data = inputs.loaded.model, inputs.shape, inputs.data
    val = (data.val[0][:val_samples], data.val[1][:val_samples])
    calib = data.calib[0][: cfg.calib_samples]
    base_acc = accuracy(model, *val, device=inputs.train_device)
    base_bytes, _, _ = export_verified(model, shape, calib[:8])
    meters = opener(inputs.plan, runtimes_for(inputs.profile), Artifact(base_bytes, label="baseline"),
                    calib[:1].numpy(), None, rep, target=inputs.profile)
    try:
        reference = meters.search.baseline()
        # The search's own evaluator: the same pruning, adaptive BN and measurement a candidate gets.
        ev = CandidateEvaluator(model, shape, analysed.analysis, val, calib, meters.search, 1.0, reference.p10_ms,
                                device=inputs.train_device)
        groups = []
        n = len(analysed.analysis.groups)
        for i, g in enumerate(analysed.analysis.groups):
            acc = {str(k): (g.width(k), accuracy_cut_alone(ev, analysed.analysis, i, g.width(k), *val,
                                                          device=inputs.train_device)) for k in keeps}
            groups.append(GroupSensitivity(g.name, g.full, g.choices, g.depthwise, acc))
            rep.info(f"group {i + 1}/{n} {g.name}: "
                     + ", ".join(f"keep {k} → {a:.3f}" for k, (_, a) in acc.items()))
        floor = ev.remeasure(analysed.smallest(), rounds=None).ratio_to_baseline
    finally:
        meters.close()
    nodes = profile_nodes(base_bytes, calib[:1].numpy(), threads=inputs.plan.profile.measurement.threads)
    total = sum(ms for _, _, ms in nodes) or 1.0
    shares: dict[str, float] = {}
    for _, op, ms in nodes:
        shares[op] = shares.get(op, 0.0) + ms / total
    frozen = {name: "output layer: its width is the number of classes" for name in analysed.analysis.ignored}
    frozen.update({u.split(" ")[0]: f"a layer the pruner cannot follow ({u.split(' ', 1)[1].strip('()')})"
                   for u in analysed.analysis.unsupported})
    frozen.update(dict(analysed.analysis.frozen))
    return ModelAnalysis(
        model=str(cfg.model), target=inputs.profile.name, where_measured=inputs.plan.where, input_shape=shape,
        base_accuracy=base_acc, macs=analysed.macs, params=analysed.params, groups=tuple(groups), frozen=frozen,
        baseline_latency=reference.to_dict(), latency_floor_ratio=float(floor),
        op_share=dict(sorted(shares.items(), key=lambda kv: -kv[1])),
        top_nodes=[{"node": n, "op": op, "ms": ms, "share": ms / total}
                   for n, op, ms in sorted(nodes, key=lambda t: -t[2])[:10]],
        normalisation=data_summary(inputs)["normalisation"])
