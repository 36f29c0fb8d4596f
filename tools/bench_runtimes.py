"""ONNX Runtime vs TVM unscheduled vs TVM default schedule vs TVM tuned (MetaSchedule) on this machine,
baseline and pruned models.

    python tools/bench_runtimes.py --models resnet20,resnet56,mobilenet_v2 --trials 0 --repeats 3

For each model (zoo architecture at 3×32×32, or ``resnet18-224``: ResNet-18's topology at 3×224×224; seeded
weights: latency does not depend on the values) and variant
(``baseline``; ``pruned``: every group kept at ``--keep`` of its width, aligned to 8), the runtimes run
**interleaved in the same rounds** (order alternating), ``--repeats`` times: ONNX Runtime; TVM with its own
CPU lowering (``unscheduled``: what TVM 0.27's default pipeline gives); TVM with edgeprune's default
schedule (``compile.schedule``, no tuning: what ``edgeprune compile`` builds); and, with ``--trials N`` > 0,
TVM tuned with N MetaSchedule trials (records where tuned, the default schedule elsewhere). The table gives
the median over repeats of each runtime's median and p10 (ms), the median spread ((p90 − p10) / median), the
ratio to ONNX Runtime (medians), and the build or tuning time (a fresh database per run unless ``--db``).
1 thread for every runtime. Every TVM library is checked against ONNX Runtime first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch


def resnet18_224() -> torch.nn.Module:
    """ResNet-18's topology (torchvision's layout: 7×7/2 stem, max-pool, 4 stages of 2 basic blocks,
    1000 classes) for 3×224×224, built here: torchvision is not in the base environment."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.down = (nn.Sequential() if stride == 1 and cin == cout else
                         nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

        def forward(self, x):
            return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.down(x))

    layers, cin = [], 64
    for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        layers.append(Block(cin, cout, stride))
        cin = cout
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 1000))


def variants(arch: str, keep: float):
    from edgeprune.model.arch import build
    from edgeprune.model.prune import analyse, prune

    torch.manual_seed(0)
    if arch == "resnet18-224":
        model, shape = resnet18_224().eval(), (3, 224, 224)
    else:
        model, shape = build(arch, {"num_classes": 10}).eval(), (3, 32, 32)
    a = analyse(model, shape, round_to=8)
    widths = tuple(min((c for c in g.choices if c >= keep * g.full), default=g.full) for g in a.groups)
    pruned, _ = prune(model, shape, a, widths)
    return shape, {"baseline": model, "pruned": pruned.eval()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenet_v2")
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--trials", type=int, default=0, help="MetaSchedule trials per model variant (0: no tuning)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs-per-round", type=int, default=10)
    ap.add_argument("--db", default=None, help="tuning database folder to reuse (default: a fresh one per variant)")
    a = ap.parse_args()
    torch.set_num_threads(1)

    from edgeprune.compile.tune import tune
    from edgeprune.compile.tvm import build, export_library, version
    from edgeprune.deploy.verify import verify_against_ort
    from edgeprune.export.onnx import export_verified
    from edgeprune.latency import get_backend
    from edgeprune.latency.timing import interleave as _interleave
    from edgeprune.model.evaluate import count_macs_params
    from edgeprune.targets import load_target

    settings = load_target("host").tvm
    ort, tvmb = get_backend("onnxruntime"), get_backend("tvm")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.models.split(","):
            shape, models = variants(arch, a.keep)
            for variant, model in models.items():
                x = torch.randn(4, *shape)
                onnx_bytes, _, _ = export_verified(model, shape, x)
                proto = onnx.load_from_string(onnx_bytes)
                example = x[:1].numpy()
                runners, secs = {"onnxruntime": ort.open(onnx_bytes, example, threads=1)}, {}
                libs = {}
                for name, flag in (("tvm unscheduled", False), ("tvm default", True)):
                    ex, secs[name] = build(proto, shape, settings, schedule=flag)
                    libs[name] = export_library(ex, Path(tmp) / f"{arch}-{variant}-{flag}.so", settings)
                res = None
                if a.trials > 0:
                    db = a.db or str(Path(tmp) / f"db-{arch}-{variant}")
                    tex, res = tune(proto, shape, settings, a.trials, db_dir=db)
                    name = f"tvm tuned ({a.trials})"
                    libs[name], secs[name] = export_library(tex, Path(tmp) / f"{arch}-{variant}-t.so", settings), res.seconds
                for name, lib in libs.items():
                    v = verify_against_ort(lib, onnx_bytes, x.numpy())
                    assert v.ok, f"{lib}: TVM differs from ONNX Runtime ({v.max_abs_diff:.2e})"
                    runners[name] = tvmb.open(lib, example, threads=1)
                stats = {k: [] for k in runners}
                for _ in range(a.repeats):
                    times = _interleave(list(runners.values()), a.rounds, a.runs_per_round, warmup=5)
                    for k, t in zip(runners, times):
                        p10, med, p90 = np.percentile(t, [10, 50, 90])
                        stats[k].append((med, p10, (p90 - p10) / med))
                macs, _ = count_macs_params(model, shape)
                ort_med = statistics.median(s[0] for s in stats["onnxruntime"])
                for k, s in stats.items():
                    med = statistics.median(v[0] for v in s)
                    rows.append((arch, variant, macs / 1e6, k, med, statistics.median(v[1] for v in s),
                                 statistics.median(v[2] for v in s), med / ort_med, secs.get(k)))
                print(f"done {arch} {variant}" + (f": tuning {res.seconds:.0f} s, {res.tasks} tasks" if res else ""),
                      flush=True)
    print(f"\nhost CPU, 1 thread, batch 1; TVM {version()}; {a.repeats} repeats x {a.rounds} rounds x "
          f"{a.runs_per_round} runs, runtimes interleaved; pruned = keep {a.keep} per group (multiples of 8)")
    print("| model | variant | MMACs | runtime | median ms | p10 ms | spread | × ONNX Runtime | build/tune s |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for arch, variant, mmacs, k, med, p10, spread, ratio, secs in rows:
        print(f"| {arch} | {variant} | {mmacs:.1f} | {k} | {med:.3f} | {p10:.3f} | {spread:.2f} | {ratio:.2f} | "
              f"{'' if secs is None else f'{secs:.1f}'} |")


if __name__ == "__main__":
    main()
