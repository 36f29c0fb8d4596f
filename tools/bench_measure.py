"""How much one candidate's measured ratio to the baseline moves from measurement to measurement on this
machine, with the meter's drift check (``MeasureSettings.max_drift``: wait out slow spells) on and off.

    python tools/bench_measure.py --repeats 60 --results docs/bench_data/measure.jsonl

Models: the seeded ResNet-20 (random weights: latency does not depend on them), its narrowest pruning
(all groups at their smallest width: the candidate a slow spell hurts most) and a middle one (every group at
its middle width). Two meters share the process and the baseline's ONNX, one with the default settings
and one with the drift check off (``max_drift`` 1e9); each repeat measures every candidate with both, in
alternating order, with the search plan (8 rounds) and with the final plan (40 rounds). Columns: the ratio's
5th percentile, median and 95th percentile over the repeats, its spread ((p95 − p5) / median), how many
measurements fell above the median by more than 10% (what fails a final check near the target), and the
mean seconds per measurement (the check's cost).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _models():
    import torch

    from edgeprune.export.onnx import export_verified
    from edgeprune.model.prune import analyse, prune
    from edgeprune.model.zoo import resnet20

    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = resnet20().eval()
    x = torch.randn(4, *shape)
    a = analyse(model, shape)
    out = {"baseline": export_verified(model, shape, x)[0]}
    for name, pick in (("smallest", lambda c: c[0]), ("middle", lambda c: c[len(c) // 2])):
        pruned, _ = prune(model, shape, a, tuple(pick(g.choices) for g in a.groups))
        out[name] = export_verified(pruned, shape, x)[0]
    return out, x[:1].numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=60)
    ap.add_argument("--results", type=Path, default=None, help="append the rows as JSON lines")
    args = ap.parse_args()

    from edgeprune.latency import Artifact, LocalMeter, MeasureSettings, get_backend

    models, x = _models()
    on = MeasureSettings()
    meters = {"drift check on": LocalMeter(get_backend("onnxruntime"), Artifact(models["baseline"]), x, on, "host"),
              "drift check off": LocalMeter(get_backend("onnxruntime"), Artifact(models["baseline"]), x,
                                            MeasureSettings(max_drift=1e9), "host")}
    for m in meters.values():
        m.baseline()
    ratios: dict[tuple, list[float]] = {}
    secs: dict[tuple, list[float]] = {}
    plans = {"search (8 rounds)": on.rounds, "final (40 rounds)": on.final_rounds}
    for r in range(args.repeats):
        order = list(meters.items()) if r % 2 == 0 else list(reversed(meters.items()))
        for cand in ("smallest", "middle"):
            for plan, rounds in plans.items():
                for name, meter in order:
                    t0 = time.perf_counter()
                    c, _ = meter.measure(Artifact(models[cand]), rounds=rounds)
                    key = (cand, plan, name)
                    ratios.setdefault(key, []).append(c.ratio_to_baseline)
                    secs.setdefault(key, []).append(time.perf_counter() - t0)
    print(f"{'candidate':9s} {'plan':18s} {'meter':16s} {'p5':>6s} {'median':>6s} {'p95':>6s} {'spread':>6s} "
          f"{'>+10%':>5s} {'s/meas':>6s}")
    rows = []
    for key, v in ratios.items():
        v = np.asarray(v)
        p5, med, p95 = np.percentile(v, [5, 50, 95])
        row = {"candidate": key[0], "plan": key[1], "meter": key[2], "p5": p5, "median": med, "p95": p95,
               "spread": (p95 - p5) / med, "above_10pct": int((v > 1.1 * med).sum()), "n": len(v),
               "seconds": float(np.mean(secs[key]))}
        rows.append(row)
        print(f"{key[0]:9s} {key[1]:18s} {key[2]:16s} {p5:6.3f} {med:6.3f} {p95:6.3f} {row['spread']:6.2f} "
              f"{row['above_10pct']:5d} {row['seconds']:6.2f}")
    refs = {name: m.reference.ms for name, m in meters.items()}
    print("quiet reference of the baseline (ms):", ", ".join(f"{k} {v:.3f}" for k, v in refs.items()))
    if args.results:
        with args.results.open("a") as f:
            for row in rows:
                f.write(json.dumps(dict(row, repeats=args.repeats, date=time.strftime("%Y-%m-%d %H:%M"))) + "\n")


if __name__ == "__main__":
    main()
