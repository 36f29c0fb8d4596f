"""Where latency is measured, the TVM artifact of the final model, and the runtime comparison.

``measuring_profile`` decides which machine measures: the target itself when it is this machine, or a
stand-in chosen with ``--measure-on`` (every latency then says so); a target that can be reached only
over TVM RPC, or not at all, stops with a clear message instead.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeprune.errors import DeviceError, TargetError, UnsupportedLayerError, VerificationError
from edgeprune.targets.profile import Connection, TargetProfile, load_target


@dataclass(frozen=True)
class MeasurePlan:
    """The profile whose machine, runtime and timing plan measure latency, and the label on every number.
    ``remote`` is set when the measuring happens on devices over TVM RPC."""

    profile: TargetProfile
    where: str
    stand_in: bool
    remote: Connection | None = None


def measuring_profile(target: TargetProfile, measure_on: str | None, *, tracker: str | None = None,
                      device_key: str | None = None) -> MeasurePlan:
    """Decide who measures: a stand-in (``--measure-on``), devices over TVM RPC (the profile's
    [connection], or ``--tracker`` / ``--device-key``), or this machine when it is the target."""
    conn = target.connection
    if tracker or device_key:
        conn = Connection("rpc", tracker or conn.tracker or "127.0.0.1:9190", device_key or conn.key or target.name,
                          conn.session_timeout_s)
    if measure_on:
        stand = load_target(measure_on)
        if not stand.is_local:
            raise TargetError(f"--measure-on {measure_on}: that profile is not this machine "
                              f"({stand.arch}, {stand.connection.kind}); use a local profile such as 'host'")
        if stand.name == target.name:
            return MeasurePlan(target, target.where(), False)
        return MeasurePlan(stand, f"STAND-IN {stand.where()} for target {target.name} (not the device)", True)
    if conn.kind == "rpc":
        return MeasurePlan(target, f"{target.name} ({target.arch}) over TVM RPC, key {conn.key} at {conn.tracker}",
                           False, conn)
    if target.is_local:
        return MeasurePlan(target, target.where(), False)
    raise TargetError(f"target {target.name} is an {target.arch} device and this machine is {platform.machine()}: "
                      f"it cannot be measured here; connect it over TVM RPC (--tracker HOST:PORT --device-key KEY) "
                      f"or pass --measure-on host to use this machine as a stand-in")


def tvm_skip_reason(target: TargetProfile) -> str | None:
    """Why no TVM library is built for this target, or None when one is."""
    if target.tvm is None:
        return f"target {target.name} has no [tvm] section"
    if target.unsupported and target.device == "gpu":
        return target.unsupported
    return None


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
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"file": "model.tvm.so", "target": self.target, "triple": self.triple, "library": self.info,
                "verification": self.verification, "compile_seconds": round(self.compile_s, 2),
                "tuning": self.tuning, "load": load_instructions(self)}


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
    if tvm_skip_reason(target):
        return None
    from edgeprune.deploy.tvm import unsupported_ops, version

    missing = unsupported_ops(model_proto)
    if not missing:
        return None
    msg = f"TVM {version()} cannot import ONNX op(s): {', '.join(missing)}"
    if target.backend == "tvm":
        raise UnsupportedLayerError(f"{msg}; target {target.name} deploys with TVM only (runtime backend = 'tvm')")
    return msg


def build_artifact(model_proto, input_shape: tuple[int, ...], onnx_bytes: bytes, target: TargetProfile,
                   inputs: np.ndarray, workdir: Path, *, tune_trials: int = 0, seed: int = 0, rep=None,
                   device_pool=None) -> TvmArtifact:
    """Compile, link, check and (where this machine can run it) verify the final model for ``target``.

    Host-runnable libraries are compared with ONNX Runtime on ``inputs`` (N×C×H×W, real images) and
    raise ``VerificationError`` outside tolerance; a cross-compiled library is checked for its ELF machine
    and embedded device modules, and run on a device of ``device_pool`` (real or emulated) when one is given.
    """
    from edgeprune.deploy.tvm import build, check_library, export_library, make_target, verify_against_ort

    settings = target.tvm
    kind = settings.target["kind"]
    ex, secs = build(model_proto, input_shape, settings)
    path = export_library(ex, workdir / "model.tvm.so", settings)
    untuned, tuning = None, None
    if tune_trials:
        from edgeprune.deploy.tune import tune

        if rep:
            rep.info(f"tuning the final model with MetaSchedule ({tune_trials} trials)")
        untuned = path.rename(workdir / "model.untuned.tvm.so")
        tex, result = tune(model_proto, input_shape, settings, tune_trials, seed=seed)
        path = export_library(tex, workdir / "model.tvm.so", settings)
        tuning = result.to_dict()
    info = check_library(path, arch=target.arch, device_kind=kind)
    runs_here = kind == "llvm" and target.arch == platform.machine()
    if runs_here:
        verdict = verify_against_ort(path, onnx_bytes, inputs, threads=1)
        if not verdict["ok"]:
            raise VerificationError(f"the TVM library differs from ONNX Runtime by up to {verdict['max_abs_diff']:.2e} "
                                    f"(tolerance {verdict['atol']} + {verdict['rtol']}*|x|); not written")
    elif device_pool is not None and kind in ("llvm", "cuda"):
        verdict = verify_on_device(device_pool, path, onnx_bytes, inputs, _device_kind(target))
        if not verdict["ok"]:
            raise VerificationError(f"the TVM library differs on the device from ONNX Runtime by up to "
                                    f"{verdict['max_abs_diff']:.2e}; not written")
    else:
        verdict = {"ok": None, "method": f"cross-compiled: ELF machine {info.arch} and embedded device modules "
                                         f"{list(info.embedded) or 'none'} checked; numerical check needs the device "
                                         f"or an emulated one", "samples": 0}
    tgt = make_target(settings)
    return TvmArtifact(path, info.to_dict(), verdict, secs, str(tgt), _target_triple(tgt), untuned, tuning)


def deploy_runtimes(target: TargetProfile, tvm_problem: str | None) -> tuple[str, ...]:
    """Runtimes the target can deploy: ONNX Runtime always (model.onnx), TVM when a library is built."""
    if target.backend == "onnxruntime" or tvm_skip_reason(target) or tvm_problem:
        return ("onnxruntime",)
    return ("onnxruntime", "tvm") if target.backend == "auto" else ("tvm",)


def open_meters(plan: MeasurePlan, runtimes: tuple[str, ...], base_bytes: bytes, example: np.ndarray,
                stored_choice: str | None, rep=None, *, parallel: int = 1, target: TargetProfile | None = None):
    """One meter per runtime, each with the baseline open, on the measuring machine or devices.

    The search times candidates in one runtime: the only one, or under ``auto`` the one whose baseline
    is faster there (the p10 of ``rounds`` interleaved rounds; a resumed run keeps its stored choice).
    Remote: up to ``parallel`` devices of the key measure at once; ``target`` compiles TVM libraries for them.
    Returns (meters, search runtime, {runtime: baseline Measurement dict} of the comparison).
    """
    from edgeprune.latency import LatencyMeter, get_backend

    mp = plan.profile
    if plan.remote is not None:
        meters = _remote_meters(plan, runtimes, base_bytes, example, parallel, target or mp, rep)
        runtimes = tuple(meters)
    else:
        meters = {rt: LatencyMeter(get_backend(rt, mp), base_bytes, example, mp.measurement, plan.where)
                  for rt in runtimes}
    if len(runtimes) == 1:
        return meters, runtimes[0], {}
    compared = {rt: m.baseline(rounds=mp.measurement.rounds) for rt, m in meters.items()}
    choice = stored_choice or min(compared, key=lambda rt: compared[rt].p10_ms)
    if rep:
        rep.info("baseline per runtime: " + ", ".join(f"{rt} {m.p10_ms:.3f} ms" for rt, m in compared.items())
                 + f"; the search measures with {choice}")
    return meters, choice, {rt: m.to_dict() for rt, m in compared.items()}


def _remote_meters(plan: MeasurePlan, runtimes, base_bytes, example, parallel, target: TargetProfile, rep) -> dict:
    from edgeprune.remote.client import DevicePool, RemoteMeter, devices_for

    conn = plan.remote
    try:
        n = devices_for(conn.tracker, conn.key)
    except DeviceError as e:
        raise DeviceError(f"{e}; start one (edgeprune device tracker) with a device server registered under key "
                          f"{conn.key!r} (edgeprune device serve --tracker {conn.tracker} --key {conn.key}), or pass "
                          f"--measure-on host to measure on this machine as a stand-in") from None
    if n == 0:
        raise DeviceError(f"no device is registered under key {conn.key!r} at tracker {conn.tracker} (see edgeprune "
                          f"device list --tracker {conn.tracker}); or pass --measure-on host for a stand-in")
    pool = DevicePool(conn.tracker, conn.key, size=min(max(1, parallel), n), session_timeout_s=conn.session_timeout_s,
                      on_event=(rep.warn if rep else None))
    info = pool.info()
    if info["arch"] != target.arch:
        raise DeviceError(f"device {info['name']} under key {conn.key!r} is {info['arch']}, but target {target.name} "
                          f"is {target.arch}")
    meters = {}
    for rt in runtimes:
        kind = "onnx" if rt == "onnxruntime" else "tvm"
        try:
            meters[rt] = RemoteMeter(pool, kind, base_bytes, example.shape, plan.profile.measurement, plan.where,
                                     to_payload=None if kind == "onnx" else _cross_compiler(target, example.shape[1:]),
                                     device=_device_kind(target), providers=target.providers)
        except DeviceError as e:
            if len(runtimes) == 1 or "emulated" in str(e):
                raise
            if rep:
                rep.warn(f"{e}; measuring with the other runtime only")
    if not meters:
        raise DeviceError(f"no runtime of {runtimes} is available on device {info['name']}")
    if rep:
        rep.info(f"measuring on {n} device(s) of key {conn.key} at {conn.tracker} ({info['name']}, {info['arch']}; "
                 f"runtimes {info.get('runtimes')}), up to {pool.size} at once")
    return meters


def _device_kind(target: TargetProfile) -> str:
    """Where a TVM library for the target runs on the device: "cuda" for a CUDA target, else "cpu"."""
    return "cuda" if target.tvm is not None and target.tvm.target["kind"] == "cuda" else "cpu"


def _cross_compiler(target: TargetProfile, input_shape):
    """ONNX bytes → the TVM library for the target's device, as bytes (what is uploaded)."""
    import tempfile

    import onnx

    from edgeprune.deploy.tvm import build, export_library

    def to_payload(onnx_bytes: bytes) -> bytes:
        ex, _ = build(onnx.load_from_string(onnx_bytes), tuple(input_shape), target.tvm)
        with tempfile.TemporaryDirectory() as d:
            return export_library(ex, Path(d) / "m.so", target.tvm).read_bytes()

    return to_payload


def verify_on_device(pool, lib: Path, onnx_bytes: bytes, inputs: np.ndarray, device: str = "cpu") -> dict:
    """Run the library on a device of ``pool`` (real or emulated) and compare with ONNX Runtime here."""
    from edgeprune.deploy.tvm import ATOL, RTOL
    from edgeprune.export.onnx import ort_session

    sess = ort_session(onnx_bytes, threads=1)
    name = sess.get_inputs()[0].name
    data = lib.read_bytes()

    def fn(dev):
        up = dev.upload(data, ".so")
        return dev.name, dev.info, [dev.run("tvm", up, x[None], device) for x in inputs]

    dev_name, info, outs = pool.call(fn, "verification on the device")
    worst, ok, agree = 0.0, True, 0
    for x, got in zip(inputs, outs):
        ref = sess.run(None, {name: x[None].astype(np.float32)})[0].ravel()
        diff = np.abs(got - ref)
        worst = max(worst, float(diff.max()))
        ok &= bool(np.all(diff <= ATOL + RTOL * np.abs(ref)))
        agree += int(got.argmax() == ref.argmax())
    kind = "EMULATED device" if info.get("emulated") else "device"
    return {"ok": ok, "method": f"on {kind} {dev_name} ({info['arch']}): TVM library vs ONNX Runtime on this machine",
            "max_abs_diff": worst, "samples": len(inputs), "atol": ATOL, "rtol": RTOL,
            "top1_agreement": agree / max(1, len(inputs))}


def compare_final(meters: dict, onnx_bytes: bytes, art: TvmArtifact | None, plan: MeasurePlan, search_rt: str,
                  search_pair, example: np.ndarray, rounds: int, policy: str) -> dict:
    """The final model in every deployable runtime, each against the baseline in the same rounds.

    ``search_pair`` is the (final, baseline) pair already measured in the search runtime. A library built
    for this machine is timed itself; for a stand-in the final model is compiled for the stand-in.
    ``policy`` is the target's runtime setting: under ``auto`` the fastest deployable runtime is deployed.
    Returns {"runtimes": {name: {...}}, "deployed_runtime": name, "basis": ...}.
    """
    pairs = {search_rt: search_pair}
    if "tvm" in meters:
        m = meters["tvm"]
        if art is not None and not plan.stand_in and plan.remote is None:
            lib = art.untuned_path or art.path
            pairs["tvm"] = m.measure_runner(m.backend.open_library(lib, example, threads=m.settings.threads),
                                            rounds=rounds) if search_rt != "tvm" or art.untuned_path else search_pair
            if art.untuned_path:
                pairs["tvm-tuned"] = m.measure_runner(m.backend.open_library(art.path, example, threads=m.settings.threads),
                                                      rounds=rounds)
        elif search_rt != "tvm":
            pairs["tvm"] = m.measure(onnx_bytes, rounds=rounds)
    if "onnxruntime" in meters and "onnxruntime" not in pairs:
        pairs["onnxruntime"] = meters["onnxruntime"].measure(onnx_bytes, rounds=rounds)
    rows = {rt: {"latency": f.to_dict(), "baseline_same_run": b.to_dict(), "speedup_median": b.median_ms / f.median_ms}
            for rt, (f, b) in pairs.items()}
    # What can be deployed: model.onnx always; model.tvm.so is the tuned library when tuning ran.
    deployable = ["onnxruntime"] + ([("tvm-tuned" if art.untuned_path else "tvm")] if art is not None else [])
    deployable = [rt for rt in deployable if rt in pairs]
    if policy == "auto" or policy not in deployable:
        deployed = min(deployable, key=lambda rt: pairs[rt][0].median_ms)
    else:
        deployed = policy if policy == "onnxruntime" else deployable[-1]
    return {"runtimes": rows, "deployed_runtime": deployed, "policy": policy, "measured_on": plan.where,
            "stand_in": plan.stand_in,
            "basis": ("fastest median latency of the final model" if policy == "auto" else f"profile runtime {policy!r}")
            + (" (measured on the STAND-IN, not the device)" if plan.stand_in else "")}
