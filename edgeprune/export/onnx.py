"""Export to ONNX, simplify, and verify every step against PyTorch on real inputs.

Tolerance: outputs (logits) must agree with the PyTorch model within ``atol + rtol * |torch|``,
with ``ATOL = 1e-4`` and ``RTOL = 1e-3`` (float32; conv/BN folding reorders sums, giving ~1e-6 differences).

The exported model's batch axis is dynamic (``input`` N×C×H×W → ``logits`` N×classes, ``N`` any size); the
simplifiers keep it so. Verification and latency still feed one image at a time; a TVM library is compiled
for batch 1 (``compile.tvm.import_onnx``).
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from edgeprune.errors import UnsupportedLayerError, VerificationError
from edgeprune.latency.backends.onnxruntime import ort_outputs
from edgeprune.verify import ATOL, RTOL, Verdict, compare

OPSET = 17
BATCH_DIM = "N"  # the symbolic name of the dynamic batch axis
DYNAMIC_AXES = {"input": {0: BATCH_DIM}, "logits": {0: BATCH_DIM}}


def export(model: nn.Module, input_shape: tuple[int, ...]):
    """Export ``model`` (eval mode, input N×C×H×W named ``input`` with a dynamic batch axis ``N``, output
    ``logits``) to an in-memory ONNX ModelProto.

    Uses the TorchScript exporter (``dynamo=False``): 0.3–0.9 s instead of 3.5–5 s per export, which
    matters inside the search loop (docs/design/STACK.md).
    """
    import onnx

    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (torch.zeros(1, *input_shape),), buf, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["logits"], do_constant_folding=True,
                              dynamic_axes=DYNAMIC_AXES)
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds for unsupported ops
            raise UnsupportedLayerError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    return onnx.load_from_string(buf.getvalue())


def simplify(model_proto):
    """Simplify with onnxslim, falling back to onnxsim; returns (proto, name of the tool that was used).
    The caller verifies the result numerically; a simplifier that raises is skipped."""
    errors = []
    try:
        import onnxslim

        return onnxslim.slim(model_proto), "onnxslim"
    except Exception as e:  # noqa: BLE001
        errors.append(f"onnxslim: {e}")
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model_proto)
        if ok:
            return simplified, "onnxsim"
        errors.append("onnxsim: its own check failed")
    except Exception as e:  # noqa: BLE001
        errors.append(f"onnxsim: {e}")
    warnings.warn(f"ONNX simplification failed, keeping the exported graph ({'; '.join(errors)})", stacklevel=2)
    return model_proto, "none"


def verify(model: nn.Module, model_bytes: bytes, inputs: torch.Tensor) -> Verdict:
    """Run ``inputs`` (N×C×H×W) one at a time through ONNX Runtime and through ``model``; compare logits."""
    model.eval()
    with torch.no_grad():
        ref = model(inputs).numpy()
    return compare(ref, ort_outputs(model_bytes, inputs.numpy()), method="ONNX Runtime vs PyTorch")


def export_verified(model: nn.Module, input_shape: tuple[int, ...], inputs: torch.Tensor, *, full_check: bool = False):
    """Export, simplify and verify. Returns (ONNX bytes, simplifier name, Verdict).

    Falls back to the unsimplified graph when the simplified one does not verify; raises
    ``VerificationError`` when neither does. ``full_check`` runs ``onnx.checker`` with ``full_check=True``.
    """
    import onnx

    proto = export(model, input_shape)
    candidates = []
    simplified, tool = simplify(proto)
    if tool != "none":
        candidates.append((simplified, tool))
    candidates.append((proto, "none"))
    last = None
    for p, name in candidates:
        if full_check:
            try:
                onnx.checker.check_model(p, full_check=True)
            except Exception as e:  # noqa: BLE001
                last = f"{name}: onnx.checker: {e}"
                continue
        data = p.SerializeToString()
        verdict = verify(model, data, inputs)
        if verdict.ok:
            return data, name, verdict
        last = f"{name}: max |diff| {verdict.max_abs_diff:.3g} over {verdict.samples} inputs"
    raise VerificationError(f"ONNX export does not match PyTorch within atol={ATOL}, rtol={RTOL} ({last})")
