"""Where latency is measured, the meters that measure there, and the comparison of runtimes.

``measurement_plan`` decides who measures: the target itself when it is this machine, devices over TVM RPC
(the profile's ``[connection]`` or ``--tracker``/``--device-key``), or a stand-in chosen with
``--measure-on`` (every latency then says so); a target that cannot be reached stops with a clear message,
and an emulated device is refused for latency. ``open_meters`` opens one ``Meter`` per runtime with the
baseline; ``compare_runtimes`` times the final model in each through the same ``Meter`` contract.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field

import numpy as np

from edgeprune.errors import DeviceError, TargetError
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.base import backend_names, get_backend
from edgeprune.latency.meter import LocalMeter, Meter, Pair
from edgeprune.targets.profile import AUTO, Connection, TargetProfile, load_target

TVM = "tvm"
# Under ``auto``, a runtime whose baseline measured this many times slower than the search runtime's is not
# timed again on the final model: pruning shrinks both alike, so it cannot win (untuned TVM on x86 is 20-50x
# slower than ONNX Runtime, docs/benchmarks.md), and timing it would cost the final plan's rounds for nothing.
CANNOT_WIN = 3.0


@dataclass(frozen=True)
class MeasurePlan:
    """The profile whose machine, runtime and timing plan measure latency, and the label on every number.
    ``remote`` is set when the measuring happens on devices over TVM RPC."""

    profile: TargetProfile
    where: str
    stand_in: bool
    remote: Connection | None = None


def measurement_plan(target: TargetProfile, measure_on: str | None, *, tracker: str | None = None,
                     device_key: str | None = None) -> MeasurePlan:
    """Decide who measures: a stand-in (``--measure-on``), devices over TVM RPC (the profile's
    [connection], or ``--tracker`` / ``--device-key``), or this machine when it is the target."""
    if target.backend != AUTO and target.backend not in backend_names():
        raise TargetError(f"target {target.name}: [runtime] backend {target.backend!r} is not a latency backend; "
                          f"available: auto, {', '.join(backend_names())}")
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


def runtimes_for(target: TargetProfile, tvm_problem: str | None = None) -> tuple[str, ...]:
    """Runtimes the target can deploy (and so are measured): its backend, or under ``auto`` every registered
    backend that can serve it — ONNX Runtime always (model.onnx), TVM when a library can be built."""
    no_tvm = target.no_tvm_reason() or tvm_problem
    if target.backend != AUTO:
        return (target.backend,) if not (target.backend == TVM and no_tvm) else ("onnxruntime",)
    return tuple(rt for rt in backend_names() if not (rt == TVM and no_tvm))


@dataclass
class Meters:
    """One open meter per runtime (each with the baseline open), the runtime the search measures with,
    and, under ``auto``, each runtime's baseline from the comparison that chose it."""

    by_runtime: dict[str, Meter]
    search_runtime: str
    comparison: dict[str, dict] = field(default_factory=dict)
    pool: object | None = None  # the DevicePool when devices measure (also verifies libraries on them)

    @property
    def search(self) -> Meter:
        return self.by_runtime[self.search_runtime]

    def close(self) -> None:
        for m in self.by_runtime.values():
            m.close()


def open_meters(plan: MeasurePlan, runtimes: tuple[str, ...], baseline: Artifact, example: np.ndarray,
                stored_choice: str | None = None, rep=None, *, parallel: int = 1,
                target: TargetProfile | None = None) -> Meters:
    """One meter per runtime, each with the baseline open, on the measuring machine or devices.

    The search times candidates in one runtime: the only one, or under ``auto`` the one whose baseline
    is faster there (the p10 of ``rounds`` interleaved rounds; a resumed run keeps its stored choice).
    Remote: up to ``parallel`` devices of the key measure at once; ``target`` is the devices' profile.
    ``example`` is one real input (1×C×H×W float32).
    """
    mp = plan.profile
    pool = None
    if plan.remote is not None:
        by_rt, pool = _remote_meters(plan, runtimes, baseline, example, parallel, target or mp, rep)
    else:
        by_rt = {rt: LocalMeter(get_backend(rt, mp), baseline, example, mp.measurement, plan.where) for rt in runtimes}
    if len(by_rt) == 1:
        return Meters(by_rt, next(iter(by_rt)), pool=pool)
    compared = {rt: m.baseline(rounds=mp.measurement.rounds) for rt, m in by_rt.items()}
    choice = stored_choice if stored_choice in by_rt else min(compared, key=lambda rt: compared[rt].p10_ms)
    if rep:
        rep.info("baseline per runtime: " + ", ".join(f"{rt} {m.p10_ms:.3f} ms" for rt, m in compared.items())
                 + f"; the search measures with {choice}")
    return Meters(by_rt, choice, {rt: m.to_dict() for rt, m in compared.items()}, pool)


def _remote_meters(plan: MeasurePlan, runtimes, baseline: Artifact, example, parallel, target: TargetProfile, rep):
    from edgeprune.latency.remote import EmulatedDeviceError, RemoteMeter
    from edgeprune.latency.rpc import DevicePool, devices_for

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
        try:
            meters[rt] = RemoteMeter(pool, rt, baseline, example.shape, plan.profile.measurement, plan.where,
                                     profile=target, device=target.tvm_device)
        except EmulatedDeviceError:
            raise
        except DeviceError as e:
            if len(runtimes) == 1:
                raise
            if rep:
                rep.warn(f"{e}; measuring with the other runtime only")
    if not meters:
        raise DeviceError(f"no runtime of {runtimes} is available on device {info['name']}")
    if rep:
        rep.info(f"measuring on {n} device(s) of key {conn.key} at {conn.tracker} ({info['name']}, {info['arch']}; "
                 f"runtimes {info.get('runtimes')}), up to {pool.size} at once")
    return meters, pool


def compare_runtimes(meters: Meters, final: Artifact, search_pair: Pair, *, plan: MeasurePlan, rounds: int,
                     policy: str, untuned: Artifact | None = None) -> dict:
    """The final model in every runtime that has a meter, each against the baseline in the same rounds.

    ``final`` is the final model (its ``library`` the TVM library built for the target, when one was
    built; ``untuned`` the untuned library when tuning ran). ``search_pair`` is the pair already measured
    in the search runtime. A stand-in cannot run the device's library, so it compiles the ONNX model itself.
    ``policy`` is the target's runtime setting: under ``auto`` the fastest deployable runtime is deployed.
    Returns {"runtimes": {name: {...}}, "deployed_runtime": name, ...}.
    """
    pairs: dict[str, Pair] = {meters.search_runtime: search_pair}
    lib_runs_here = final.library is not None and not plan.stand_in
    not_timed = {}
    base = meters.comparison
    for rt, m in meters.by_runtime.items():
        if rt != meters.search_runtime and rt in base and untuned is None \
                and base[rt]["p10_ms"] > CANNOT_WIN * base[meters.search_runtime]["p10_ms"]:
            not_timed[rt] = (f"its baseline measured {base[rt]['p10_ms'] / base[meters.search_runtime]['p10_ms']:.1f}x "
                             f"slower than {meters.search_runtime}'s: it cannot win")
            continue
        if rt == TVM and lib_runs_here and untuned is not None:
            pairs[TVM] = m.measure(untuned, rounds=rounds)
            pairs["tvm-tuned"] = m.measure(final, rounds=rounds)
        elif rt not in pairs:
            pairs[rt] = m.measure(final if lib_runs_here else Artifact(final.onnx), rounds=rounds)
    rows = {rt: {"latency": f.to_dict(), "baseline_same_run": b.to_dict(), "speedup_median": b.median_ms / f.median_ms}
            for rt, (f, b) in pairs.items()}
    # What can be deployed: model.onnx in every ONNX runtime; model.tvm.so, the default-scheduled or (when
    # tuning ran) the tuned library, whichever measured faster (a few trials can lose to the default).
    deployable = [rt for rt in pairs if not rt.startswith(TVM)]
    if final.library is not None:
        deployable += [TVM, "tvm-tuned"] if untuned is not None else [TVM]
    deployable = [rt for rt in deployable if rt in pairs]
    fastest = lambda names: min(names, key=lambda rt: pairs[rt].candidate.median_ms)  # noqa: E731
    tvms = [rt for rt in deployable if rt.startswith(TVM)]
    if policy == AUTO or policy not in deployable:
        deployed = fastest(deployable)
    else:
        deployed = fastest(tvms) if policy == TVM else policy
    return {"runtimes": rows, "not_timed": not_timed, "deployed_runtime": deployed, "policy": policy,
            "fastest_tvm": (fastest(tvms) if tvms else None),
            "measured_on": plan.where,
            "stand_in": plan.stand_in,
            "basis": ("fastest median latency of the final model" if policy == AUTO else f"profile runtime {policy!r}")
            + (" (measured on the STAND-IN, not the device)" if plan.stand_in else "")}

