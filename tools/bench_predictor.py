"""The latency predictor: its accuracy on held-back candidates, and the measurements the screen saves.

    python tools/bench_predictor.py accuracy --models resnet20,resnet56,mobilenet_v2 \
        --results docs/bench_data/predictor.jsonl
    python tools/bench_predictor.py screen --models resnet20:0.5x --agents bo,random --seeds 0,1,2 --budget 20 \
        --margin 0.1 --results docs/bench_data/screen.jsonl

``accuracy``: ``edgeprune calibrate`` (library call) of each bundled checkpoint on ``host`` (ONNX Runtime,
1 thread) into a fresh calibration folder: kernels measured, the fit on 12 random candidates, and the
predicted ratio to the baseline vs the measured one (median of 3 interleaved measurements) on 30 held-back
random candidates: the fraction within ±10%, the median and largest error, for the kernel sum alone and
fitted (the form the calibration chose on its fit set; ``--by-form``: each form's fit too); also how much
the measurement itself moved (the spread of the 3 repeats).

``screen``: the same search (``edgeprune compile``, library call, widths, no fine-tuning) with and without
``--latency-screen``; each pair shares agent, seed and budget (measured evaluations). Columns: proposals
screened (each an evaluation not spent), the best feasible search accuracy, and the evaluations the screened
run needed to reach the unscreened run's best.
Both are resumable: rows already in --results are printed, not run again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

def _done(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def accuracy_row(model: str, a) -> dict:
    from edgeprune.config import CompileConfig
    from edgeprune.progress import Reporter
    from edgeprune.stages.calibrate import calibrate

    with tempfile.TemporaryDirectory(prefix="bench-pred-") as tmp:
        cfg = CompileConfig(model=str(ROOT / "examples" / f"{model}.pt"), target="host", out=tmp)
        t = time.time()
        c = calibrate(cfg, root=Path(tmp) / "cal", grid=a.grid, fit_samples=a.fit_samples, holdout=a.holdout,
                      repeats=a.repeats, seed=a.seed, rep=Reporter())
        wall = time.time() - t
        samples = [json.loads(x) for x in next((Path(tmp) / "cal").glob("host/*/models/*.samples.jsonl"))
                   .read_text().splitlines()]
    spread = [(max(s["ratios"]) - min(s["ratios"])) / s["ratio"] for s in samples if s["role"] == "holdout"]
    return {"model": model, "grid": a.grid, "fit_samples": a.fit_samples, "holdout": a.holdout,
            "repeats": a.repeats, "kernels": c.kernels_measured, "layers": c.fit["layers"],
            "a_ms": c.fit["a_ms"], "b": c.fit["b"], "form": c.fit["form"], "loo_error": c.fit["loo_error"],
            "kernel_only": c.kernel_only, "fitted": c.fitted, "by_form": c.by_form,
            "repeat_spread_median": float(np.median(spread)), "repeat_spread_over_10pct": float(np.mean(
                np.array(spread) > 0.10)), "wall_s": round(wall, 1)}


def screen_row(model: str, target: str, agent: str, seed: int, margin: float | None, a, cal: Path) -> dict:
    from bench_common import ORT_PROFILE, best_feasible_curve
    from edgeprune.config import CompileConfig
    from edgeprune.pipeline import compile_model
    from edgeprune.progress import Reporter

    with tempfile.TemporaryDirectory(prefix="bench-screen-") as out:
        prof = Path(out) / "host-ort.toml"
        prof.write_text(ORT_PROFILE)
        cfg = CompileConfig(model=str(ROOT / "examples" / f"{model}.pt"), target=str(prof), latency_target=target,
                            out=out, agent=agent, budget=a.budget, seed=seed, finetune_epochs=0, accept_closest=True,
                            latency_screen=margin, calibration_dir=str(cal))
        t = time.time()
        r = compile_model(cfg, reporter=Reporter()).report
        wall = time.time() - t
    best, curve = best_feasible_curve(r)
    s = r["search"]
    return {"model": model, "target": target, "agent": agent, "seed": seed, "budget": a.budget, "margin": margin,
            "screened": (s.get("screen") or {}).get("screened", 0), "evaluations": s["evaluations"],
            "feasible": sum(bool(c["feasible"]) for c in r["candidates"]),
            "best": best, "curve": curve, "search_s": s["wall_time_s"], "wall_s": round(wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["accuracy", "screen"])
    p.add_argument("--models", default="resnet20,resnet56,mobilenet_v2")
    p.add_argument("--grid", type=int, default=9)
    p.add_argument("--fit-samples", type=int, default=12)
    p.add_argument("--holdout", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agents", default="bo,random")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=20)
    p.add_argument("--margin", type=float, default=0.1)
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--by-form", action="store_true", help="accuracy: also each fit form's (linear, power) columns")
    a = p.parse_args()
    done = _done(a.results)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    if a.what == "accuracy":
        for model in a.models.split(","):
            row = next((d for d in done if d["model"] == model and d["grid"] == a.grid), None)
            if row is None:
                row = accuracy_row(model, a)
                with a.results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
            k, fi = row["kernel_only"], row["fitted"]
            form = (f"{row['a_ms']:.3f} x^{row['b']:.2f}" if row.get("form") == "power"
                    else f"{row['a_ms']:.3f} + {row['b']:.2f} x")
            forms = row.get("by_form", {})
            acc = lambda d: f"{d['within']:.0%} ({d['median_error']:.1%}, {d['max_error']:.1%})" if d else "-"
            print(f"| {model} | {row['layers']} | {row['kernels']} | {form} | {acc(k)} | "
                  + (f"{acc(forms.get('linear'))} | {acc(forms.get('power'))} | " if a.by_form else "")
                  + f"{acc(fi)} | {row['repeat_spread_median']:.1%} / {row['repeat_spread_over_10pct']:.0%} | "
                  f"{row['wall_s']:.0f} |")
        return
    with tempfile.TemporaryDirectory(prefix="bench-screen-cal-") as cal:
        for spec in a.models.split(","):
            model, target = spec.split(":")
            for agent in a.agents.split(","):
                for seed in map(int, a.seeds.split(",")):
                    pair = []
                    for margin in (None, a.margin):
                        row = next((d for d in done if (d["model"], d["target"], d["agent"], d["seed"], d["budget"],
                                                        d["margin"]) == (model, target, agent, seed, a.budget,
                                                                         margin)), None)
                        if row is None:
                            row = screen_row(model, target, agent, seed, margin, a, Path(cal))
                            with a.results.open("a") as f:
                                f.write(json.dumps(row) + "\n")
                        pair.append(row)
                    plain, screened = pair
                    reach = next((i + 1 for i, v in enumerate(screened["curve"]) if v >= plain["best"]), None)
                    print(f"| {model} {target} | {agent} | {seed} | {plain['best']:.3f} ({plain['feasible']}) | "
                          f"{screened['best']:.3f} ({screened['feasible']}) | {screened['screened']} | "
                          f"{reach if reach else '-'} of {a.budget} | {plain['search_s']:.0f} / "
                          f"{screened['search_s']:.0f} |")


if __name__ == "__main__":
    main()
