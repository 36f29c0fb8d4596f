"""The device side of remote profiling: a TVM RPC server with edgeprune's measurement functions.

Runs on the board (or under emulation) with only numpy, TVM and optionally ONNX Runtime: nothing here
imports torch. The server is started in this process (TVM's stock ``rpc_server`` re-executes
``sys.executable``, which fails under qemu-user; STACK.md); every RPC session runs in a forked child
that inherits the functions registered here:

- ``edgeprune.device_info() -> str``: JSON with the device name, architecture, runtimes and whether it is emulated.
- ``edgeprune.measure(kind, candidate, baseline, plan) -> str``: times an uploaded model interleaved with the
  uploaded baseline in rounds (``kind`` "onnx": ONNX Runtime, timed per call; "tvm": a compiled library in a
  Relax VM, timed by TVM's ``time_evaluator``); returns JSON with both pooled per-run times in ms. Models
  stay open for the RPC session.
- ``edgeprune.run(kind, model, input, shape, device) -> bytes``: outputs for one float32 input, for numerical
  checks (``device`` "cpu" or "cuda" for a TVM library).

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

_OPEN: dict[tuple[str, str, int], object] = {}  # (kind, path, threads) -> runner, for this RPC session


def _runtimes() -> dict:
    out = {}
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    import tvm

    out["tvm"] = tvm.__version__
    return out


def _workpath(name: str) -> str:
    import tvm_ffi

    return str(tvm_ffi.get_global_func("tvm.rpc.server.workpath")(name))


def _tvm_device(device: str):
    import tvm

    return tvm.cuda() if device == "cuda" else tvm.cpu()


def _providers(wanted) -> list[str]:
    """The execution providers asked for that this ONNX Runtime build has, in the order asked."""
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    return [p for p in (wanted or []) if p in have] or ["CPUExecutionProvider"]


def _open(kind: str, name: str, shape: tuple[int, ...], threads: int, device: str = "cpu", providers=None):
    """A function that runs one inference of the uploaded model ``name`` on a fixed random input."""
    import numpy as np

    key = (kind, name, threads, device, tuple(providers or ()))
    if key in _OPEN:
        return _OPEN[key]
    path = _workpath(name)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if kind == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(path, so, providers=_providers(providers))
        feed = {sess.get_inputs()[0].name: x}
        run_ = sess.run

        def run() -> None:
            run_(None, feed)
    elif kind == "tvm":
        import tvm
        import tvm_ffi

        tvm_ffi.get_global_func("runtime.config_threadpool")(0, threads)
        dev = _tvm_device(device)
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(path), dev)
        xt = tvm.runtime.tensor(x, dev)

        def run(repeat: int | None = None):
            # TVM's own timer, one inference per sample: per-run times in ms for ``repeat`` runs.
            te = vm.time_evaluator("main", dev, number=1, repeat=repeat or 1)
            res = te(xt).results
            return None if repeat is None else [r * 1e3 for r in res]
    else:
        raise ValueError(f"unknown model kind {kind!r}; expected 'onnx' or 'tvm'")
    _OPEN[key] = run
    return run


def _interleave_te(runners, rounds: int, per_round: int, warmup: int):
    """As ``meter._interleave`` for TVM modules timed by ``time_evaluator``: models take turns each round
    (order alternating), each round ``per_round`` single-inference samples. Returns per-run ms arrays."""
    import numpy as np

    for run in runners:
        run(warmup) if warmup else None
    times = [[] for _ in runners]
    for r in range(rounds):
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            times[i].extend(runners[i](per_round))
    return [np.asarray(t) for t in times]


def register(name: str, *, emulated: bool = False) -> None:
    """Register edgeprune's functions as TVM global functions in this process (before sessions fork)."""
    import tvm_ffi

    from edgeprune.latency.meter import _interleave

    info = {"name": name, "arch": platform.machine(), "emulated": emulated, "host": socket.gethostname(),
            "cpus": os.cpu_count()}

    @tvm_ffi.register_global_func("edgeprune.device_info", override=True)
    def device_info() -> str:
        return json.dumps(dict(info, runtimes=_runtimes(), pid=os.getpid()))

    @tvm_ffi.register_global_func("edgeprune.measure", override=True)
    def measure(kind: str, candidate: str, baseline: str, plan: str) -> str:
        p = json.loads(plan)
        shape = tuple(p["shape"])
        opts = (p["threads"], p.get("device", "cpu"), p.get("providers"))
        runners = [_open(kind, candidate, shape, *opts), _open(kind, baseline, shape, *opts)]
        t0 = time.perf_counter()
        if kind == "tvm":
            cand, base = _interleave_te(runners, p["rounds"], p["runs_per_round"], p["warmup"])
        else:
            cand, base = _interleave(runners, p["rounds"], p["runs_per_round"], p["warmup"])
        return json.dumps({"candidate_ms": cand.tolist(), "baseline_ms": base.tolist(), "device": info,
                           "version": _runtimes().get("onnxruntime" if kind == "onnx" else "tvm", "?"),
                           "seconds": time.perf_counter() - t0})

    @tvm_ffi.register_global_func("edgeprune.run", override=True)
    def run(kind: str, model: str, x: bytes, shape: str, device: str) -> bytes:
        import numpy as np

        arr = np.frombuffer(bytes(x), dtype=np.float32).reshape(json.loads(shape))
        path = _workpath(model)
        if kind == "onnx":
            import onnxruntime as ort

            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            out = sess.run(None, {sess.get_inputs()[0].name: arr})[0]
        else:
            import tvm

            dev = _tvm_device(device)
            vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(path), dev)
            out = vm["main"](tvm.runtime.tensor(arr, dev))
            out = (out[0] if not hasattr(out, "numpy") else out).numpy()
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
