"""ONNX → TVM Relax → compiled shared library for a target profile, and checks of the result.

TVM 0.27 is Relax-only and takes targets as dicts (docs/design/STACK.md). CPU kernels get edgeprune's
register-tiled default schedule (``compile.schedule``; TVM's default CPU pipeline schedules nothing), untuned;
``compile.tune`` tunes with MetaSchedule. GPU targets get dlight's default GPU schedules, without which
nothing is bound to GPU threads. Cross targets are linked with the profile's C++ compiler.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from edgeprune.errors import TargetError, UnsupportedLayerError
from edgeprune.targets.profile import ELF_MACHINES, TvmSettings

GPU_KINDS = ("cuda", "vulkan", "opencl", "metal", "rocm")


def _tvm():
    try:
        import tvm
        import tvm.relax.frontend.onnx  # noqa: F401 - registers the ONNX frontend
    except ImportError as e:  # pragma: no cover - apache-tvm is a dependency
        raise TargetError(f"TVM is not installed ({e}); reinstall edgeprune with its dependencies") from None
    return tvm


def version() -> str:
    return _tvm().__version__


def host_cpu() -> str:
    """The CPU LLVM detects on this machine (e.g. 'znver4')."""
    import tvm_ffi

    _tvm()
    return str(tvm_ffi.get_global_func("target.llvm_get_system_cpu")())


def _resolve(d: dict) -> dict:
    d = dict(d)
    if d.get("mcpu") == "native":
        d["mcpu"] = host_cpu()
    return d


def make_target(settings: TvmSettings):
    """The ``tvm.target.Target`` for a profile's [tvm] section (``mcpu = "native"`` resolved here)."""
    tvm = _tvm()
    try:
        if settings.host:
            return tvm.target.Target(_resolve(settings.target), host=_resolve(settings.host))
        return tvm.target.Target(_resolve(settings.target))
    except Exception as e:  # noqa: BLE001 - TVM raises its own error types for bad target dicts
        raise TargetError(f"invalid TVM target {settings.target}: {str(e).splitlines()[0]}") from None


def unsupported_ops(model_proto) -> list[str]:
    """ONNX op types in the graph that TVM's Relax ONNX frontend has no converter for."""
    _tvm()
    from tvm.relax.frontend.onnx import onnx_frontend

    known = onnx_frontend._get_convert_map()
    return sorted({n.op_type for n in model_proto.graph.node if n.op_type not in known})


def import_onnx(model_proto, input_shape: tuple[int, ...]):
    """Relax IRModule of an ONNX model with input ``input`` of shape 1×C×H×W; clear error naming ops TVM lacks.

    The exported model's batch axis is dynamic; ``shape_dict`` fixes it to 1, so TVM compiles (and tunes) a
    static-shape batch-1 module, as it did for batch-1 exports."""
    tvm = _tvm()
    missing = unsupported_ops(model_proto)
    if missing:
        raise UnsupportedLayerError(f"TVM {tvm.__version__} cannot import ONNX op(s): {', '.join(missing)}")
    name = model_proto.graph.input[0].name
    try:
        return tvm.relax.frontend.onnx.from_onnx(model_proto, shape_dict={name: [1, *input_shape]})
    except Exception as e:  # noqa: BLE001 - converters raise many kinds on unsupported attributes
        raise UnsupportedLayerError(f"TVM could not import the ONNX model: {type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:300]}") from None


def fused(mod, target):
    """Legalise and fuse a Relax module as imported into the TIR functions that are scheduled (by
    ``compile.schedule``) and tuned (by ``compile.tune``): both must see the same functions, or no tuned
    record matches."""
    from tvm import relax

    tvm = _tvm()
    t = relax.transform
    with target:
        return tvm.transform.Sequential([t.DecomposeOpsForInference(), t.CanonicalizeBindings(), t.LegalizeOps(),
                                         t.AnnotateTIROpPattern(), t.FoldConstant(), t.FuseOps(), t.FuseTIR()])(mod)


def _schedule_gpu(mod, target):
    import tvm.s_tir.dlight as dl

    tvm = _tvm()
    with target:
        mod = tvm.relax.transform.LegalizeOps()(mod)
        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                       dl.gpu.GeneralReduction(), dl.gpu.Fallback())(mod)


def build(model_proto, input_shape: tuple[int, ...], settings: TvmSettings, *, schedule: bool = True,
          database: str | Path | None = None, stats: dict | None = None):
    """Compile an ONNX model for the profile's TVM target. Returns (``relax.VMExecutable``, seconds).

    CPU kernels get ``compile.schedule``'s register-tiled default schedule (``schedule=False``: TVM's own
    unscheduled lowering, for comparisons); GPU kernels dlight's default GPU schedules. ``database``: a
    MetaSchedule database folder (``compile.tune.database_for``) whose records schedule the CPU kernels they
    match, the default schedule the rest; ``stats`` then receives ``kernels``, ``from_database`` and
    ``database``."""
    tvm = _tvm()
    t0 = time.perf_counter()
    target = make_target(settings)
    mod = import_onnx(model_proto, input_shape)
    try:
        if database is not None and schedule and target.kind.name == "llvm":
            from edgeprune.compile.tune import compile_with_database, open_database

            info = stats if stats is not None else {}
            ex = compile_with_database(open_database(Path(database)), mod, target, info)
            info["database"] = str(database)
            return ex, time.perf_counter() - t0
        if target.kind.name in GPU_KINDS:
            mod = _schedule_gpu(mod, target)
        elif schedule and target.kind.name == "llvm":
            from edgeprune.compile.schedule import default_schedule

            mod, _, _ = default_schedule(mod, target)
        ex = tvm.compile(mod, target=target)
    except Exception as e:  # noqa: BLE001
        raise UnsupportedLayerError(f"TVM could not compile the model for {settings.target}: "
                                    f"{str(e).strip().splitlines()[-1][:300]}") from None
    return ex, time.perf_counter() - t0


def export_library(ex, path: str | Path, settings: TvmSettings) -> Path:
    """Link ``ex`` into a shared library at ``path`` with the profile's compiler (written atomically)."""
    path = Path(path)
    if settings.cc and shutil.which(settings.cc) is None:
        pkg = settings.cc_package or settings.cc
        raise TargetError(f"cross compiler {settings.cc!r} not found: install it (Debian: apt-get install {pkg}), "
                          f"or run `bash tools/setup_cross.sh`")
    tmp = path.with_name(f".{path.name}.tmp.so")
    try:
        ex.export_library(str(tmp), **({"cc": settings.cc} if settings.cc else {}))
    except Exception as e:  # noqa: BLE001
        tmp.unlink(missing_ok=True)
        raise TargetError(f"linking the TVM library failed: {str(e).strip().splitlines()[-1][:300]}") from None
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class LibraryInfo:
    """What a compiled library is: ELF class/machine and the device modules TVM embedded in it."""

    elf_machine: int
    arch: str
    embedded: tuple[str, ...]  # e.g. ("cuda",) for a CUDA module carried inside the .so

    def to_dict(self) -> dict:
        return {"elf_machine": self.elf_machine, "arch": self.arch, "embedded_device_modules": list(self.embedded)}


def inspect_library(path: str | Path) -> LibraryInfo:
    """Read the ELF header (e_machine) and look for embedded device modules (TVM serialises each imported
    module's kind as a length-prefixed string in the library blob)."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise TargetError(f"{path} is not an ELF shared object")
    little = data[5] == 1
    machine = int.from_bytes(data[18:20], "little" if little else "big")
    arch = next((a for a, m in ELF_MACHINES.items() if m == machine), f"e_machine={machine}")
    embedded = tuple(k for k in GPU_KINDS if len(k).to_bytes(8, "little") + k.encode() in data)
    return LibraryInfo(machine, arch, embedded)


def check_library(path: str | Path, *, arch: str, device_kind: str) -> LibraryInfo:
    """The library must be for the device's architecture and carry the GPU module a GPU target needs."""
    info = inspect_library(path)
    if info.elf_machine != ELF_MACHINES.get(arch):
        raise TargetError(f"{path} is built for {info.arch}, not the target's {arch}")
    if device_kind in GPU_KINDS and device_kind not in info.embedded:
        raise TargetError(f"{path} has no embedded {device_kind} module")
    return info
