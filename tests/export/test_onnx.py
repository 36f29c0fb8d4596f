import onnx
import pytest
import torch

from edgeprune.errors import UnsupportedLayerError
from edgeprune.export.onnx import export_verified, verify
from tests.conftest import tiny_resnet

SHAPE = (3, 32, 32)


def test_export_simplify_and_verify_against_torch():
    model = tiny_resnet()
    x = torch.randn(8, *SHAPE)
    data, tool, verdict = export_verified(model, SHAPE, x, full_check=True)
    assert verdict.ok and verdict.samples == 8 and verdict.max_abs_diff < 1e-4
    assert tool in ("onnxslim", "onnxsim", "none")
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    # Simplification folds BatchNorm into the convolutions.
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)


def test_verify_detects_a_different_model():
    x = torch.randn(4, *SHAPE)
    data, _, _ = export_verified(tiny_resnet(), SHAPE, x)
    other = tiny_resnet()
    with torch.no_grad():
        other.fc.bias.add_(1.0)
    verdict = verify(other, data, x)
    assert not verdict.ok and verdict.max_abs_diff > 0.5


def test_unexportable_op_is_a_clear_error():
    class Weird(torch.nn.Module):
        def forward(self, x):
            return torch.fft.fft(x).real.mean(dim=(2, 3))

    with pytest.raises(UnsupportedLayerError, match="ONNX export failed"):
        export_verified(Weird(), SHAPE, torch.randn(2, *SHAPE))


def _batch_dim(proto):
    return [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]


def test_exported_model_has_a_dynamic_batch_axis_and_runs_batch_4():
    import numpy as np
    import onnxruntime as ort

    model = tiny_resnet()
    data, tool, _ = export_verified(model, SHAPE, torch.randn(2, *SHAPE))
    proto = onnx.load_from_string(data)
    # Kept dynamic through simplification (whichever tool was used), input and output alike.
    assert isinstance(_batch_dim(proto)[0], str) and _batch_dim(proto)[1:] == list(SHAPE), tool
    assert isinstance(proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param, str)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for n in (4, 1):
        x = torch.randn(n, *SHAPE)
        got = sess.run(None, {"input": x.numpy()})[0]
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
