"""The host side of remote profiling: sessions to devices through a TVM RPC tracker, and a meter.

``RemoteMeter`` has the interface of ``LatencyMeter`` (``baseline``, ``measure``) plus ``measure_many``,
which times several models in parallel, one per device of the key. Each device keeps its session, the
uploaded baseline and its open runtime sessions for the whole run; every candidate is timed interleaved
with the baseline *on the device* and the pooled times come back, so the statistics and ratios are the
same as local ones. Measurements are labelled with the device that took them.

Faults: a device that dies, a session that times out, a tracker that is down or a key with no free device
raise inside the session; the measurement is retried on a new session (the tracker gives another device
of the key when there is one) with exponential backoff, up to ``retries`` times, then a ``DeviceError``
says what happened. Completed measurements are in the run store already, so nothing measured is lost.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeprune.errors import DeviceError
from edgeprune.latency.meter import MeasureSettings, summarise
from edgeprune.types import Measurement


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise DeviceError(f"tracker address {addr!r}: expected HOST:PORT")
    return host, int(port)


def tracker_summary(tracker: str, timeout_s: float = 5.0) -> dict:
    """The tracker's view: {"server_info": [...], "queue_info": {key: {"free": n, "pending": n}}}."""
    import socket

    from tvm import rpc

    host, port = parse_addr(tracker)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
        return rpc.connect_tracker(host, port).summary()
    except (OSError, RuntimeError) as e:
        raise DeviceError(f"cannot reach the TVM RPC tracker at {tracker}: {e}") from None


def devices_for(tracker: str, key: str) -> int:
    """How many device servers are registered under ``key`` (free or busy)."""
    info = tracker_summary(tracker)
    return sum(1 for s in info.get("server_info", []) if str(s.get("key", "")).split(":")[-1] == key
               or str(s.get("key", "")).startswith(key))


class DeviceSession:
    """One open RPC session to one device, with what was uploaded to it."""

    def __init__(self, tracker: str, key: str, session_timeout_s: float, request_timeout_s: float = 30.0):
        from tvm import rpc

        host, port = parse_addr(tracker)
        if devices_for(tracker, key) == 0:  # fail fast instead of waiting in the tracker's queue
            raise DeviceError(f"no device is registered under key {key!r} at tracker {tracker}")
        self.remote = _with_timeout(lambda: rpc.connect_tracker(host, port).request(
            key, priority=1, session_timeout=int(session_timeout_s), max_retry=1), request_timeout_s,
            f"no device of key {key!r} became free at tracker {tracker} within {request_timeout_s:.0f} s")
        self.info = json.loads(self.remote.get_function("edgeprune.device_info")())
        self.uploaded: set[str] = set()
        self._measure = self.remote.get_function("edgeprune.measure")
        self._run = self.remote.get_function("edgeprune.run")

    @property
    def name(self) -> str:
        return self.info["name"]

    def upload(self, data: bytes, suffix: str) -> str:
        name = hashlib.sha256(data).hexdigest()[:20] + suffix
        if name not in self.uploaded:
            self.remote.upload(bytearray(data), target=name)
            self.uploaded.add(name)
        return name

    def measure(self, kind: str, candidate: str, baseline: str, plan: dict) -> dict:
        return json.loads(self._measure(kind, candidate, baseline, json.dumps(plan)))

    def run(self, kind: str, model: str, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = bytes(self._run(kind, model, bytearray(x.tobytes()), json.dumps(list(x.shape)), device))
        return np.frombuffer(out, dtype=np.float32)


def _with_timeout(fn: Callable, seconds: float, message: str):
    """TVM's tracker request blocks while every device is busy; bound it."""
    box: dict = {}

    def target():
        try:
            box["v"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["e"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise DeviceError(message)
    if "e" in box:
        raise box["e"]
    return box["v"]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4  # further attempts after the first
    backoff_s: float = 0.5  # doubled after each failure
    max_backoff_s: float = 8.0


class DevicePool:
    """Up to ``size`` sessions to devices of ``key``; a failed session is dropped and replaced."""

    def __init__(self, tracker: str, key: str, *, size: int = 1, session_timeout_s: float = 600.0,
                 retry: RetryPolicy = RetryPolicy(), on_event: Callable[[str], None] | None = None):
        self.tracker, self.key, self.size = tracker, key, max(1, size)
        self.session_timeout_s, self.retry, self.on_event = session_timeout_s, retry, on_event or (lambda m: None)
        self._idle: queue.Queue = queue.Queue()
        self._count = 0
        self._lock = threading.Lock()
        self.failures: list[dict] = []

    def _acquire(self) -> DeviceSession:
        while True:
            # An idle session if there is one; else open another (up to ``size``: parallel devices);
            # else wait for one to come back.
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                grow = self._count < self.size
                if grow:
                    self._count += 1
            if grow:
                break
            try:
                return self._idle.get(timeout=0.2)
            except queue.Empty:
                pass
        try:
            return DeviceSession(self.tracker, self.key, self.session_timeout_s)
        except BaseException:
            with self._lock:
                self._count -= 1
            raise

    def _release(self, s: DeviceSession) -> None:
        self._idle.put(s)

    def _drop(self, s: DeviceSession | None) -> None:
        if s is not None:
            with self._lock:
                self._count -= 1

    def call(self, fn: Callable[[DeviceSession], object], what: str):
        """Run ``fn(session)`` on a device, retrying on a fresh session after a failure."""
        delay, last = self.retry.backoff_s, None
        for attempt in range(self.retry.retries + 1):
            s = None
            try:
                s = self._acquire()
                out = fn(s)
                self._release(s)
                return out
            except DeviceError as e:
                self._drop(s)
                last = str(e)
            except Exception as e:  # noqa: BLE001 - TVM raises RPC errors, OSError, RuntimeError, ...
                self._drop(s)
                last = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
            self.failures.append({"what": what, "attempt": attempt + 1, "device": getattr(s, "name", None),
                                  "error": last, "time": time.time()})
            if attempt < self.retry.retries:
                self.on_event(f"{what}: device failed ({last}); retrying in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_backoff_s)
        raise DeviceError(f"{what} failed on {self.retry.retries + 1} attempts with devices of key {self.key!r} at "
                          f"{self.tracker}; last error: {last}")

    def info(self) -> dict:
        return self.call(lambda s: s.info, "device info")


class RemoteMeter:
    """Times models on devices of one key, each interleaved with the baseline on the same device.

    ``kind``: "onnx" (ONNX Runtime on the device, with the first of ``providers`` it has) or "tvm"
    (``to_payload`` turns ONNX bytes into the library for the device, e.g. a cross-compiled .so, run on
    ``device`` "cpu" or "cuda"). ``example_shape`` is the input shape (1×C×H×W).
    """

    def __init__(self, pool: DevicePool, kind: str, base_bytes: bytes, example_shape: tuple[int, ...],
                 settings: MeasureSettings, where: str, to_payload: Callable[[bytes], bytes] | None = None,
                 device: str = "cpu", providers: tuple[str, ...] = ("CPUExecutionProvider",)):
        self.pool, self.kind, self.settings, self.where = pool, kind, settings, where
        self.device, self.providers = device, list(providers)
        self.to_payload = to_payload or (lambda b: b)
        self.suffix = ".onnx" if kind == "onnx" else ".so"
        self.shape = tuple(example_shape)
        self._base = self.to_payload(base_bytes)
        self.backend = _Named("onnxruntime" if kind == "onnx" else "tvm")
        info = pool.info()
        if info.get("emulated"):
            raise DeviceError(f"device {info['name']} is emulated: its timings say nothing about the real device's "
                              f"speed, so it is not used for latency (it verifies numerics of artifacts only)")
        rt = "onnxruntime" if kind == "onnx" else "tvm"
        if rt not in info.get("runtimes", {}):
            raise DeviceError(f"device {info['name']} has no {rt}; its runtimes: {info.get('runtimes')}")

    def _plan(self, rounds: int) -> dict:
        s = self.settings
        return {"shape": list(self.shape), "threads": s.threads, "rounds": rounds, "runs_per_round": s.runs_per_round,
                "warmup": s.warmup, "device": self.device, "providers": self.providers}

    def _time(self, payload: bytes, rounds: int, what: str) -> tuple[Measurement, Measurement]:
        def fn(sess: DeviceSession):
            base = sess.upload(self._base, self.suffix)
            cand = sess.upload(payload, self.suffix)
            r = sess.measure(self.kind, cand, base, self._plan(rounds))
            where = f"{self.where}; device {r['device']['name']} ({r['device']['arch']})"
            t_c, t_b = np.asarray(r["candidate_ms"]), np.asarray(r["baseline_ms"])
            kw = dict(settings=self.settings, rounds=rounds, backend=self.backend.name, version=r["version"], where=where)
            return summarise(t_c, baseline_ms=t_b, **kw), summarise(t_b, baseline_ms=t_b, **kw)

        return self.pool.call(fn, what)

    def baseline(self, rounds: int | None = None) -> Measurement:
        rounds = rounds or self.settings.final_rounds
        return self._time(self._base, rounds, "baseline measurement")[1]

    def measure(self, model_bytes: bytes, *, rounds: int | None = None) -> tuple[Measurement, Measurement]:
        return self._time(self.to_payload(model_bytes), rounds or self.settings.rounds, "measurement")

    def measure_many(self, models: list[bytes], *, rounds: int | None = None) -> list[tuple[Measurement, Measurement]]:
        """Several models at once, one per device (as many in flight as the pool has devices)."""
        payloads = [self.to_payload(b) for b in models]
        with ThreadPoolExecutor(max_workers=self.pool.size) as ex:
            futs = [ex.submit(self._time, p, rounds or self.settings.rounds, f"measurement {i + 1}/{len(payloads)}")
                    for i, p in enumerate(payloads)]
            return [f.result() for f in futs]


@dataclass(frozen=True)
class _Named:
    name: str
