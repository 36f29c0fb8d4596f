"""The meter for devices reached over TVM RPC: the same ``Meter`` contract as ``LocalMeter``.

Each device keeps its session, the uploaded baseline and its open runtime sessions for the whole run;
every artifact is timed interleaved with the baseline *on the device*, by the same backend code and the
same per-call timing as here (``edgeprune.remote.device``), and the pooled per-run times come back, so
statistics, ratios and the noise check are computed exactly as for local runs. ``measure_many`` times
several artifacts at once, one per device of the key. Measurements are labelled with the device.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgeprune.errors import DeviceError
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.base import get_backend
from edgeprune.latency.meter import Pair
from edgeprune.latency.rpc import DevicePool, DeviceSession
from edgeprune.latency.timing import QuietReference, summarise, timed_until_steady
from edgeprune.types import Measurement, MeasureSettings


class EmulatedDeviceError(DeviceError):
    """The device is emulated: it verifies numerics, but its timings say nothing about the real device."""


class RemoteMeter:
    """Times artifacts in ``runtime`` on devices of ``pool``'s key.

    ``profile`` is the target profile of the devices: the backend's ``payload`` builds what they run from
    it (ONNX for ONNX Runtime; a library cross-compiled for the device for TVM) and its providers are
    asked for. ``device`` is where a library runs on the board ("cpu" or "cuda"). ``example_shape`` is
    the input shape (1×C×H×W).
    """

    def __init__(self, pool: DevicePool, runtime: str, baseline: Artifact, example_shape: tuple[int, ...],
                 settings: MeasureSettings, where: str, *, profile=None, device: str = "cpu"):
        self.pool, self.runtime, self.settings, self.where = pool, runtime, settings, where
        self.profile, self.device, self.shape = profile, device, tuple(example_shape)
        self.parallel = pool.size
        self.backend = get_backend(runtime)
        self.providers = list(getattr(profile, "providers", ()) or ("CPUExecutionProvider",))
        info = pool.info()
        if info.get("emulated"):
            raise EmulatedDeviceError(f"device {info['name']} is emulated: its timings say nothing about the real "
                                      f"device's speed, so it is not used for latency (it verifies numerics of "
                                      f"artifacts only)")
        if runtime not in info.get("runtimes", {}):
            raise DeviceError(f"device {info['name']} has no {runtime}; its runtimes: {info.get('runtimes')}")
        self._base = self._payload(baseline)
        # Per device: its quiet baseline speed, the drift check's reference (latency.timing); devices of a
        # key are different machines, so each has its own.
        self._refs: dict[str, QuietReference] = {}

    def _payload(self, artifact: Artifact) -> bytes:
        a = artifact.for_runtime(self.runtime)
        return a.library.read_bytes() if a.library else self.backend.payload(a.onnx, self.profile)

    def _plan(self, rounds: int) -> dict:
        s = self.settings
        return {"shape": list(self.shape), "threads": s.threads, "rounds": rounds, "runs_per_round": s.runs_per_round,
                "warmup": s.warmup, "device": self.device, "providers": self.providers}

    def _time(self, payload: bytes, rounds: int, what: str) -> Pair:
        def fn(sess: DeviceSession) -> Pair:
            base = sess.upload(self._base, self.backend.suffix)
            cand = sess.upload(payload, self.backend.suffix)
            meta = {}

            def time_on_device(n: int):
                r = sess.measure(self.runtime, cand, base, self._plan(n))
                meta.update(r)
                return np.asarray(r["candidate_ms"]), np.asarray(r["baseline_ms"])

            s = self.settings
            quiet = self._refs.setdefault(sess.name, QuietReference(s.runs_per_round, s.percentile))
            ref = quiet.ms
            t_c, t_b, total = timed_until_steady(time_on_device, rounds, s, reference_ms=ref)
            quiet.add(t_b)
            where = f"{self.where}; device {meta['device']['name']} ({meta['device']['arch']})"
            kw = dict(settings=s, rounds=total, backend=self.runtime, version=meta["version"], where=where,
                      reference_ms=ref)
            return Pair(summarise(t_c, baseline_ms=t_b, **kw), summarise(t_b, baseline_ms=t_b, **kw))

        return self.pool.call(fn, what)

    def baseline(self, *, rounds: int | None = None) -> Measurement:
        return self._time(self._base, rounds or self.settings.final_rounds, "baseline measurement").baseline

    def measure(self, artifact: Artifact, *, rounds: int | None = None) -> Pair:
        return self._time(self._payload(artifact), rounds or self.settings.rounds, "measurement")

    def measure_many(self, artifacts: list[Artifact], *, rounds: int | None = None) -> list[Pair]:
        """Several artifacts at once, one per device (as many in flight as the pool has devices)."""
        payloads = [self._payload(a) for a in artifacts]
        with ThreadPoolExecutor(max_workers=self.pool.size) as ex:
            futs = [ex.submit(self._time, p, rounds or self.settings.rounds, f"measurement {i + 1}/{len(payloads)}")
                    for i, p in enumerate(payloads)]
            return [f.result() for f in futs]

    def close(self) -> None:
        self.pool.close()
