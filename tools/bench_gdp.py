"""GDP with latency costs vs GDP with MAC costs vs the ``bo`` search + fine-tuning, at the same latency target
and the same training budget (epochs).

    python tools/bench_gdp.py --models resnet20:0.5x --seeds 0,1 --epochs 4 --results docs/bench_data/gdp.jsonl

Each row is one ``edgeprune compile`` (library call, host, ONNX Runtime, 1 thread) of a bundled checkpoint
(``examples/<model>.pt``, trained on ``shapes``): ``gdp-latency`` (``--method gdp --gdp-cost latency``),
``gdp-macs`` (``--gdp-cost macs``, the paper's FLOPs weighting) — both ``epochs - 1`` epochs of gated
training then 1 of fine-tuning — and ``bo`` (``--budget`` evaluations, then ``epochs`` of fine-tuning).
Columns: the final model's measured p10 ratio to the baseline (same rounds), its median speed-up, its top-1
on the 2000-image validation split against the baseline's, and the run's wall time. ``--accept-closest``,
so a run whose final model misses the target is still measured and shown (marked).
Resumable: rows already in --results are printed, not run again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def run(model: str, target: str, method: str, seed: int, a, cal: Path) -> dict:
    from bench_common import ORT_PROFILE
    from edgeprune.config import CompileConfig
    from edgeprune.pipeline import compile_model
    from edgeprune.progress import Reporter

    with tempfile.TemporaryDirectory(prefix="bench-gdp-") as out:
        prof = Path(out) / "host-ort.toml"
        prof.write_text(ORT_PROFILE)
        kw = dict(model=str(ROOT / "examples" / f"{model}.pt"), target=str(prof), latency_target=target, out=out,
                  seed=seed, accept_closest=True, calibration_dir=str(cal))
        if method == "bo":
            kw.update(agent="bo", budget=a.budget, finetune_epochs=a.epochs)
        else:
            kw.update(method="gdp", gdp_cost=method.split("-")[1], gdp_epochs=a.epochs - 1, finetune_epochs=1)
        t = time.time()
        r = compile_model(CompileConfig(**kw), reporter=Reporter()).report
        wall = time.time() - t
    f = r["final"]
    g = (r["search"] or {}).get("gdp") or {}
    return {"model": model, "target": target, "method": method, "seed": seed, "epochs": a.epochs,
            "budget": a.budget if method == "bo" else None, "base_acc": r["baseline"]["accuracy"],
            "acc": f["accuracy"], "ratio_p10": f["latency"]["ratio_to_baseline"], "speedup": f["speedup_median"],
            "meets": f["meets_latency_target"], "widths": f["widths"], "predicted": g.get("predicted_ratio"),
            "gated_acc": g.get("gated_accuracy"), "polarised": g.get("polarised"), "wall_s": round(wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet20:0.5x")
    p.add_argument("--methods", default="gdp-latency,gdp-macs,bo")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--budget", type=int, default=40)
    p.add_argument("--results", type=Path, required=True)
    a = p.parse_args()
    done = [json.loads(x) for x in a.results.read_text().splitlines() if x.strip()] if a.results.is_file() else []
    a.results.parent.mkdir(parents=True, exist_ok=True)
    print("| model | target | method | seed | measured ratio (p10) | speed-up (median) | accuracy (base) | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-gdp-cal-") as cal:
        for spec in a.models.split(","):
            model, target = spec.split(":")
            for seed in map(int, a.seeds.split(",")):
                for method in a.methods.split(","):
                    row = next((d for d in done if (d["model"], d["target"], d["method"], d["seed"], d["epochs"]) ==
                                (model, target, method, seed, a.epochs)), None)
                    if row is None:
                        row = run(model, target, method, seed, a, Path(cal))
                        with a.results.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                    miss = "" if row["meets"] else " (misses)"
                    print(f"| {model} | {target} | {method} | {seed} | {row['ratio_p10']:.3f}{miss} | "
                          f"{row['speedup']:.2f}x | {row['acc']:.4f} ({row['base_acc']:.4f}) | {row['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
