"""TVM latency backend: the ONNX model compiled with TVM for this machine, run in a Relax VM.

Timed per call from Python like the ONNX Runtime backend (so ratios between the two are fair), not with
``time_evaluator``, which would time in its own loop and break the interleaving with the baseline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from edgeprune.latency.base import register
from edgeprune.targets.profile import TvmSettings

HOST = TvmSettings(target={"kind": "llvm", "mcpu": "native"})


class TvmBackend:
    name = "tvm"

    def __init__(self, settings: TvmSettings = HOST):
        self.settings = settings
        self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-tvm-")
        self._n = 0

    def version(self) -> str:
        from edgeprune.deploy.tvm import version

        return version()

    def open(self, model_bytes: bytes, example: np.ndarray, *, threads: int) -> Callable[[], None]:
        import onnx

        from edgeprune.deploy.tvm import build, export_library

        ex, _ = build(onnx.load_from_string(model_bytes), tuple(example.shape[1:]), self.settings)
        self._n += 1
        path = export_library(ex, Path(self._tmp.name) / f"m{self._n}.so", self.settings)
        return self.open_library(path, example, threads=threads)

    def open_library(self, path: str | Path, example: np.ndarray, *, threads: int) -> Callable[[], None]:
        """Open an already compiled library (e.g. a tuned one) for timed runs."""
        from edgeprune.deploy.tvm import _tvm, load_vm

        tvm = _tvm()
        vm, dev = load_vm(path, threads)
        x = tvm.runtime.tensor(np.ascontiguousarray(example, dtype=np.float32), dev)
        main = vm["main"]

        def once() -> None:
            main(x)  # synchronous on the CPU

        return once


@register("tvm")
def _factory(profile=None) -> TvmBackend:
    # Only the host can run what is compiled here: a profile for another machine is measured remotely.
    if profile is not None and profile.tvm is not None and profile.is_local:
        return TvmBackend(profile.tvm)
    return TvmBackend()
