"""TVM latency backend: the ONNX model compiled with TVM (Relax) and run in a Relax VM, timed per call.

Timed per call from Python like the ONNX Runtime backend, here and on devices alike (so ratios between
the two runtimes are fair), not with ``time_evaluator``, which times in its own loop and would break the
interleaving with the baseline. ``payload`` compiles for the profile's device (cross-compiled for ARM
boards); ``open`` compiles for this machine, or loads a library already built for it.

CPU libraries are compiled with the target's tuning database where it holds records
(``compile.tune.database_for``), as the deployed library is: a search ranks candidates by the latency of
the code it would deploy, tuned kernels included. ``database_use`` counts what the records scheduled.
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
    suffix = ".so"

    def __init__(self, settings: TvmSettings = HOST):
        self.settings = settings
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._n = 0
        self.database_use = {"database": None, "compiles": 0, "kernels": 0, "from_database": 0}

    def version(self) -> str:
        import tvm

        return tvm.__version__

    def _compile(self, onnx_bytes: bytes, input_shape, settings: TvmSettings) -> Path:
        import onnx

        from edgeprune.compile.tune import database_for
        from edgeprune.compile.tvm import build, export_library

        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="edgeprune-tvm-")
        db = database_for(settings)
        stats: dict = {}
        ex, _ = build(onnx.load_from_string(onnx_bytes), tuple(input_shape), settings, database=db, stats=stats)
        if db is not None:
            use = self.database_use
            use["database"], use["compiles"] = str(db), use["compiles"] + 1
            use["kernels"] += stats.get("kernels", 0)
            use["from_database"] += stats.get("from_database", 0)
        self._n += 1
        return export_library(ex, Path(self._tmp.name) / f"m{self._n}.so", settings)

    def payload(self, onnx_bytes: bytes, profile) -> bytes:
        """The library for ``profile``'s device (its [tvm] target; cross-compiled when it is another machine)."""
        import onnx

        shape = [d.dim_value for d in onnx.load_from_string(onnx_bytes).graph.input[0].type.tensor_type.shape.dim][1:]
        return self._compile(onnx_bytes, shape, profile.tvm).read_bytes()

    def open(self, model: bytes | Path, example: np.ndarray, *, threads: int, device: str = "cpu",
             providers: tuple[str, ...] | None = None) -> Callable[[], None]:
        import tvm
        import tvm_ffi

        path = self._compile(model, example.shape[1:], self.settings) if isinstance(model, bytes) else model
        # Pool size for TVM's parallel loops (mode 0: no pinning; pinning fights other processes on a shared box).
        tvm_ffi.get_global_func("runtime.config_threadpool")(0, threads)
        dev = tvm.cuda() if device == "cuda" else tvm.cpu()
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(path)), dev)
        x = tvm.runtime.tensor(np.ascontiguousarray(example, dtype=np.float32), dev)
        main, sync = vm["main"], dev.sync

        def once() -> None:
            main(x)
            sync()  # a GPU call returns before the kernels finish

        return once

    def outputs(self, model: bytes | Path, x: np.ndarray, *, device: str = "cpu") -> np.ndarray:
        """Logits for ``x`` (N×C×H×W), input by input in one loaded VM (numerical checks)."""
        import tvm

        path = self._compile(model, x.shape[1:], self.settings) if isinstance(model, bytes) else model
        dev = tvm.cuda() if device == "cuda" else tvm.cpu()
        main = tvm.relax.VirtualMachine(tvm.runtime.load_module(str(path)), dev)["main"]
        x = np.ascontiguousarray(x, dtype=np.float32)
        outs = []
        for i in range(len(x)):
            out = main(tvm.runtime.tensor(x[i : i + 1], dev))
            outs.append((out[0] if not hasattr(out, "numpy") else out).numpy())
        return np.concatenate(outs)


@register("tvm")
def _factory(profile=None) -> TvmBackend:
    # ``open`` runs what it compiles on this machine: a profile for another machine is compiled for the
    # host here (its own library comes from ``payload``).
    if profile is not None and profile.tvm is not None and profile.is_local:
        return TvmBackend(profile.tvm)
    return TvmBackend()
