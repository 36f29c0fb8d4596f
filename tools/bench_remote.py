"""Overhead of measuring a candidate on a device over TVM RPC vs measuring it here.

    python tools/bench_remote.py --model resnet20 --candidates 10

Starts a TVM RPC tracker and one device server on 127.0.0.1 (the real RPC path: sockets, upload, a forked
session process on the device side), then for each of ``--candidates`` distinct pruned models (random
per-group widths) measures it locally (``LocalMeter``: open an ONNX Runtime session, interleaved rounds
with the baseline) and remotely (upload + interleaved rounds on the device + results back), alternating
local and remote so both see the same load. Same timing plan on both sides (the host profile's).
Prints medians over candidates (ms): session opening (once per device and run), upload, the timing
itself on the device, and the overhead = remote wall time − device timing, next to the local wall time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--candidates", type=int, default=10)
    ap.add_argument("--port", type=int, default=9590)
    a = ap.parse_args()
    torch.set_num_threads(1)

    from edgeprune.export.onnx import export_verified
    from edgeprune.latency import Artifact, LocalMeter, get_backend
    from edgeprune.model.arch import build
    from edgeprune.model.prune import analyse, prune
    from edgeprune.errors import DeviceError
    from edgeprune.latency.rpc import DeviceSession, devices_for, tracker_summary
    from edgeprune.targets import load_target

    settings = load_target("host").measurement
    torch.manual_seed(0)
    model = build(a.model, {"num_classes": 10}).eval()
    shape, x = (3, 32, 32), torch.randn(2, 3, 32, 32)
    base, _, _ = export_verified(model, shape, x)
    an = analyse(model, shape, round_to=8)
    rng = random.Random(0)
    cands = []
    for _ in range(a.candidates):
        widths = tuple(rng.choice(g.choices) for g in an.groups)
        cands.append(export_verified(prune(model, shape, an, widths)[0], shape, x)[0])

    tracker = f"127.0.0.1:{a.port}"
    procs = [subprocess.Popen([sys.executable, "-m", "edgeprune.cli", "device", "tracker", "--port", str(a.port)],
                              cwd=ROOT, stderr=subprocess.DEVNULL, start_new_session=True)]

    def wait_for(ok, what: str, timeout_s: float = 120.0) -> None:
        # The tracker and the server import TVM first (seconds, more under load): poll, with a deadline.
        end = time.time() + timeout_s
        while time.time() < end:
            try:
                if ok():
                    return
            except DeviceError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{what} did not come up in {timeout_s:.0f} s")

    try:
        wait_for(lambda: tracker_summary(tracker) is not None, "the tracker")
        procs.append(subprocess.Popen([sys.executable, "-m", "edgeprune.remote.serve", "--tracker", tracker, "--key",
                                       "bench", "--port", str(a.port + 10)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                      start_new_session=True))
        wait_for(lambda: devices_for(tracker, "bench") >= 1, "the device server")
        t = time.perf_counter()
        sess = DeviceSession(tracker, "bench", session_timeout_s=3600)
        session_ms = (time.perf_counter() - t) * 1e3
        base_name = sess.upload(base, ".onnx")
        meter = LocalMeter(get_backend("onnxruntime"), Artifact(base), x[:1].numpy(), settings, "host")
        plan = {"shape": [1, *shape], "threads": settings.threads, "rounds": settings.rounds,
                "runs_per_round": settings.runs_per_round, "warmup": settings.warmup}
        rows = {"local wall": [], "remote wall": [], "upload": [], "device timing": [], "overhead": []}
        for c in cands:
            t = time.perf_counter()
            meter.measure(Artifact(c))
            rows["local wall"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            name = sess.upload(c, ".onnx")
            up = time.perf_counter() - t
            r = sess.measure("onnxruntime", name, base_name, plan)
            wall = time.perf_counter() - t
            rows["remote wall"].append(wall * 1e3)
            rows["upload"].append(up * 1e3)
            rows["device timing"].append(r["seconds"] * 1e3)
            rows["overhead"].append((wall - r["seconds"]) * 1e3)
    finally:
        import os
        import signal

        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
    mb = statistics.median(len(c) for c in cands) / 1e6
    print(f"\n{a.model}: {a.candidates} distinct pruned candidates (median ONNX {mb:.2f} MB), plan {settings.rounds} rounds x "
          f"{settings.runs_per_round} runs + {settings.warmup} warm-up per model, interleaved with the baseline; "
          f"device server on 127.0.0.1 via tracker")
    print(f"{'per candidate':28s} {'median ms':>10s} {'min ms':>8s} {'max ms':>8s}")
    for k, v in rows.items():
        print(f"{k:28s} {statistics.median(v):10.1f} {min(v):8.1f} {max(v):8.1f}")
    print(f"{'session open (once)':28s} {session_ms:10.1f}")
    ratio = statistics.median(rows["remote wall"]) / statistics.median(rows["local wall"])
    print(f"remote / local wall time per candidate: {ratio:.2f}x")
    print(json.dumps({k: round(statistics.median(v), 2) for k, v in rows.items()}))


if __name__ == "__main__":
    main()
