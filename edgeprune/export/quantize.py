"""INT8 after pruning: ONNX Runtime static quantization of an exported model, and its accuracy check.

``quantize_int8`` runs ORT's recommended recipe: ``quant_pre_process`` (symbolic shape inference + ORT
graph optimisation + ONNX shape inference), then ``quantize_static`` in QDQ format with per-channel int8
weights and 8-bit activations calibrated on real images. The defaults below were chosen by measurement on
the bundled models (docs/benchmarks.md, "INT8 after pruning"):

* activations ``uint8`` (asymmetric), weights ``int8`` (symmetric, per output channel): what ran fastest
  here (0.40–0.45× fp32 on the unpruned models; ``int8`` activations ran at 0.77–1.50× fp32, i.e. mostly
  slower than fp32);
* ``reduce_range=True`` (weights in 7 bits): x86 CPUs without VNNI (AVX2-only edge boxes) multiply u8×s8
  with ``VPMADDUBSW``, whose 16-bit sums saturate with full 8-bit weights. Measured on one model, the same
  INT8 file agreed with fp32 on 99.4% of images on a VNNI CPU and on 94.4% on an emulated Haswell (qemu
  ``-cpu Haswell``), 2.8 points lost; with reduced range 100% on both. The INT8 file is deployed on a
  target whose CPU the host cannot see, so it is built to be right on both (docs/benchmarks.md, "INT8 after
  pruning": the same speed, accuracy within noise on a VNNI CPU);
* calibration ``minmax``: ``percentile`` and ``entropy`` kept the same top-1 accuracy on the six bundled
  variants (within 0.1 point of 2000 images) but took 3–5× longer to calibrate (histograms of every tensor).

A quantized model is not numerically equal to the float one, so ``check_int8`` checks it by accuracy: top-1
of both in ONNX Runtime on labelled validation images, the drop, and how often their top-1 agree.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from edgeprune.errors import DataError, UnsupportedLayerError
from edgeprune.latency.backends.onnxruntime import ort_session

ACTIVATIONS = ("uint8", "int8")
CALIBRATIONS = ("minmax", "percentile", "entropy")
DEFAULT_ACTIVATIONS = "uint8"
DEFAULT_CALIBRATION = "minmax"
BATCH = 64  # images per calibration / evaluation call when the model's batch dimension is not fixed


def _fail(what: str, e: BaseException) -> UnsupportedLayerError:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return UnsupportedLayerError(f"INT8 quantization failed: {what}: {type(e).__name__}: {first}")


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer logs every tensor through the root logger and its calibrators print progress on
    stdout, which belongs to the caller (``edgeprune ... --json`` prints only JSON there)."""
    log = logging.getLogger()
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        log.setLevel(level)


def _input_spec(sess) -> tuple[str, int | None, tuple]:
    """The model's one input: name, fixed batch size (None when dynamic) and the C×H×W dims (ints or names)."""
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise UnsupportedLayerError(f"INT8 quantization needs a model with one input; this one has {len(inputs)}")
    inp = inputs[0]
    if inp.type != "tensor(float)":
        raise UnsupportedLayerError(f"INT8 quantization needs a float32 input; {inp.name!r} is {inp.type}")
    shape = list(inp.shape)
    batch = shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None
    return inp.name, batch, tuple(shape[1:])


def _check_images(x: np.ndarray, dims: tuple, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1 + len(dims):
        raise DataError(f"{what} must be N×{'×'.join(str(d) for d in dims)} images; got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise DataError(f"{what} is empty")
    for i, (got, want) in enumerate(zip(x.shape[1:], dims)):
        if isinstance(want, int) and want > 0 and got != want:
            raise DataError(f"{what} has shape {tuple(x.shape)}; the model expects N×"
                            f"{'×'.join(str(d) for d in dims)} (dimension {i + 1} differs)")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{what} must be float images (normalised as for the model), not {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{what} holds NaN or infinite values")
    return x


def _batches(x: np.ndarray, batch: int | None):
    step = batch or BATCH
    for i in range(0, len(x) - len(x) % step if batch else len(x), step):
        yield x[i : i + step]


def _reader(name: str, x: np.ndarray, batch: int | None):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """Feeds ``x`` to the calibrator in the model's batch size (one image for a batch-1 export)."""

        def __init__(self):
            self._it = iter(_batches(x, batch))

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {name: b}

        def rewind(self):
            self._it = iter(_batches(x, batch))

    return Reader()


def quantize_int8(onnx_bytes: bytes, calib: np.ndarray, *, per_channel: bool = True,
                  activations: str = DEFAULT_ACTIVATIONS, calibration: str = DEFAULT_CALIBRATION,
                  reduce_range: bool = True) -> bytes:
    """Quantize an ONNX model (float32, one N×C×H×W input) to INT8 with ONNX Runtime static quantization.

    QDQ format; weights int8, symmetric, per output channel (``per_channel``); activations ``activations``
    (``uint8`` default, or ``int8``) with ranges calibrated (``minmax`` default, ``percentile``,
    ``entropy``) on ``calib``, real images N×C×H×W float32 normalised as the model expects (a few hundred
    are enough). ``reduce_range`` quantizes weights to 7 bits so that x86 CPUs without VNNI do not saturate
    (module docstring); ``False`` gives full 8-bit weights, right only where the target has VNNI or is ARM.
    The model is pre-processed first as ORT recommends (shape inference + optimisation). Works in a
    temporary folder; returns the quantized model's bytes, checked to load in ONNX Runtime.

    Raises ``UnsupportedLayerError`` (naming the reason) when the model cannot be read or quantized, and
    ``DataError`` when ``calib`` does not fit the model.
    """
    import onnx

    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, not {activations!r}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, not {calibration!r}")
    try:
        proto = onnx.load_from_string(bytes(onnx_bytes))
        if not proto.graph.node:
            raise ValueError("the graph has no nodes")
        sess = ort_session(bytes(onnx_bytes))
    except UnsupportedLayerError:
        raise
    except Exception as e:  # noqa: BLE001 - protobuf and ORT raise many kinds for a bad model
        raise _fail("the input is not a valid ONNX model ONNX Runtime can run", e) from None
    name, batch, dims = _input_spec(sess)
    x = _check_images(calib, dims, "calibration data")
    if batch is not None and len(x) < batch:
        raise DataError(f"calibration data has {len(x)} images; the model's fixed batch size is {batch}")
    try:
        sess.run(None, {name: next(_batches(x, batch))})
    except Exception as e:  # noqa: BLE001
        raise DataError(f"calibration data does not run through the model: {type(e).__name__}: "
                        f"{(str(e).strip().splitlines() or [''])[0][:300]}") from None

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[calibration]
    act = QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="edgeprune-int8-") as tmp, _quiet():
        src, pre, out = Path(tmp) / "fp32.onnx", Path(tmp) / "fp32.pre.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(onnx_bytes)
        try:
            quant_pre_process(str(src), str(pre))
        except Exception as e:  # noqa: BLE001
            raise _fail("pre-processing (shape inference + optimisation)", e) from None
        try:
            quantize_static(str(pre), str(out), _reader(name, x, batch), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, reduce_range=reduce_range, activation_type=act,
                            weight_type=QuantType.QInt8, calibrate_method=method,
                            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        except Exception as e:  # noqa: BLE001
            raise _fail(f"quantize_static ({calibration} calibration on {len(x)} images)", e) from None
        data = out.read_bytes()
    try:
        ort_session(data).run(None, {name: next(_batches(x, batch))})
    except Exception as e:  # noqa: BLE001
        raise _fail("the quantized model does not run in ONNX Runtime", e) from None
    return data


def _top1(model: bytes, x: np.ndarray) -> np.ndarray:
    sess = ort_session(model)
    name, batch, dims = _input_spec(sess)
    x = _check_images(x, dims, "validation images")
    if batch is not None and len(x) % batch:
        raise DataError(f"{len(x)} validation images do not fill the model's fixed batch size {batch}")
    return np.concatenate([sess.run(None, {name: b})[0].argmax(1) for b in _batches(x, batch)])


def check_int8(fp32_bytes: bytes, int8_bytes: bytes, x_val: np.ndarray, y_val: np.ndarray) -> dict:
    """Top-1 accuracy of the float and the quantized model in ONNX Runtime on labelled validation images
    ``x_val`` (N×C×H×W float32) / ``y_val`` (N ints): ``{"fp32_accuracy", "int8_accuracy", "drop"
    (fp32 − int8, fractions), "top1_agreement" (share of images where both predict the same class),
    "samples"}``. A quantized model is not expected to match within float tolerance: it is judged by this."""
    y = np.asarray(y_val).reshape(-1)
    if len(y) != len(x_val):
        raise DataError(f"{len(x_val)} validation images but {len(y)} labels")
    p32, p8 = _top1(fp32_bytes, x_val), _top1(int8_bytes, x_val)
    acc32, acc8 = float((p32 == y).mean()), float((p8 == y).mean())
    return {"fp32_accuracy": acc32, "int8_accuracy": acc8, "drop": acc32 - acc8,
            "top1_agreement": float((p32 == p8).mean()), "samples": int(len(y))}
