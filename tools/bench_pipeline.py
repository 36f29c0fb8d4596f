"""Time per stage of one candidate evaluation (prune → BN recalibration → accuracy → export + simplify +
verify → interleaved latency → MAC count), as the search runs it. Prints one table (seconds).

    python tools/bench_pipeline.py --model examples/resnet20.pt --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from edgeprune.config import CompileConfig
from edgeprune.data import load_data
from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, LocalMeter, get_backend
from edgeprune.model.load import load_model
from edgeprune.model.prune import analyse
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.space import SearchSpace
from edgeprune.targets import load_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="examples/resnet20.pt")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--target", default="host")
    ap.add_argument("--repeats", type=int, default=5, help="evaluations per keep level")
    ap.add_argument("--keep", default="0.5,0.75", help="uniform keep fractions to evaluate")
    a = ap.parse_args()
    defaults = CompileConfig(model=a.model)
    torch.set_num_threads(defaults.torch_threads)
    profile = load_target(a.target)
    loaded = load_model(a.model)
    data = load_data(a.data)
    shape = loaded.input_shape
    calib = data.calib[0][: defaults.calib_samples]
    val = (data.val[0][: defaults.search_val_samples], data.val[1][: defaults.search_val_samples])
    base, _, _ = export_verified(loaded.model, shape, calib[:16])
    runtime = "onnxruntime" if profile.backend == "auto" else profile.backend
    meter = LocalMeter(get_backend(runtime, profile), Artifact(base), calib[:1].numpy(), profile.measurement, profile.where())
    ref = meter.baseline()
    analysis = analyse(loaded.model, shape, round_to=profile.round_to)
    ev = CandidateEvaluator(loaded.model, shape, analysis, val, calib, meter, 0.5, ref.p10_ms)
    space = SearchSpace(analysis.groups)
    rows: dict[str, list[float]] = {}
    for k in (float(v) for v in a.keep.split(",")):
        for _ in range(a.repeats):
            t = time.perf_counter()
            res = ev.evaluate(space.candidate([k] * space.dim))
            total = time.perf_counter() - t
            for stage, s in res.seconds.items():
                rows.setdefault(stage, []).append(s)
            rows.setdefault("total", []).append(total)
    n = len(rows["total"])
    print(f"model {a.model} ({loaded.arch}), data {a.data}: {n} evaluations (keep {a.keep}, {a.repeats} each), "
          f"search val {len(val[1])} images, BN calib {len(calib)} images, torch threads {torch.get_num_threads()}, "
          f"latency {profile.measurement.rounds}x{profile.measurement.runs_per_round} runs interleaved with the baseline")
    print(f"{'stage':<24}{'median s':>10}{'min s':>10}{'max s':>10}{'share':>8}")
    tot = statistics.median(rows["total"])
    for stage, v in rows.items():
        med = statistics.median(v)
        print(f"{stage:<24}{med:>10.3f}{min(v):>10.3f}{max(v):>10.3f}{med / tot:>8.0%}")
    print(f"baseline latency: p10 {ref.p10_ms:.3f} ms, median {ref.median_ms:.3f} ms ({ref.backend} {ref.backend_version}, "
          f"{ref.threads} thread)")


if __name__ == "__main__":
    main()
