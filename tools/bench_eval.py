"""Cheaper candidate evaluation, side by side in one run: the previous way (BN on 500 calibration images,
accuracy in eager torch on all 1000 search images) vs the search's way now (BN on --bn images, accuracy in
ONNX Runtime on the exported model, stopped early when clearly below the incumbent), on the same candidates.

    python tools/bench_eval.py --model examples/resnet20.pt --candidates 40

Candidates are the ``random`` agent's (seeded), as a search's first proposals are. Per candidate, both
evaluations run back to back, in alternating order. The incumbent for early stopping is the best feasible
(measured latency ≤ --target of the baseline) accuracy among the earlier candidates, as in the search loop.
Printed: median seconds per stage for both and the ratio; then ranking: Spearman's rank correlation of each
variant's accuracies with the previous way's over all candidates (BN on 50/100/200/500 images, ONNX
Runtime, every image), and for the early-stopped accuracies; how many candidates stopped early and at how
many images; wrong stops (a stopped candidate whose full accuracy, same BN, reached the incumbent's);
and whether the best feasible candidate is the same.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bench_common import evaluation_setup
from edgeprune.config import CompileConfig
from edgeprune.export.onnx import export_verified
from edgeprune.search.accuracy import EarlyStop
from edgeprune.search.agents import make_agent
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.space import SearchSpace


def spearman(a, b) -> float:
    """Spearman's rho with average ranks for ties."""
    def ranks(v):
        v = np.asarray(v, dtype=float)
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):  # average ranks of ties
            m = v == val
            r[m] = r[m].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="examples/resnet20.pt")
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--target", default="host")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency-target", type=float, default=0.5, help="fraction of the baseline (feasibility)")
    ap.add_argument("--bn", type=int, default=CompileConfig.search_bn_samples, help="BN images, the new way")
    ap.add_argument("--bn-variants", default="50,100,200,500", help="BN image counts ranked (ORT, all images)")
    a = ap.parse_args()
    st = evaluation_setup(a.model, a.data, a.target)
    defaults, profile, loaded, shape, calib, val = st.defaults, st.profile, st.loaded, st.shape, st.calib, st.val
    meter, ref, analysis = st.meter, st.ref, st.analysis
    space = SearchSpace(analysis.groups)
    common = dict(model=loaded.model, input_shape=shape, analysis=analysis, val=val, calib=calib, meter=meter,
                  latency_ratio=a.latency_target, baseline_ms=ref.p10_ms, threads=defaults.torch_threads)
    old = CandidateEvaluator(**common, bn_samples=None, early=EarlyStop(enabled=False), accuracy_on="torch")
    new = CandidateEvaluator(**common, bn_samples=a.bn, early=EarlyStop(), accuracy_on="onnxruntime")
    agent = make_agent("random", space, budget=a.candidates, seed=a.seed, latency_ratio=a.latency_target)
    cands = []
    for told in range(4 * a.candidates):  # its draws are keyed by how many results it was told
        agent.told = told
        c = agent.ask()
        if all(c.key != d.key for d in cands):
            cands.append(c)
        if len(cands) == a.candidates:
            break

    rows = {"old": {}, "new": {}}
    results = {"old": [], "new": []}
    bar = None
    bars = []
    for i, c in enumerate(cands):
        bars.append(bar)
        order = ("old", "new") if i % 2 == 0 else ("new", "old")
        for which in order:
            ev = old if which == "old" else new
            t = time.perf_counter()
            r = ev.evaluate_many([c], bar=bar if which == "new" else None)[0]
            total = time.perf_counter() - t
            for stage, s in r.seconds.items():
                rows[which].setdefault(stage, []).append(s)
            rows[which].setdefault("total", []).append(total)
            results[which].append(r)
        r_new = results["new"][-1]
        if r_new.feasible and (bar is None or r_new.accuracy > bar):
            bar = r_new.accuracy
        print(f"candidate {i:>2}: old acc {results['old'][-1].accuracy:.3f}, new acc {r_new.accuracy:.3f} on "
              f"{r_new.accuracy_images} images, ratio {r_new.measurement.ratio_to_baseline:.3f}, "
              f"old {rows['old']['total'][-1]:.3f} s, new {rows['new']['total'][-1]:.3f} s", flush=True)

    # Ranking variants: BN image counts, ONNX Runtime, every image (no early stop), same candidates.
    variants = {}
    for n in (int(v) for v in a.bn_variants.split(",")):
        ev = CandidateEvaluator(**common, bn_samples=n, early=EarlyStop(enabled=False), accuracy_on="onnxruntime")
        accs = []
        for c in cands:
            pruned, _ = ev.build(c)
            onnx_bytes, _, _ = export_verified(pruned, shape, calib[:4])
            accs.append(ev.accuracy_of(pruned, onnx_bytes).accuracy)
        variants[n] = accs

    n = len(cands)
    print(f"\nmodel {a.model} ({loaded.arch}), data {a.data}: {n} candidates (random agent, seed {a.seed}), search "
          f"val {len(val[1])} images, torch threads {torch.get_num_threads()}, ORT accuracy threads "
          f"{defaults.torch_threads}, latency {profile.measurement.rounds}x{profile.measurement.runs_per_round} "
          f"runs interleaved with the baseline; baseline p10 {ref.p10_ms:.3f} ms")
    print(f"\n| stage | previous (BN 500, torch, 1000 images) median s | now (BN {a.bn}, ORT, early stop) median s | now / previous |")
    print("| --- | ---: | ---: | ---: |")
    for stage in rows["old"]:
        o, w = statistics.median(rows["old"][stage]), statistics.median(rows["new"].get(stage, [0.0]))
        print(f"| {stage} | {o:.3f} | {w:.3f} | {w / o:.2f} |")
    mo, mn = statistics.mean(rows["old"]["total"]), statistics.mean(rows["new"]["total"])
    print(f"| mean total | {mo:.3f} | {mn:.3f} | {mn / mo:.2f} |")

    old_acc = [r.accuracy for r in results["old"]]
    # The top half by the previous way's accuracy: where the search's choice is made, and ranks are closer.
    top = sorted(range(n), key=lambda i: -old_acc[i])[: max(2, n // 2)]

    def ranked(label, accs):
        rho_top = spearman([old_acc[i] for i in top], [accs[i] for i in top])
        print(f"| {label} | {spearman(old_acc, accs):.3f} | {rho_top:.3f} | "
              f"{100 * max(abs(x - y) for x, y in zip(old_acc, accs)):.1f} |")
    print(f"\n| accuracies ranked against the previous way's | Spearman rho, all {n} | top {len(top)} | "
          "max abs diff (points) |")
    print("| --- | ---: | ---: | ---: |")
    for k, accs in variants.items():
        ranked(f"BN {k}, ORT, all images", accs)
    ranked(f"now: BN {a.bn}, ORT, early stop (as recorded)", [r.accuracy for r in results["new"]])
    full = variants.get(a.bn)
    stopped = [(i, r) for i, r in enumerate(results["new"]) if r.accuracy_images < len(val[1])]
    if full is not None:
        wrong = [i for i, _ in stopped if bars[i] is not None and full[i] >= bars[i]]
        print(f"\nstopped early: {len(stopped)}/{n} (images used: median "
              f"{statistics.median([r.accuracy_images for _, r in stopped]) if stopped else '-'}), wrong stops "
              f"(full accuracy, BN {a.bn}, reached the incumbent): {len(wrong)} {wrong}")

    def best(res):
        feas = [(r.accuracy, i) for i, r in enumerate(res) if r.feasible]
        return max(feas)[1] if feas else None
    print(f"best feasible candidate: previous way #{best(results['old'])}, now #{best(results['new'])}")


if __name__ == "__main__":
    main()
