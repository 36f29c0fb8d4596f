"""The deploy stage: the final model compiled by TVM for the target (checked, verified where it can run,
tuned on request) and timed in every deployable runtime through the measurement interface.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.deploy.verify import verify_against_ort, verify_on_device
from edgeprune.errors import DeviceError, UnsupportedLayerError, VerificationError
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.meter import Pair
from edgeprune.latency.where import MeasurePlan, Meters, compare_runtimes, runtimes_for
from edgeprune.targets.profile import TargetProfile

TVM_VERIFY_SAMPLES = 50  # calibration images compared between the TVM library and ONNX Runtime


@dataclass
class TvmArtifact:
    """The final model compiled for the target: the library (in a work folder until written as good)."""

    path: Path
    info: dict
    verification: dict
    compile_s: float
    target: str  # the TVM target, as TVM prints it (JSON)
    triple: str
    untuned_path: Path | None = None  # when tuned: the untuned library, for the comparison
    tuning: dict | None = None
    untuned_verification: dict | None = None  # when tuned: the untuned library's check (it may be the one written)
    database: dict | None = None  # the tuning database the default library was compiled with: kernels it scheduled
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"file": "model.tvm.so", "target": self.target, "triple": self.triple, "library": self.info,
                "verification": self.verification, "compile_seconds": round(self.compile_s, 2),
                "tuning": self.tuning, "database": self.database, "load": load_instructions(self)}


def load_instructions(art: TvmArtifact) -> dict:
    gpu = [m for m in art.info.get("embedded_device_modules", [])]
    dev = "tvm.cuda()" if "cuda" in gpu else "tvm.cpu()"
    needs = ["apache-tvm 0.27 runtime (pip install apache-tvm, or TVM's runtime built for the device)"]
    if "cuda" in gpu:
        needs.append("CUDA 13 with NVRTC on the device (the CUDA kernels are compiled at load time)")
    return {"needs": needs, "python": f"vm = tvm.relax.VirtualMachine(tvm.runtime.load_module('model.tvm.so'), {dev}); "
                                      f"logits = vm['main'](tvm.runtime.tensor(x, {dev}))",
            "input": "one float32 array 1xCxHxW, normalised as in the report's data.normalisation"}


def _target_triple(target) -> str:
    host = target.host or target
    return str(host.attrs.get("mtriple", "") or platform.machine() + "-linux-gnu")


def check_tvm_importable(model_proto, target: TargetProfile) -> str | None:
    """Before the search: can TVM import this model? Returns the problem (None if fine); raises if the target
    deploys with TVM only, since then nothing could be deployed."""
    if target.no_tvm_reason():
        return None
    from edgeprune.compile.tvm import unsupported_ops, version

    missing = unsupported_ops(model_proto)
    if not missing:
        return None
    msg = f"TVM {version()} cannot import ONNX op(s): {', '.join(missing)}"
    if target.backend == "tvm":
        raise UnsupportedLayerError(f"{msg}; target {target.name} deploys with TVM only (runtime backend = 'tvm')")
    return msg


def check_tuning_device(remote) -> dict:
    """Before tuning on devices (``compile.tune_remote.RemoteTuning``): the device's own description
    (``edgeprune.device_info``). An emulated device is refused unless ``remote.allow_emulated`` (tuning
    records are timings, and an emulator's say nothing about the board); one without TVM, or no device of
    the key, is a ``DeviceError``."""
    from edgeprune.latency.remote import EmulatedDeviceError
    from edgeprune.latency.rpc import DevicePool, RetryPolicy

    pool = DevicePool(remote.tracker, remote.key, session_timeout_s=remote.session_timeout_s,
                      retry=RetryPolicy(retries=1))
    try:
        info = pool.info()
    finally:
        pool.close()
    if info.get("emulated") and not remote.allow_emulated:
        raise EmulatedDeviceError(f"device {info.get('name')} is emulated: its timings say nothing about the real "
                                  f"device, so it does not tune (tuning records are timings)")
    if "tvm" not in info.get("runtimes", {}):
        raise DeviceError(f"device {info.get('name')} has no TVM runtime; its runtimes: {info.get('runtimes')}")
    return info


def build_artifact(model_proto, input_shape: tuple[int, ...], onnx_bytes: bytes, target: TargetProfile,
                   inputs: np.ndarray, workdir: Path, *, tune_trials: int = 0, seed: int = 0, rep=None,
                   device_pool=None, tune_on=None) -> TvmArtifact:
    """Compile, link, check and (where this machine can run it) verify the final model for ``target``.

    Host-runnable libraries are compared with ONNX Runtime on ``inputs`` (N×C×H×W, real images) and
    raise ``VerificationError`` outside tolerance; a cross-compiled library is checked for its ELF machine
    and embedded device modules, and run on a device of ``device_pool`` (real or emulated) when one is given.
    ``tune_on`` (``compile.tune_remote.RemoteTuning``): with ``tune_trials``, trials are timed on those devices.
    """
    from edgeprune.compile.tune import database_for
    from edgeprune.compile.tvm import build, check_library, export_library, make_target

    settings = target.tvm
    kind = settings.target["kind"]
    # The records of earlier tunings (any model, same target and layer shapes) schedule what they match,
    # as they did for the search's candidates (latency.backends.tvmrt).
    db = database_for(settings)
    db_stats: dict = {}
    ex, secs = build(model_proto, input_shape, settings, database=db, stats=db_stats)
    path = export_library(ex, workdir / "model.tvm.so", settings)
    untuned, tuning = None, None
    if tune_trials:
        from edgeprune.compile.tune import tune

        if rep:
            rep.info(f"tuning the final model with MetaSchedule ({tune_trials} trials)")
        if tune_on is not None:
            check_tuning_device(tune_on)
        untuned = path.rename(workdir / "model.untuned.tvm.so")
        tex, result = tune(model_proto, input_shape, settings, tune_trials, seed=seed, remote=tune_on)
        path = export_library(tex, workdir / "model.tvm.so", settings)
        tuning = result.to_dict()
    info = check_library(path, arch=target.arch, device_kind=kind)
    runs_here = kind == "llvm" and target.arch == platform.machine()
    untuned_verdict = None
    if runs_here:
        verdicts = []
        for lib in (path, untuned) if untuned else (path,):  # either may be the one written (deploy)
            v = verify_against_ort(lib, onnx_bytes, inputs)
            if not v.ok:
                raise VerificationError(f"the TVM library differs from ONNX Runtime by up to {v.max_abs_diff:.2e} "
                                        f"(tolerance {v.atol} + {v.rtol}*|x|); not written")
            verdicts.append(v.to_dict())
        verdict, untuned_verdict = verdicts[0], (verdicts[1] if untuned else None)
    elif device_pool is not None and kind in ("llvm", "cuda"):
        verdicts = []
        for lib in (path, untuned) if untuned else (path,):  # either may be the one written (deploy)
            v = verify_on_device(device_pool, lib, onnx_bytes, inputs, target.tvm_device)
            if not v.ok:
                raise VerificationError(f"the TVM library differs on the device from ONNX Runtime by up to "
                                        f"{v.max_abs_diff:.2e}; not written")
            verdicts.append(v.to_dict())
        verdict, untuned_verdict = verdicts[0], (verdicts[1] if untuned else None)
    else:
        verdict = {"ok": None, "method": f"cross-compiled: ELF machine {info.arch} and embedded device modules "
                                         f"{list(info.embedded) or 'none'} checked; numerical check needs the device "
                                         f"or an emulated one", "samples": 0}
    tgt = make_target(settings)
    return TvmArtifact(path, info.to_dict(), verdict, secs, str(tgt), _target_triple(tgt), untuned, tuning,
                       untuned_verification=untuned_verdict, database=db_stats or None)


def _default_label(art: TvmArtifact) -> str:
    n = (art.database or {}).get("from_database", 0)
    return f"default, {n} of {art.database['kernels']} kernels from the tuning database" if n else "default"


@dataclass(frozen=True)
class Deployment:
    """What the deploy stage produced: the runtime comparison (``comparison``: the report's ``deploy``
    section), and the TVM library in ``work`` (None when none was built) to be written with the artifacts."""

    comparison: dict
    library: Path | None


def deploy(*, profile: TargetProfile, plan: MeasurePlan, meters: Meters, onnx_bytes: bytes, search_pair: Pair,
           calib: np.ndarray, work: Path, tvm_problem: str | None, tune_trials: int = 0, seed: int = 0,
           verify_pool=None, rep=None) -> Deployment:
    """Compile the final model with TVM for the target (built for the device whoever measures), then time
    it in every runtime that has a meter, each against the baseline in the same rounds. ``calib`` holds real
    images (N×C×H×W) for the library's numerical check. The library stays in ``work`` until written as good."""
    import onnx

    art = None
    if "tvm" in runtimes_for(profile, tvm_problem):  # built for the device whoever measures
        if rep:
            rep.info(f"compiling the final model with TVM for {profile.name}")
        tune_on = None
        if tune_trials and meters.pool is not None:  # trials timed on the devices that measure latency
            from edgeprune.compile.tune_remote import RemoteTuning

            tune_on = RemoteTuning(meters.pool.tracker, meters.pool.key)
            # MetaSchedule's runner asks the tracker for a device of its own: the sessions the meters hold
            # idle are closed first, or a key with one board would wait for itself (they reopen on demand).
            meters.pool.close()
        art = build_artifact(onnx.load_from_string(onnx_bytes), tuple(calib.shape[1:]), onnx_bytes, profile,
                             calib[:TVM_VERIFY_SAMPLES], work, tune_trials=tune_trials, seed=seed, rep=rep,
                             device_pool=verify_pool if verify_pool is not None else meters.pool, tune_on=tune_on)
    skip = None if art else (profile.no_tvm_reason() or tvm_problem or f"the profile's runtime is {profile.backend}")
    final = Artifact(onnx_bytes, library=art.path if art else None, runtime="tvm" if art else None, label="final")
    untuned = Artifact(onnx_bytes, library=art.untuned_path, runtime="tvm") if art and art.untuned_path else None
    cmp = compare_runtimes(meters, final, search_pair, plan=plan, rounds=plan.profile.measurement.final_rounds,
                           policy=profile.backend, untuned=untuned)
    if rep:
        rep.info("final model per runtime (median, same-run baseline): " + ", ".join(
            f"{rt} {r['latency']['median_ms']:.3f} ms vs {r['baseline_same_run']['median_ms']:.3f} ms"
            for rt, r in cmp["runtimes"].items()) + f"; deploying {cmp['deployed_runtime']}")
    cmp["tvm"] = dict(art.to_dict(), built=True) if art else {"built": False, "reason": skip}
    library = art.path if art else None
    if art and art.untuned_path:
        # model.tvm.so is the faster of the two libraries: a short tuning can lose to the default schedule.
        tuned_won = cmp.get("fastest_tvm") != "tvm"
        cmp["tvm"]["schedule"] = "tuned" if tuned_won else (_default_label(art)
                                                            + " (it measured faster than the tuned library)")
        if not tuned_won:  # the report's check is of the library written
            library, cmp["tvm"]["verification"] = art.untuned_path, art.untuned_verification
    elif art:
        cmp["tvm"]["schedule"] = _default_label(art)
    cmp["search_runtime"], cmp["baseline_per_runtime"] = meters.search_runtime, meters.comparison
    use = getattr(getattr(meters.search, "backend", None), "database_use", None)
    if meters.search_runtime == "tvm" and use:  # what tuned records scheduled in the candidates' libraries
        cmp["search_tvm_database"] = dict(use)
    pool = meters.pool
    if pool is not None:
        cmp["remote"] = {"tracker": pool.tracker, "key": pool.key, "parallel": pool.size, "failures": pool.failures}
    return Deployment(cmp, library)
