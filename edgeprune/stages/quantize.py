"""Stage 6b, quantize (``--quantize int8``): the final model in INT8 with ONNX Runtime static quantization,
checked for accuracy on the validation split and measured against the baseline in the same rounds.

An INT8 model is not expected to match the float one within float tolerance, so its check is top-1
accuracy on real images (and agreement with the float model), not output closeness. It is deployed
(``model.int8.onnx``, the manifest's ``deployed_form``) only when it is faster than the float model,
measured, and loses at most ``max_drop`` accuracy; otherwise the report says why not. ``model.onnx`` stays
the verified float model either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeprune.export.quantize import check_int8, quantize_int8
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.meter import Meter, Pair

CALIB_IMAGES = 256  # calibration images for the activation ranges


@dataclass(frozen=True)
class Quantized:
    """The INT8 model, its accuracy check, its measurement (None when the search runtime cannot run QDQ
    models), and whether it is the deployed form (``reason`` says why or why not)."""

    onnx_bytes: bytes = field(repr=False)
    check: dict
    pair: Pair | None
    deployed: bool
    reason: str

    def to_dict(self) -> dict:
        d = {"form": "int8", "check": self.check, "deployed": self.deployed, "reason": self.reason,
             "latency": None, "baseline_latency_same_run": None}
        if self.pair is not None:
            d["latency"], d["baseline_latency_same_run"] = self.pair.candidate.to_dict(), self.pair.baseline.to_dict()
        return d


def quantize_final(*, fp32_bytes: bytes, fp32_pair: Pair, data, calib, meter: Meter, rounds: int, max_drop: float,
                   rep) -> Quantized:
    """Quantize the verified float model ``fp32_bytes`` on ``calib`` (N×C×H×W), check it on the whole
    validation split, and measure it with ``meter`` over ``rounds`` rounds (ONNX Runtime only)."""
    rep.info("quantizing the final model to INT8 (ONNX Runtime static quantization, QDQ)")
    int8 = quantize_int8(fp32_bytes, calib[:CALIB_IMAGES].numpy())
    check = check_int8(fp32_bytes, int8, data.val[0].numpy(), data.val[1].numpy())
    if meter.runtime != "onnxruntime":
        return Quantized(int8, check, None, False, f"the search runtime is {meter.runtime}: the INT8 (QDQ) model "
                                                   f"runs in ONNX Runtime; not measured, not deployed")
    pair = meter.measure(Artifact(int8, label="int8"), rounds=rounds)
    # Each ratio is to the baseline timed in its own rounds: steadier than comparing two medians taken at
    # different times (pruned ResNets gain only 3-10% from INT8 here, within the drift between runs).
    r8, r32 = pair.candidate.ratio_to_baseline, fp32_pair.candidate.ratio_to_baseline
    faster = r8 < r32
    ok = check["drop"] <= max_drop
    speed = f"{r8:.3f}x vs {r32:.3f}x the baseline for the float model (p10, each in the same rounds)"
    if faster and ok:
        reason = f"faster ({speed}) and {check['drop'] * 100:.2f} points less accurate (allowed {max_drop * 100:g})"
    elif not faster:
        reason = f"not faster than the float model ({speed}): the float model is deployed"
    else:
        reason = (f"loses {check['drop'] * 100:.2f} points of accuracy (allowed {max_drop * 100:g}, "
                  f"--int8-max-drop): the float model is deployed")
    rep.info(f"INT8: accuracy {check['int8_accuracy']:.4f} vs {check['fp32_accuracy']:.4f}; {speed}; "
             + ("deployed" if faster and ok else "not deployed"))
    return Quantized(int8, check, pair, faster and ok, reason)
