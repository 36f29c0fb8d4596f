"""ONNX Runtime latency backend: one open InferenceSession per model, sequential execution."""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgeprune.latency.base import register


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.providers = providers

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def open(self, model_bytes: bytes, example: np.ndarray, *, threads: int) -> Callable[[], None]:
        from edgeprune.export.onnx import ort_session

        sess = ort_session(model_bytes, threads=threads, providers=self.providers)
        feed = {sess.get_inputs()[0].name: example}
        run = sess.run

        def once() -> None:
            run(None, feed)

        return once


@register("onnxruntime")
def _factory(profile=None) -> OnnxRuntimeBackend:
    if profile is None or not profile.is_local:
        return OnnxRuntimeBackend()
    import onnxruntime

    # On this machine use the profile's providers that this ONNX Runtime build has, in the profile's order.
    have = set(onnxruntime.get_available_providers())
    return OnnxRuntimeBackend(tuple(p for p in profile.providers if p in have) or ("CPUExecutionProvider",))
