"""Faster models, each part's share: widths only vs widths + depth (dropped residual blocks), each with INT8.

    python tools/bench_depth.py --models resnet20:0.5x,resnet56:0.33x,mobilenet_v2:0.5x --budget 40 \
        --finetune-epochs 4 --results docs/bench_data/depth.jsonl

Each row is one full ``edgeprune compile`` (library call, ``bo`` agent, host, ONNX Runtime, 1 thread) of a
bundled checkpoint (``examples/<model>.pt``, trained on ``shapes``) into a temporary folder, with
``--quantize int8`` so the float and the INT8 form of the same final model are both measured against the
baseline in the same run. Columns: blocks dropped of those the graph allows; the final float model's
speed-up (baseline median / final median, same rounds) and its accuracy change on the 2000-image validation
split; the INT8 model's speed-up (p10 ratio, same rounds) and accuracy change; the whole run's wall time.
Resumable: rows already in --results are printed, not run again.
"""

from __future__ import annotations

import os

# Benchmarks compare methods from a cold start: earlier runs' history (edgeprune.history) stays out unless a
# tool turns it on for itself.
os.environ.setdefault("EDGEPRUNE_HISTORY", "off")

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(model: str, target: str, depth: bool, a, in_search: bool = False) -> dict:
    from edgeprune.config import CompileConfig
    from edgeprune.pipeline import compile_model
    from edgeprune.progress import Reporter

    with tempfile.TemporaryDirectory(prefix="bench-depth-") as out:
        cfg = CompileConfig(model=str(ROOT / "examples" / f"{model}.pt"), target="host", latency_target=target,
                            out=out, agent=a.agent, budget=a.budget, seed=a.seed, finetune_epochs=a.finetune_epochs,
                            depth=depth, quantize="int8", quantize_in_search=in_search, accept_closest=True)
        t = time.time()
        r = compile_model(cfg, reporter=Reporter()).report
        wall = time.time() - t
    f, q = r["final"], r.get("quantized") or {}
    base_acc = r["baseline"]["accuracy"]
    int8_ratio = (q["latency"]["ratio_to_baseline"] if q.get("latency") else None)
    return {"model": model, "target": target, "depth": depth, "agent": a.agent, "budget": a.budget,
            "seed": a.seed, "finetune_epochs": a.finetune_epochs, "int8_in_search": in_search,
            "blocks": len(r["search"]["groups"].get("blocks") or []), "dropped": f.get("dropped_blocks") or [],
            "base_acc": base_acc, "acc": f["accuracy"], "speedup": f["speedup_median"],
            "ratio_p10": f["latency"]["ratio_to_baseline"], "base_ms": f["baseline_latency_same_run"]["median_ms"],
            "final_ms": f["latency"]["median_ms"], "int8_ratio_p10": int8_ratio,
            "int8_acc": (q.get("check") or {}).get("int8_accuracy"),
            "int8_deployed": q.get("deployed"), "stopped_early": r["search"]["evaluation"]["stopped_early"],
            "search_s": r["search"]["wall_time_s"], "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20:0.5x,resnet56:0.33x,mobilenet_v2:0.5x")
    ap.add_argument("--agent", default="bo")
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finetune-epochs", type=int, default=4)
    ap.add_argument("--variants", default="widths,depth",
                    help="comma-separated: widths, depth, depth-int8 (depth + --quantize-in-search)")
    ap.add_argument("--results", default=None, help="JSONL file of rows (resumable)")
    a = ap.parse_args()
    rows = []
    done = []
    if a.results and Path(a.results).exists():
        done = [json.loads(line) for line in Path(a.results).read_text().splitlines() if line.strip()]
    for spec in a.models.split(","):
        model, target = spec.split(":")
        for v in a.variants.split(","):
            depth, in_search = v.startswith("depth"), v.endswith("int8")
            key = (model, target, depth, in_search, a.agent, a.budget, a.seed, a.finetune_epochs)
            old = [d for d in done if (d["model"], d["target"], d["depth"], d.get("int8_in_search", False),
                                       d["agent"], d["budget"], d["seed"], d["finetune_epochs"]) == key]
            if old:
                rows.append(old[-1])
                continue
            try:
                row = run(model, target, depth, a, in_search)
            except Exception as e:  # noqa: BLE001 - an unreachable target is a row, not the end of the table
                row = {"model": model, "target": target, "depth": depth, "int8_in_search": in_search,
                       "agent": a.agent, "budget": a.budget,
                       "seed": a.seed, "finetune_epochs": a.finetune_epochs, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(row), flush=True)
            rows.append(row)
            if a.results:
                with open(a.results, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print(f"\n{a.agent}, budget {a.budget}, seed {a.seed}, {a.finetune_epochs} fine-tuning epochs, host, ONNX Runtime "
          "1 thread; speed-ups are baseline median / final median in the same rounds\n")
    print("| model | target | search | blocks dropped | fp32 speed-up | accuracy % (baseline → final) | change "
          "(points) | INT8 speed-up (p10) | INT8 accuracy % | INT8 deployed | stopped early | wall s |")
    print("| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |")
    def search(r):
        return ("widths + depth" if r["depth"] else "widths") + (", INT8 in search" if r.get("int8_in_search") else "")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['target']} | {search(r)} | "
                  f"{r['error'][:160]} | | | | | | | | |")
            continue
        i8 = f"{1 / r['int8_ratio_p10']:.2f}x" if r["int8_ratio_p10"] else "—"
        i8a = f"{100 * r['int8_acc']:.2f}" if r["int8_acc"] is not None else "—"
        print(f"| {r['model']} | {r['target']} | {search(r)} | "
              f"{len(r['dropped'])}/{r['blocks']} | {r['speedup']:.2f}x | {100 * r['base_acc']:.2f} → "
              f"{100 * r['acc']:.2f} | {100 * (r['acc'] - r['base_acc']):+.2f} | {i8} | {i8a} | "
              f"{r['int8_deployed']} | {r['stopped_early']} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
