"""The device side of remote profiling: a TVM RPC server with edgeprune's measurement functions.

Runs on the board (or under emulation) with only numpy, TVM and optionally ONNX Runtime: nothing here
imports torch. The server is started in this process (TVM's stock ``rpc_server`` re-executes
``sys.executable``, which fails under qemu-user; docs/design/STACK.md); every RPC session runs in a forked child
that inherits the functions registered here:

- ``edgeprune.device_info() -> str``: JSON with the device name, architecture, runtimes and whether it is emulated.
- ``edgeprune.measure(runtime, candidate, baseline, plan) -> str``: times an uploaded model interleaved with
  the uploaded baseline in rounds, with the registered latency backend ``runtime`` (``edgeprune.latency``:
  the same code and the same per-call timing as on the host); returns JSON with both pooled per-run times
  in ms. Models stay open for the RPC session.
- ``edgeprune.run(runtime, model, input, shape, device) -> bytes``: outputs for one float32 input, for
  numerical checks (``device`` "cpu" or "cuda" for a TVM library).

Security: TVM RPC has no authentication and runs uploaded code. ``serve`` binds 127.0.0.1 unless told
otherwise with ``allow_remote``; see the README's trust model.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import time
from pathlib import Path

_OPEN: dict[tuple[str, str, int], object] = {}  # (kind, path, threads) -> runner, for this RPC session


def _runtimes() -> dict:
    """{backend name: version} of every registered latency backend whose runtime is installed here."""
    from edgeprune.latency.base import discover, get_backend

    out = {}
    for name in sorted(discover()):
        try:
            out[name] = get_backend(name).version()
        except ImportError:
            pass
    return out


def _workpath(name: str) -> str:
    import tvm_ffi

    return str(tvm_ffi.get_global_func("tvm.rpc.server.workpath")(name))


def _open(runtime: str, name: str, shape: tuple[int, ...], threads: int, device: str = "cpu", providers=None):
    """A function that runs one inference of the uploaded model ``name`` on a fixed random input, by the
    same backend code that times models on the host (per call)."""
    import numpy as np

    from edgeprune.latency.base import get_backend

    key = (runtime, name, threads, device, tuple(providers or ()))
    if key not in _OPEN:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        _OPEN[key] = get_backend(runtime).open(Path(_workpath(name)), x, threads=threads, device=device,
                                               providers=tuple(providers or ()) or None)
    return _OPEN[key]


def register(name: str, *, emulated: bool = False) -> None:
    """Register edgeprune's functions as TVM global functions in this process (before sessions fork)."""
    import tvm_ffi

    from edgeprune.latency.base import get_backend
    from edgeprune.latency.timing import interleave

    info = {"name": name, "arch": platform.machine(), "emulated": emulated, "host": socket.gethostname(),
            "cpus": os.cpu_count()}

    @tvm_ffi.register_global_func("edgeprune.device_info", override=True)
    def device_info() -> str:
        return json.dumps(dict(info, runtimes=_runtimes(), pid=os.getpid()))

    @tvm_ffi.register_global_func("edgeprune.measure", override=True)
    def measure(runtime: str, candidate: str, baseline: str, plan: str) -> str:
        p = json.loads(plan)
        shape = tuple(p["shape"])
        opts = (p["threads"], p.get("device", "cpu"), p.get("providers"))
        runners = [_open(runtime, candidate, shape, *opts), _open(runtime, baseline, shape, *opts)]
        t0 = time.perf_counter()
        cand, base = interleave(runners, p["rounds"], p["runs_per_round"], p["warmup"])
        return json.dumps({"candidate_ms": cand.tolist(), "baseline_ms": base.tolist(), "device": info,
                           "version": get_backend(runtime).version(), "seconds": time.perf_counter() - t0})

    @tvm_ffi.register_global_func("edgeprune.run", override=True)
    def run(runtime: str, model: str, x: bytes, shape: str, device: str) -> bytes:
        import numpy as np

        arr = np.frombuffer(bytes(x), dtype=np.float32).reshape(json.loads(shape))
        out = get_backend(runtime).outputs(Path(_workpath(model)), arr, device=device)
        return np.ascontiguousarray(out, dtype=np.float32).tobytes()


def check_bind(host: str, allow_remote: bool) -> None:
    """Refuse a non-loopback address unless explicitly allowed, and warn when it is."""
    loopback = host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
    if loopback:
        return
    if not allow_remote:
        raise PermissionError(f"refusing to listen on {host}: TVM RPC has no authentication and runs uploaded code; "
                              f"pass --allow-remote to accept connections from other machines (isolated network "
                              f"or SSH tunnel only)")
    logging.getLogger("edgeprune").warning(
        "listening on %s: anyone who can reach this port can run code on this machine (TVM RPC has no "
        "authentication); use an isolated network or an SSH tunnel", host)


def serve(*, host: str, port: int, tracker: str | None, key: str, name: str | None = None, emulated: bool = False,
          allow_remote: bool = False, port_end: int | None = None, on_ready=None) -> None:
    """Start a TVM RPC server in this process, registered with ``tracker`` (HOST:PORT) under ``key``, and
    serve until killed. ``on_ready(port)`` is called once it listens."""
    check_bind(host, allow_remote)
    from tvm.rpc import server as rpc_server

    tracker_addr = None
    if tracker:
        th, tp = tracker.rsplit(":", 1)
        tracker_addr = (th, int(tp))
    # Functions first: each session is a fork of this process and inherits them.
    register(name or f"{key}@{socket.gethostname()}:{port}", emulated=emulated)
    bound = rpc_server._popen_start_rpc_server(host, port, port_end or port + 50, tracker_addr=tracker_addr, key=key,
                                               silent=True, custom_addr=host if host != "0.0.0.0" else None)
    register(name or f"{key}@{socket.gethostname()}:{bound}", emulated=emulated)
    if on_ready:
        on_ready(bound)
    while True:
        time.sleep(3600)
