"""History across runs: evaluations to reach the same best feasible accuracy with and without history,
for the ``rl`` and ``bo`` agents (issue 12, part 5).

    python tools/bench_transfer.py --model resnet56:0.5x --sources resnet56:0.6x,resnet20:0.5x \
        --agents rl,bo --seeds 0,1,2 --budget 30 --results docs/bench_data/transfer.jsonl

First the source runs (``random`` agent, ``--source-budget`` evaluations each, seed 100) fill a history
file: by default the same model at another latency target (its accuracies hold here, and, measured on the
same profile and conditions, its latencies too) and another model (only ``rl`` can use it). Then each
agent and seed runs twice on the model at its target, identical but for ``--history``: ``off`` (cold) and
a fresh copy of the source history (warm). Every run is ``edgeprune compile`` as a library call on the
ONNX Runtime host profile, widths only, no fine-tuning (the search is what is compared).

Columns: the best feasible search accuracy of each run at the full budget, and the evaluations the warm
run needed to reach the cold run's best (its speed-up: budget / that; "-" when it never did). Below, per
agent: the medians and the spread of the cold runs' best over seeds (the BO paper claims less variance
than RL). Resumable: rows already in --results are printed, not run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _done(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def _compile(model: str, target: str, agent: str, seed: int, budget: int, history: str, out: Path) -> dict:
    from bench_common import ORT_PROFILE, best_feasible_curve
    from edgeprune.config import CompileConfig
    from edgeprune.pipeline import compile_model
    from edgeprune.progress import Reporter

    prof = out / "host-ort.toml"
    prof.write_text(ORT_PROFILE)
    cfg = CompileConfig(model=str(ROOT / "examples" / f"{model}.pt"), target=str(prof), latency_target=target,
                        out=str(out), agent=agent, budget=budget, seed=seed, finetune_epochs=0, accept_closest=True,
                        history=history)
    t = time.time()
    r = compile_model(cfg, reporter=Reporter()).report
    best, curve = best_feasible_curve(r)
    s = r["search"]
    return {"model": model, "target": target, "agent": agent, "seed": seed, "budget": budget, "best": best,
            "curve": curve, "history": s.get("history"), "agent_history": (s.get("agent_info") or {}).get("history"),
            "search_s": s["wall_time_s"], "wall_s": round(time.time() - t, 1)}


def _reach(curve: list[float], level: float) -> int | None:
    return next((i + 1 for i, v in enumerate(curve) if v >= level - 1e-9), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet56:0.5x")
    p.add_argument("--sources", default="resnet56:0.6x,resnet20:0.5x")
    p.add_argument("--source-budget", type=int, default=30)
    p.add_argument("--agents", default="rl,bo")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--results", type=Path, required=True)
    a = p.parse_args()
    a.results.parent.mkdir(parents=True, exist_ok=True)
    done = _done(a.results)
    model, target = a.model.split(":")
    tag = {"sources": a.sources, "source_budget": a.source_budget}

    def run_once(kind: str, **kw) -> dict:
        key = dict(kind=kind, **kw, **tag)
        row = next((d for d in done if all(d.get(k) == v for k, v in key.items())), None)
        if row is None:
            row = dict(key, **run(kind, **kw))
            with a.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
        return row

    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        tmp = Path(tmp)
        # Beside the results, so that a resumed benchmark finds the history its source rows made.
        hist = a.results.with_suffix(".sources.sqlite")

        def run(kind: str, **kw) -> dict:
            out = Path(tempfile.mkdtemp(dir=tmp))
            if kind == "source":
                return _compile(kw["src_model"], kw["src_target"], "random", 100, a.source_budget, str(hist), out)
            history = "off"
            if kind == "warm":
                history = str(out / "history.sqlite")
                shutil.copy(hist, history)
            return _compile(model, target, kw["agent"], kw["seed"], a.budget, history, out)

        sources = [s.split(":") for s in a.sources.split(",") if s]
        need = [(ag, sd) for ag in a.agents.split(",") for sd in map(int, a.seeds.split(","))
                if not any(d.get("kind") == "warm" and d.get("agent") == ag and d.get("seed") == sd
                           and all(d.get(k) == v for k, v in tag.items()) for d in done)]
        if need:  # the source history is needed only for warm runs not yet done
            for m, t in sources:
                run_once("source", src_model=m, src_target=t)
        rows = []
        for agent in a.agents.split(","):
            for seed in map(int, a.seeds.split(",")):
                cold = run_once("cold", agent=agent, seed=seed, budget=a.budget, model=model, target=target)
                warm = run_once("warm", agent=agent, seed=seed, budget=a.budget, model=model, target=target)
                rows.append((agent, seed, cold, warm))
    print(f"{model} at {target}, budget {a.budget}; history from {a.sources} ({a.source_budget} random evaluations each)")
    print("| agent | seed | cold best | warm best | warm evaluations to the cold best | speed-up | history rows used |")
    print("|---|---|---|---|---|---|---|")
    for agent, seed, cold, warm in rows:
        n = _reach(warm["curve"], cold["best"])
        used = warm.get("agent_history") or {}
        used_s = used.get("accuracy_observations", used.get("rows", "?"))
        print(f"| {agent} | {seed} | {cold['best']:.3f} | {warm['best']:.3f} | {n if n else '-'} | "
              f"{a.budget / n if n else 0:.1f}x | {used_s} |")
    for agent in a.agents.split(","):
        colds = [c["best"] for ag, _, c, _ in rows if ag == agent]
        warms = [w["best"] for ag, _, _, w in rows if ag == agent]
        sd = statistics.pstdev(colds) if len(colds) > 1 else 0.0
        print(f"{agent}: cold best median {statistics.median(colds):.3f} (sd {sd:.3f}), warm best median "
              f"{statistics.median(warms):.3f}")


if __name__ == "__main__":
    main()
