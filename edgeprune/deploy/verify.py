"""Numerical checks of the TVM library: here when this machine runs it, else on a device (real or emulated).

Both compare the library's outputs with ONNX Runtime's on this machine, input by input (batch 1, real
calibration images), with the one tolerance of ``edgeprune.verify``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprune.latency.backends.onnxruntime import ort_outputs
from edgeprune.latency.base import get_backend
from edgeprune.verify import Verdict, compare


def verify_against_ort(path: str | Path, onnx_bytes: bytes, inputs: np.ndarray) -> Verdict:
    """Run the host-compiled library and ONNX Runtime on the same real inputs (N×C×H×W, one at a time)."""
    got = get_backend("tvm").outputs(Path(path), inputs)
    return compare(ort_outputs(onnx_bytes, inputs), got, method="host: TVM library vs ONNX Runtime")


def verify_on_device(pool, lib: Path, onnx_bytes: bytes, inputs: np.ndarray, device: str = "cpu") -> Verdict:
    """Run the library on a device of ``pool`` (real or emulated) and compare with ONNX Runtime here."""
    data = lib.read_bytes()

    def fn(dev):
        up = dev.upload(data, ".so")
        return dev.name, dev.info, [dev.run("tvm", up, x[None], device) for x in inputs]

    dev_name, info, outs = pool.call(fn, "verification on the device")
    kind = "EMULATED device" if info.get("emulated") else "device"
    return compare(ort_outputs(onnx_bytes, inputs), np.stack(outs),
                   method=f"on {kind} {dev_name} ({info['arch']}): TVM library vs ONNX Runtime on this machine")
