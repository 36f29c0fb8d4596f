"""Analysis and one candidate's pruning, side by side: before (each copy traced again; Torch-Pruning's own flatten
index mapping, pruner lookup and shape inference, a new walk for every refusal check, the probe halving failing
sets) vs now (the graph traced once and copied with the model, ``edgeprune.model.depgraph.copy_with_graph``; with
``depgraph.FAST``: the faster flatten mapping, per-class pruner lookup, inferred channels kept per recomputation of
the index mappings, refusal checks on sub-groups taken from the built group where exact, the probe trying first
the groups that cut the module where a run failed). A set of groups that already worked is not tried again
either way.

    python tools/bench_analysis.py --models resnet56,mobilenet_v2                       # the bundled zoo, 32×32
    .venv-vision/bin/python tools/bench_analysis.py \\
        --models torchvision:swin_t,torchvision:swin_s,torchvision:swin_b,torchvision:maxvit_t,timm:maxvit_tiny_tf_224

Models: a bundled zoo name (32×32, 10 classes) or ``torchvision:NAME`` / ``timm:NAME`` built as
``tools/bench_zoo.py`` builds them (random weights, seed 0, 224×224 unless the model fixes its size; the vision
venv). Per model and repeat the two ways run one after the other, alternating which goes first, each from a cold
graph cache: ``analyse(model, (3, H, W), round_to=8)`` with its probe (seconds), then ``prune`` of one candidate
(every group at ``g.width(0.7)``, seconds). Medians over ``--repeats``. "trace s": one ``dependency_graph`` of the
model; "copy s": one ``copy_with_graph`` (model + graph). "same": the two ways gave the same analysis (groups,
frozen groups and reasons) and the same pruned weights and pruning history.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from edgeprune.model import depgraph, prune as prune_module  # noqa: E402
from edgeprune.model.prune import analyse, prune  # noqa: E402


def build(spec: str):
    """(model in eval mode, C×H×W)."""
    if ":" in spec:
        from tools.bench_zoo import build as zoo_build

        zoo, name = spec.split(":", 1)
        model, h = zoo_build(zoo, name, 224, False)
        return model, (3, h, h)
    from edgeprune.model.zoo import ZOO

    torch.manual_seed(0)
    return ZOO[spec](10).eval(), (3, 32, 32)


def _retrace(model, shape):
    """How ``prune`` copied before: ``copy_model`` and a new trace of the copy."""
    c = prune_module.copy_model(model)
    return c, depgraph.dependency_graph(c, shape)


def run(model, shape, way: str):
    """(analysis seconds, prune seconds, analysis, pruned model, history) for ``way`` in (before, now)."""
    original = prune_module._copy_and_graph
    depgraph._last.clear()  # each way from a cold cache
    if way == "before":
        prune_module._copy_and_graph = _retrace
    depgraph.FAST[0] = way == "now"
    try:
        t = time.perf_counter()
        a = analyse(model, shape, round_to=8)
        t_analyse = time.perf_counter() - t
        widths = tuple(g.width(0.7) for g in a.groups)
        t = time.perf_counter()
        pruned, history = prune(model, shape, a, widths)
        t_prune = time.perf_counter() - t
    finally:
        prune_module._copy_and_graph = original
        depgraph.FAST[0] = True
    return t_analyse, t_prune, a, pruned, history


def same(r1, r2) -> bool:
    if r1[2].to_dict() != r2[2].to_dict() or r1[4] != r2[4]:
        return False
    s1, s2 = r1[3].state_dict(), r2[3].state_dict()
    return s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet56,mobilenet_v2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.models.split(","):
        model, shape = build(spec)
        t = time.perf_counter()
        depgraph.dependency_graph(model, shape)
        t_trace = time.perf_counter() - t
        depgraph._last.clear()
        depgraph.traced(model, shape)
        t = time.perf_counter()
        depgraph.copy_with_graph(model, shape)
        t_copy = time.perf_counter() - t
        times = {"before": ([], []), "now": ([], [])}
        agree = True
        for r in range(args.repeats):
            order = ("before", "now") if r % 2 == 0 else ("now", "before")
            results = {}
            for way in order:
                results[way] = run(model, shape, way)
                times[way][0].append(results[way][0])
                times[way][1].append(results[way][1])
                print(f"{spec} repeat {r} {way}: analysis {results[way][0]:.2f} s, prune {results[way][1]:.2f} s",
                      file=sys.stderr, flush=True)
            agree = agree and same(results["before"], results["now"])
        a = results["now"][2]
        med = {w: (statistics.median(v[0]), statistics.median(v[1])) for w, v in times.items()}
        rows.append((spec, "×".join(map(str, shape[1:])), len(a.groups), len(a.frozen), t_trace, t_copy,
                     med["before"][0], med["now"][0], med["now"][0] / med["before"][0],
                     med["before"][1], med["now"][1], med["now"][1] / med["before"][1], agree))
        del model
        depgraph._last.clear()
    print("| model | input | groups | frozen | trace s | copy s | analysis s before | analysis s now | now/before "
          "| prune s before | prune s now | now/before | same |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.2f} | {r[5]:.2f} | {r[6]:.1f} | {r[7]:.1f} | {r[8]:.2f} "
              f"| {r[9]:.2f} | {r[10]:.2f} | {r[11]:.2f} | {'yes' if r[12] else 'NO'} |")
    return 0 if all(r[12] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
