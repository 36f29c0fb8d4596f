"""The host side of TVM RPC: the tracker, sessions to devices, and a pool of them that retries.

Faults: a device that dies, a session that times out, a tracker that is down or a key with no free device
(connection errors, timeouts, TVM RPC errors) make ``DevicePool.call`` retry on a new session (the tracker
gives another device of the key when there is one) with exponential backoff, up to ``retries`` times, then
a ``DeviceError`` says what happened. Any other exception is a bug, not a dead device: it is raised at once.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeprune.errors import DeviceError


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


def _transient(e: BaseException) -> bool:
    """A failure of the device or the link (worth a retry on another session), not a bug of ours."""
    if isinstance(e, (OSError, ConnectionError, TimeoutError, EOFError)):
        return True
    try:
        from tvm.error import RPCError
    except ImportError:  # pragma: no cover - apache-tvm is a dependency
        return False
    if isinstance(e, RPCError):
        return True
    # A session whose device died surfaces as a TVM runtime error about the socket or the session.
    msg = str(e).lower()
    return type(e).__name__ in ("TVMError", "RuntimeError", "InternalError") and any(
        w in msg for w in ("socket", "connection", "session", "rpc", "closed", "broken pipe", "timeout", "timed out"))


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
            except Exception as e:
                self._drop(s)
                if not _transient(e):
                    raise
                last = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
            self.failures.append({"what": what, "attempt": attempt + 1, "device": getattr(s, "name", None),
                                  "error": last, "time": time.time()})
            if attempt < self.retry.retries:
                self.on_event(f"{what}: device failed ({last}); retrying in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, self.retry.max_backoff_s)
        raise DeviceError(f"{what} failed on {self.retry.retries + 1} attempts with devices of key {self.key!r} at "
                          f"{self.tracker}; last error: {last}")

    def close(self) -> None:
        """Close the idle sessions (each closes its RPC connection; the device drops what was uploaded)."""
        while True:
            try:
                self._idle.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                self._count -= 1

    def info(self) -> dict:
        return self.call(lambda s: s.info, "device info")
