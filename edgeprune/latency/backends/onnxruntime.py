"""ONNX Runtime latency backend: one open InferenceSession per model, sequential execution, timed per call."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgeprune.latency.base import register

CPU = ("CPUExecutionProvider",)


def available_providers(wanted) -> tuple[str, ...]:
    """The execution providers asked for that this ONNX Runtime build has, in the order asked."""
    import onnxruntime

    have = set(onnxruntime.get_available_providers())
    return tuple(p for p in (wanted or ()) if p in have) or CPU


def ort_session(model: bytes | str | Path, *, threads: int = 1, providers: tuple[str, ...] = CPU):
    """An InferenceSession on ONNX bytes or an .onnx file: ``threads`` intra-op threads, sequential
    execution, all graph optimisations (what edgeprune both measures and verifies with)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    src = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(src, so, providers=list(providers))


def ort_outputs(model: bytes | str | Path, x: np.ndarray, *, threads: int = 1,
                providers: tuple[str, ...] = CPU) -> np.ndarray:
    """Logits for ``x`` (N×C×H×W float32) run one input at a time (batch 1, as verification has always run;
    the export's batch axis is dynamic) in one session."""
    sess = ort_session(model, threads=threads, providers=providers)
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


class OnnxRuntimeBackend:
    name = "onnxruntime"
    suffix = ".onnx"

    def __init__(self, providers: tuple[str, ...] = CPU):
        self.providers = providers

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def payload(self, onnx_bytes: bytes, profile) -> bytes:
        return onnx_bytes

    def open(self, model: bytes | Path, example: np.ndarray, *, threads: int, device: str = "cpu",
             providers: tuple[str, ...] | None = None) -> Callable[[], None]:
        sess = ort_session(model, threads=threads, providers=available_providers(providers or self.providers))
        feed = {sess.get_inputs()[0].name: np.ascontiguousarray(example, dtype=np.float32)}
        run = sess.run

        def once() -> None:
            run(None, feed)

        return once

    def outputs(self, model: bytes | Path, x: np.ndarray, *, device: str = "cpu") -> np.ndarray:
        """Logits for ``x`` (N×C×H×W), input by input (numerical checks)."""
        return ort_outputs(model, x, providers=available_providers(self.providers))


@register("onnxruntime")
def _factory(profile=None) -> OnnxRuntimeBackend:
    if profile is None:
        return OnnxRuntimeBackend()
    # The profile's providers, in its order; those this build lacks are dropped when a session opens.
    return OnnxRuntimeBackend(tuple(profile.providers) or CPU)


def profile_events(model: bytes, x: np.ndarray, *, runs: int, threads: int = 1) -> list[dict]:
    """ONNX Runtime's profiler over ``runs`` inferences of ``x`` on this machine (sessions as everywhere:
    sequential, all optimisations, CPU): the per-node ``*_kernel_time`` events, in run order."""
    import json
    import os
    import tempfile

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    with tempfile.TemporaryDirectory() as d:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(d, "ort")
        sess = ort.InferenceSession(model, so, providers=list(CPU))
        feed = {sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)}
        for _ in range(runs):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    return [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]


def profile_nodes(model: bytes, example: np.ndarray, *, runs: int = 50, threads: int = 1) -> list[tuple[str, str, float]]:
    """Per-node kernel time of ``runs`` inferences with ONNX Runtime's profiler on this machine:
    ``[(node name, op type, mean ms per inference)]``."""
    per: dict[str, list] = {}
    for e in profile_events(model, example, runs=runs, threads=threads):
        name = e["name"][: -len("_kernel_time")]
        slot = per.setdefault(name, [e.get("args", {}).get("op_name", "?"), 0.0])
        slot[1] += e["dur"] / 1e3  # µs → ms
    return [(name, op, total / runs) for name, (op, total) in per.items()]
