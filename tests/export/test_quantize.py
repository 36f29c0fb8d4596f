"""INT8 static quantization (ONNX Runtime, QDQ) of an exported model, checked by accuracy on real images.

The quick tests quantize the untrained tiny ResNet-8; the accuracy check needs a model trained enough for
its argmax to mean something (200 steps on the real handwritten digits, ~12 s: marked slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from edgeprune.data.splits import load_data
from edgeprune.errors import DataError, UnsupportedLayerError
from edgeprune.export.onnx import export_verified
from edgeprune.export.quantize import check_int8, quantize_int8
from edgeprune.latency.backends.onnxruntime import ort_session
from tests.conftest import tiny_resnet

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


@pytest.fixture(scope="module")
def untrained(digits):
    fp32, _, verdict = export_verified(tiny_resnet(), SHAPE, digits.calib[0][:8])
    assert verdict.ok
    return fp32, quantize_int8(fp32, digits.calib[0][:64].numpy())


@pytest.fixture(scope="module")
def trained(digits):
    """The tiny ResNet-8 trained for 200 steps on the real handwritten digits (~95% top-1 on their
    validation split): an untrained model's argmax is too close to a tie for agreement to mean anything."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = tiny_resnet().train()
        x, y = digits.train
        g = torch.Generator().manual_seed(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=200)
        for _ in range(200):
            idx = torch.randint(0, len(x), (64,), generator=g)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    fp32, _, verdict = export_verified(model, SHAPE, digits.calib[0][:20])
    assert verdict.ok
    return fp32, quantize_int8(fp32, digits.calib[0].numpy())


def test_int8_model_is_smaller_runs_in_onnxruntime_and_is_qdq(untrained, digits):
    fp32, int8 = untrained
    assert len(int8) < 0.5 * len(fp32)  # int8 weights: about a quarter, plus scales and QDQ nodes
    ops = [n.op_type for n in onnx.load_from_string(int8).graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    sess = ort_session(int8)
    out = sess.run(None, {sess.get_inputs()[0].name: digits.val[0][:1].numpy()})[0]
    assert out.shape == (1, 10) and out.dtype == np.float32 and np.isfinite(out).all()
    # Per-channel int8 weights: the first convolution's weight is int8 with one scale per output channel.
    proto = onnx.load_from_string(int8)
    inits = {i.name: i for i in proto.graph.initializer}
    dq_w = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 4]
    assert dq_w and len(inits[dq_w[0].input[1]].dims) == 1 and inits[dq_w[0].input[1]].dims[0] > 1


@pytest.mark.slow
def test_int8_top1_agrees_with_fp32_on_a_trained_model(trained, digits):
    fp32, int8 = trained
    x, y = digits.val
    r = check_int8(fp32, int8, x.numpy(), y.numpy())
    assert set(r) == {"fp32_accuracy", "int8_accuracy", "drop", "top1_agreement", "samples"}
    assert r["samples"] == 360
    assert r["fp32_accuracy"] > 0.85, r  # trained enough for the check to mean something
    assert r["top1_agreement"] >= 0.97, r
    assert abs(r["drop"]) <= 0.02 and r["drop"] == pytest.approx(r["fp32_accuracy"] - r["int8_accuracy"]), r


# Run under emulation: only the INT8 models' predictions. Emulated fp32 convolutions are very slow (the fp32
# reference on 240 images took ~8 of the 9 minutes this test once took); the fp32 reference and the statistics
# are computed natively.
_EMULATED_TOP1 = """
import json, sys
import numpy as np
from edgeprune.export.quantize import _top1
d = sys.argv[1]
x = np.load(d + "/x.npy")
print(json.dumps({n: _top1(open(f"{d}/{n}.onnx", "rb").read(), x).tolist() for n in ("reduced", "full")}))
"""


@pytest.mark.slow
@pytest.mark.needs_qemu_x86
def test_int8_agrees_with_fp32_on_an_x86_cpu_without_vnni(trained, digits, tmp_path):
    """The same INT8 file run on an x86 CPU without VNNI (qemu-x86_64 -cpu Haswell: AVX2 only), where ONNX
    Runtime's u8×s8 kernel (VPMADDUBSW) saturates with full 8-bit weights: the default 7-bit weights
    (reduce_range) keep top-1 agreement with fp32 (run natively); full-range weights, built from the same model
    and calibration, lose it there (this also shows the emulated CPU really takes the saturating path: 94.4%
    agreement measured on these 360 images). ~30 s."""
    from edgeprune.export.quantize import _top1

    fp32, reduced = trained
    full = quantize_int8(fp32, digits.calib[0].numpy(), reduce_range=False)
    x, y = digits.val[0].numpy(), digits.val[1].numpy()
    for name, data in (("reduced", reduced), ("full", full)):
        (tmp_path / f"{name}.onnx").write_bytes(data)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(["qemu-x86_64", "-cpu", "Haswell", sys.executable, "-c", _EMULATED_TOP1, str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    emulated = {n: np.array(p) for n, p in json.loads(run.stdout.strip().splitlines()[-1]).items()}
    p32 = _top1(fp32, x)
    agree = {n: float((p == p32).mean()) for n, p in emulated.items()}
    drop = float((p32 == y).mean() - (emulated["reduced"] == y).mean())
    assert len(emulated["reduced"]) == len(emulated["full"]) == len(y) == 360
    assert agree["reduced"] >= 0.97 and abs(drop) <= 0.02, (agree, drop)
    assert agree["full"] < agree["reduced"], agree
    print(f"emulated Haswell, top-1 agreement with fp32: 7-bit {agree['reduced']:.3f}, 8-bit {agree['full']:.3f}")


def test_check_int8_of_a_model_with_itself(untrained, digits):
    fp32, _ = untrained
    x, y = digits.val[0][:50].numpy(), digits.val[1][:50].numpy()
    r = check_int8(fp32, fp32, x, y)
    assert r["top1_agreement"] == 1.0 and r["drop"] == 0.0 and r["samples"] == 50
    sess = ort_session(fp32)
    pred = np.array([sess.run(None, {"input": x[i : i + 1]})[0].argmax() for i in range(len(x))])
    assert r["fp32_accuracy"] == r["int8_accuracy"] == pytest.approx(float((pred == y).mean()))
    with pytest.raises(DataError, match="50 validation images but 49 labels"):
        check_int8(fp32, fp32, x, y[:49])


@pytest.mark.slow
def test_check_int8_scores_a_different_model_as_such(trained, digits):
    fp32, _ = trained
    other, _, _ = export_verified(tiny_resnet(), SHAPE, digits.calib[0][:4])  # untrained
    r = check_int8(fp32, other, digits.val[0].numpy(), digits.val[1].numpy())
    assert r["top1_agreement"] < 0.5 and r["drop"] > 0.5


def test_quantizer_keeps_stdout_clean(untrained, digits, capsys):
    # ORT's histogram calibrators print progress; `edgeprune ... --json` owns stdout.
    fp32, _ = untrained
    quantize_int8(fp32, digits.calib[0][:8].numpy(), calibration="entropy")
    assert capsys.readouterr().out == ""


def test_broken_model_is_a_clear_error(digits):
    calib = digits.calib[0][:4].numpy()
    with pytest.raises(UnsupportedLayerError, match="INT8 quantization failed: the input is not a valid ONNX model"):
        quantize_int8(b"this is not an onnx model", calib)


def test_quantizer_failure_names_the_reason(untrained, digits, monkeypatch):
    import onnxruntime.quantization as q

    def boom(*args, **kwargs):
        raise RuntimeError("no kernel for this op\nsecond line")

    monkeypatch.setattr(q, "quantize_static", boom)
    with pytest.raises(UnsupportedLayerError, match=r"quantize_static \(minmax calibration on 4 images\): "
                                                    r"RuntimeError: no kernel for this op$"):
        quantize_int8(untrained[0], digits.calib[0][:4].numpy())


@pytest.mark.parametrize("calib, match", [
    (np.zeros((4, 3, 16, 16), np.float32), "the model expects N×3×32×32"),
    (np.zeros((3, 32, 32), np.float32), "must be N×3×32×32 images"),
    (np.zeros((0, 3, 32, 32), np.float32), "is empty"),
    (np.full((2, 3, 32, 32), np.nan, np.float32), "NaN"),
    (np.zeros((2, 3, 32, 32), np.uint8), "must be float images"),
])
def test_calibration_data_that_does_not_fit_is_a_clear_error(untrained, calib, match):
    with pytest.raises(DataError, match=match):
        quantize_int8(untrained[0], calib)
