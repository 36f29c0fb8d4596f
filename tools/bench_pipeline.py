"""Time per stage of one candidate evaluation (prune → BN recalibration → accuracy → export + simplify +
verify → interleaved latency → MAC count), as the search runs it. Prints one table (seconds).

    python tools/bench_pipeline.py --model examples/resnet20.pt --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_common import evaluation_setup
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.space import SearchSpace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="examples/resnet20.pt")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--target", default="host")
    ap.add_argument("--repeats", type=int, default=5, help="evaluations per keep level")
    ap.add_argument("--keep", default="0.5,0.75", help="uniform keep fractions to evaluate")
    a = ap.parse_args()
    st = evaluation_setup(a.model, a.data, a.target)
    profile, loaded, calib, val, ref = st.profile, st.loaded, st.calib, st.val, st.ref
    shape, meter, analysis = st.shape, st.meter, st.analysis
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
