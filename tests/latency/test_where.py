"""The runtime comparison through the Meter contract alone (fake meters: the logic, not the timing)."""

from __future__ import annotations

from pathlib import Path

from edgeprune.latency import Artifact, Pair
from edgeprune.latency.where import MeasurePlan, Meters, compare_runtimes
from edgeprune.targets import load_target
from edgeprune.types import Measurement


def _m(ms: float) -> Measurement:
    return Measurement(median_ms=ms, p10_ms=ms, p90_ms=ms, min_ms=ms, spread=0.0, repeats=1, warmup=0, rounds=1,
                       threads=1, backend="x", backend_version="0", where="here", ratio_to_baseline=ms)


class Fixed:
    """A meter whose final model measures ``ms``; records what it was asked to measure."""

    parallel, where = 1, "here"

    def __init__(self, runtime: str, ms: float):
        self.runtime, self.ms, self.seen = runtime, ms, []

    def measure(self, artifact, *, rounds=None):
        self.seen.append(artifact)
        return Pair(_m(self.ms), _m(1.0))

    def close(self):
        pass


def _plan(stand_in=False):
    return MeasurePlan(load_target("host"), "here", stand_in)


FINAL = Artifact(b"onnx", library=Path("/x/model.tvm.so"), runtime="tvm")


def _compare(tvm_final_ms: float, tvm_baseline_ms: float, stand_in: bool = False):
    """Compare ONNX Runtime (final 0.5 ms, searched with) and TVM; returns (comparison, ort meter, tvm meter)."""
    ort, tvm = Fixed("onnxruntime", 0.5), Fixed("tvm", tvm_final_ms)
    meters = Meters({"onnxruntime": ort, "tvm": tvm}, "onnxruntime",
                    {"onnxruntime": {"p10_ms": 1.0}, "tvm": {"p10_ms": tvm_baseline_ms}})
    cmp = compare_runtimes(meters, FINAL, Pair(_m(0.5), _m(1.0)), plan=_plan(stand_in), rounds=3, policy="auto")
    return cmp, ort, tvm


def test_the_fastest_runtime_is_deployed_and_a_library_is_measured_as_built():
    cmp, ort, tvm = _compare(0.4, 1.2)
    assert cmp["deployed_runtime"] == "tvm" and set(cmp["runtimes"]) == {"onnxruntime", "tvm"}
    assert tvm.seen[0].library is not None and ort.seen == []  # the search pair is reused for onnxruntime
    # A stand-in cannot run the device's library: it measures the ONNX model compiled for itself.
    _, _, tvm = _compare(0.4, 1.2, stand_in=True)
    assert tvm.seen[0].library is None


def test_a_runtime_that_cannot_win_is_not_timed_again():
    cmp, _, tvm = _compare(20.0, 30.0)
    assert tvm.seen == [] and "30.0x slower" in cmp["not_timed"]["tvm"]
    assert cmp["deployed_runtime"] == "onnxruntime" and set(cmp["runtimes"]) == {"onnxruntime"}
