"""Search agents side by side on the same trained zoo models, budget and latency target, several seeds.

    python tools/bench_search.py --quick          # ResNet-20, all agents, 2 seeds, budget 16 (~15 min)
    python tools/bench_search.py --models resnet20,resnet56,mobilenet_v2 --seeds 3 --budget 40
    python tools/bench_search.py --models resnet56 --seeds 2 --results runs.jsonl   # resumable: re-run to go on
    python tools/bench_search.py --models resnet56 --agents bo,bo-plain --budget 200 --finetune-epochs 0 \
        --results runs.jsonl --plot curves.png      # the BO paper's convergence claim (issue 14 part 4)
    python tools/bench_search.py --models resnet56 --agents bo,bo-k3 --budget 200 --stop-after 50 \
        --finetune-epochs 0 --results first50.jsonl # the first 50 evaluations of budget-200 runs (variants)

Each run is a full ``edgeprune compile`` (library call) into a temporary folder. Models are the trained
checkpoints in examples/ (ResNet-20, ResNet-56, MobileNetV2); another zoo model is trained on first use with
``tools/train.py`` (command printed) into --models-dir.
Columns: best feasible search accuracy (after adaptive BN, 1000 validation images; mean ± std over seeds),
the best feasible so far after a quarter, half and three quarters of the budget (convergence), evaluations
to reach 99% of that run's best, search wall time (agent overhead included), the whole run's wall
time (baseline, search, confirmation, fine-tuning, export, verification), and the final model after fine-tuning:
accuracy on the 2000-image validation split and median latency ratio to the baseline (same run).
``bo-flops`` is feasible by MACs (same fraction as the latency target); its latency column shows what
that choice measures at.

``--stop-after N`` ends each run after N evaluations of its search (the agent still plans for --budget:
its initial design, roll-back schedule and stagnation rule are the budget's), keeping the curve so far as
a ``partial`` row with ``stopped_after``: the first 50 evaluations of a budget-200 run cost minutes, its
last 150 an hour (the GPs grow). Experimental variants of ``bo`` (``VARIANTS``) are registered here, not in
the package, until one earns its place there.
"""

from __future__ import annotations

import os

# Benchmarks compare methods from a cold start: earlier runs' history (edgeprune.history) stays out unless a
# tool turns it on for itself.
os.environ.setdefault("EDGEPRUNE_HISTORY", "off")

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("bo", "bo-plain", "bo-flops", "uniform", "random")
TRAIN_EPOCHS = {"resnet20": 15, "resnet56": 15, "mobilenet_v2": 15, "mobilenet_v1": 15, "vgg16_bn": 15}


# Experimental variants of the BO agent (issue 14 part 4): name -> BOAgent "options" and CompileConfig "config".
VARIANTS = {
    # The paper's cluster counts for ResNet-56: 3 clusters, then 9 (round(sqrt(3 * 30))), then every group.
    "bo-k3": {"options": {"clusters": 3}},
    # The first phase at the intermediate count: 12 clusters, then 19, then every group.
    "bo-k12": {"options": {"clusters": 12}},
    # Clusters by each group's accuracy drop when cut alone (--cluster-by sensitivity), default counts.
    "bo-sens": {"config": {"cluster_by": "sensitivity"}},
    "bo-sens-k3": {"config": {"cluster_by": "sensitivity"}, "options": {"clusters": 3}},
}


def register_variants() -> None:
    from edgeprune.search.agents.base import register
    from edgeprune.search.agents.bo import BOAgent

    for name, v in VARIANTS.items():
        opts = v.get("options", {})

        def factory(space, *, budget, seed, latency_ratio, _name=name, _opts=opts, **kw):
            return BOAgent(space, budget=budget, seed=seed, latency_ratio=latency_ratio, name=_name, **{**_opts, **kw})

        register(name)(factory)


class _Enough(BaseException):
    """Raised by StopAfter's reporter: not an Exception, so the pipeline's error handling lets it through
    (its ``finally`` blocks still close the meters and the store)."""


def _stop_after_reporter(n: int):
    from edgeprune.progress import Reporter

    class StopAfter(Reporter):
        """Records each evaluation's (feasible, accuracy) and stops the run after ``n`` of them."""

        def __init__(self):
            self.steps: list[tuple[bool, float]] = []

        def search_step(self, idx, candidate, result, reused, best) -> None:
            self.steps.append((bool(result.feasible), float(result.accuracy)))
            if len(self.steps) >= n:
                raise _Enough()

    return StopAfter()


def _steps_curve(steps) -> tuple[list, float]:
    curve, best = [], -1.0
    for ok, acc in steps:
        if ok:
            best = max(best, acc)
        curve.append(best if best >= 0 else None)
    return curve, best


def model_path(name: str, models_dir: Path, data: str = "shapes") -> Path:
    """The checkpoint trained on ``data``: bundled in examples/ (see examples/README.md; ``<name>.pt`` for
    ``shapes``, ``<name>_hard.pt`` for ``shapes-hard``), else trained into models_dir."""
    stem = name if data == "shapes" else f"{name}_{data.replace('shapes-', '')}"
    bundled = ROOT / "examples" / f"{stem}.pt"
    if bundled.exists():
        return bundled
    path = models_dir / f"{stem}.pt"
    if not path.exists():
        cmd = [sys.executable, str(ROOT / "tools" / "train.py"), name, "--data", data, "--epochs",
               str(TRAIN_EPOCHS.get(name, 15)), "--lr", "0.05", "--seed", "0", "--out", str(path)]
        print("training:", " ".join(cmd), flush=True)
        models_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def one_run(model: Path, agent: str, seed: int, args) -> dict:
    from edgeprune.config import CompileConfig
    from edgeprune.errors import InfeasibleTargetError
    from edgeprune.pipeline import compile_model

    with tempfile.TemporaryDirectory() as out:
        target = args.target
        if target == "host-ort":
            from bench_common import ORT_PROFILE

            target = str(Path(out) / "host-ort.toml")
            Path(target).write_text(ORT_PROFILE)
        cfg = CompileConfig(model=str(model), latency_target=args.latency_target, out=out, agent=agent,
                            budget=args.budget, seed=seed, finetune_epochs=args.finetune_epochs, data=args.data,
                            depth=args.depth, target=target, **VARIANTS.get(agent, {}).get("config", {}))
        t0 = time.time()
        reporter = _stop_after_reporter(args.stop_after) if args.stop_after else None
        try:
            rep = compile_model(cfg, reporter=reporter).report
        except _Enough:
            curve, best = _steps_curve(reporter.steps)
            return {"agent": agent, "seed": seed, "partial": True, "stopped_after": args.stop_after,
                    "evaluations": len(curve), "feasible": best >= 0, "best": best if best >= 0 else None,
                    "curve": curve, "search_s": round(time.time() - t0, 1)}
        except InfeasibleTargetError as e:
            # The search ran but its final choice was not confirmed (or nothing met the target): the
            # search's curve still counts for convergence; the failure report holds its candidates.
            failed = next(Path(out).glob("*/report.failed.json"), None)
            row = {"agent": agent, "seed": seed, "feasible": False, "wall": time.time() - t0,
                   "error": str(e).split(";")[0][:300]}
            if failed is not None:
                f_rep = json.loads(failed.read_text())
                curve, best = _curve(f_rep, agent)
                row.update(curve=curve, search_best=best if best >= 0 else None)
            return row
    curve, best = _curve(rep, agent)
    reach = next(i + 1 for i, b in enumerate(curve) if b is not None and b >= 0.99 * best) if best > 0 else None
    search_s = rep["search"]["wall_time_s"]
    f = rep["final"]
    return {"agent": agent, "seed": seed, "feasible": True, "best": best, "reach": reach, "curve": curve,
            "search_s": search_s, "wall": rep["wall_time_s"], "final_acc": f["accuracy"],
            "final_ratio": f["latency"]["baseline_median_ratio"], "meets": f["meets_latency_target"],
            "base_acc": rep["baseline"]["accuracy"]}


def _curve(rep: dict, agent: str) -> tuple[list, float]:
    """Best feasible search accuracy after each evaluation (None before the first feasible one), and the
    best (-1 when none). ``bo-flops`` is feasible by MACs."""
    cands = rep.get("candidates") or []
    base_macs = (rep.get("baseline") or {}).get("macs")
    ratio = rep["target"].get("latency_target_ratio")
    curve, best = [], -1.0
    for c in cands:
        ok = (c["macs"] / base_macs <= ratio) if agent == "bo-flops" and base_macs and ratio else c["feasible"]
        if ok:
            best = max(best, c["accuracy"])
        curve.append(best if best >= 0 else None)
    return curve, best


def fmt(vals, pct=False, digits=3):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    k = 100 if pct else 1
    m = statistics.mean(vals) * k
    s = statistics.stdev(vals) * k if len(vals) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,resnet56,mobilenet_v2")
    ap.add_argument("--agents", default=",".join(AGENTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--latency-target", default="0.5x")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--data", default="shapes", help="shapes (quick) or shapes-hard (separates the agents)")
    ap.add_argument("--depth", action="store_true", help="search residual blocks to drop too (--depth)")
    ap.add_argument("--target", default="host-ort",
                    help="host-ort (default: ONNX Runtime only, 1 thread, as every table in docs/benchmarks.md), or a "
                    "profile name or TOML path; `host` searches in TVM when its baseline is faster there (auto), and "
                    "then every candidate is compiled (~10 s per ResNet-56 candidate instead of ~4 s)")
    ap.add_argument("--models-dir", default=str(Path.home() / ".cache" / "edgeprune" / "bench_models"))
    ap.add_argument("--stop-after", type=int, help="end each run after this many evaluations (its agent planning "
                    "for --budget); rows are partial, with stopped_after")
    ap.add_argument("--reference", help="with --stop-after: a results file whose finished bo-plain runs (same "
                    "budget and target) give the level to reach")
    ap.add_argument("--report-only", action="store_true", help="run nothing: tabulate and plot what --results holds")
    ap.add_argument("--quick", action="store_true", help="resnet20 only, 2 seeds, budget 16")
    ap.add_argument("--plot", help="PNG: best feasible search accuracy so far against evaluations, per model and "
                    "agent (mean over seeds, band min..max, thin lines the seeds)")
    ap.add_argument("--results", help="JSON-lines file: every finished run is appended to it, and runs already "
                    "in it (same model, agent, seed, budget, target) are not run again — a long benchmark resumes")
    args = ap.parse_args()
    register_variants()
    if args.quick:
        args.models, args.seeds, args.budget = "resnet20", 2, 16
    conditions = {"budget": args.budget, "target": args.latency_target, "finetune_epochs": args.finetune_epochs,
                  "data": args.data, "depth": args.depth, "profile": args.target}
    done: dict[tuple, dict] = {}
    partial: dict[tuple, dict] = {}
    if args.results and Path(args.results).exists():
        for line in Path(args.results).read_text().splitlines():
            r = json.loads(line)
            if r.get("partial"):  # a stopped run's curve (tools/harvest_runs.py): plotted, never resumed from
                r.setdefault("profile", args.target)
                if all(r.get(k) == v for k, v in conditions.items() if k != "profile"):
                    partial[(r["model"], r["agent"], r["seed"])] = r
                    # ... except by --stop-after runs: one stopped by it after as many evaluations is done.
                    if args.stop_after and r.get("stopped_after", 0) >= args.stop_after:
                        done[(r["model"], r["agent"], r["seed"])] = r
                continue
            r.setdefault("data", "shapes")  # rows written before --data and --depth
            r.setdefault("depth", False)
            r.setdefault("profile", "host-ort")  # rows written before --target: host, whose auto chose ONNX Runtime
            if all(r.get(k) == v for k, v in conditions.items()):
                done[(r["model"], r["agent"], r["seed"])] = r
    rows = []
    for name in args.models.split(","):
        path = model_path(name, Path(args.models_dir), args.data)
        # Seeds outermost: a benchmark stopped half-way has the same seeds for every agent.
        for seed in range(args.seeds):
            for agent in args.agents.split(","):
                if (name, agent, seed) in done:
                    rows.append(done[(name, agent, seed)])
                    continue
                if args.report_only:
                    continue
                r = one_run(path, agent, seed, args)
                r.update(model=name, **conditions)
                rows.append(r)
                if args.results:
                    with open(args.results, "a") as f:
                        f.write(json.dumps(r, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
                print(f"  {name} {agent} seed {seed}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                                for k, v in r.items() if k not in ("agent", "seed", "model", "curve")),
                      flush=True)
    if args.stop_after:
        stopped_summary(rows, args)
        return
    print(f"\ndata {args.data}{', depth pruning' if args.depth else ''}, budget {args.budget}, target "
          f"{args.latency_target}, {args.seeds} seeds, fine-tune {args.finetune_epochs} epoch(s)")
    marks = sorted({max(1, args.budget // 4), args.budget // 2, 3 * args.budget // 4})
    print("| model | agent | best feasible search acc % | " + " | ".join(f"best after {m} evals %" for m in marks)
          + " | evals to 99% of best | search s | run wall s | final acc % | final latency ratio (median) "
          "| final meets target (p10) | infeasible runs |")
    print("| --- | --- | ---: | " + "---: | " * len(marks) + "---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in args.models.split(","):
        for agent in args.agents.split(","):
            rs = [r for r in rows if r["model"] == name and r["agent"] == agent]
            ok = [r for r in rs if r["feasible"]]
            # Best feasible so far after m evaluations; a run with nothing feasible yet counts as 0.
            at = " | ".join(fmt([(r["curve"][m - 1] or 0.0) if len(r["curve"]) >= m else r["best"] for r in ok if "curve" in r], True, 1)
                            for m in marks)
            print(f"| {name} | {agent} | {fmt([r['best'] for r in ok], True, 1)} | {at} | {fmt([r['reach'] for r in ok], digits=1)} "
                  f"| {fmt([r['search_s'] for r in ok], digits=0)} | {fmt([r['wall'] for r in ok], digits=0)} | {fmt([r['final_acc'] for r in ok], True, 1)} "
                  f"| {fmt([r['final_ratio'] for r in ok])} | {sum(bool(r['meets']) for r in ok)}/{len(ok)} | {len(rs) - len(ok)} |")
    # Curves of runs stopped half-way, where no finished run of the same seed exists (marked in the plot).
    finished = {(r["model"], r["agent"], r["seed"]) for r in rows if r.get("curve")}
    rows_curves = rows + [r for k, r in partial.items() if k not in finished and r["agent"] in args.agents.split(",")]
    for name in args.models.split(","):
        conv = convergence([r for r in rows_curves if r["model"] == name], args.agents.split(","))
        if conv:
            print(f"\n{name}: " + conv)
    if args.plot:
        plot_curves(rows_curves, args.models.split(","), args.agents.split(","), Path(args.plot), args)
        print(f"\ncurves: {args.plot}")


def stopped_summary(rows: list[dict], args) -> None:
    """--stop-after: the best feasible so far after a few evaluation counts, per agent (mean ± s.d. over
    seeds, and each seed), and with --reference the evaluations each seed took to reach bo-plain's final
    best there (finished budget-long runs of the same conditions, e.g. the convergence benchmark's file)."""
    n = args.stop_after
    marks = sorted({m for m in (10, 25, n // 2, n) if 0 < m <= n})
    level = None
    if args.reference and Path(args.reference).exists():
        ref = [json.loads(line) for line in Path(args.reference).read_text().splitlines()]
        plain = [search_best(r) for r in ref if r.get("agent") == "bo-plain" and not r.get("partial")
                 and r.get("budget") == args.budget and r.get("target") == args.latency_target
                 and search_best(r) is not None]
        level = statistics.mean(plain) if plain else None
        if level is not None:
            print(f"\nreference: bo-plain's final best after {args.budget} evaluations, mean of {len(plain)} "
                  f"finished seeds: {100 * level:.1f}% ({args.reference})")
    print(f"\nfirst {n} evaluations of budget-{args.budget} runs, target {args.latency_target}, data {args.data}")
    print("| agent | seeds | " + " | ".join(f"best after {m} %" for m in marks) + " | per seed after "
          f"{n} % | reaches the reference after |")
    print("| --- | ---: | " + "---: | " * len(marks) + "--- | --- |")
    for agent in args.agents.split(","):
        rs = [r for r in rows if r["agent"] == agent and r.get("curve")]
        if not rs:
            continue
        at = " | ".join(fmt([(r["curve"][min(m, len(r["curve"])) - 1] or 0.0) for r in rs], True, 1) for m in marks)
        per = ", ".join(f"{100 * (r['curve'][min(n, len(r['curve'])) - 1] or 0):.1f}" for r in rs)
        reach = "-" if level is None else ", ".join(
            str(evals_to_reach(r["curve"][:n], level) or f">{n}") for r in rs)
        print(f"| {agent} | {len(rs)} | {at} | {per} | {reach} |")
    if args.plot:
        cut = [dict(r, partial=False, curve=r["curve"][:n]) for r in rows if r.get("curve")]
        plot_curves(cut, args.models.split(","), args.agents.split(","), Path(args.plot), args, level=level)
        print(f"\ncurves: {args.plot}")


def search_best(r: dict) -> float | None:
    """The best feasible accuracy the run's search found (also when its final choice was not confirmed)."""
    if not r.get("curve"):
        return None
    return r.get("best") if r.get("feasible") else r.get("search_best", r.get("best"))


def evals_to_reach(curve: list, level: float) -> int | None:
    """1-based number of evaluations after which the best feasible so far is ≥ ``level`` (None: never)."""
    return next((i + 1 for i, b in enumerate(curve) if b is not None and b >= level), None)


def convergence(rows: list[dict], agents: list[str]) -> str:
    """The paper's claim, for each agent against ``bo-plain``: how many evaluations each of its seeds took
    to reach the mean of plain BO's final best (over its seeds), and the spread of the final bests."""
    plain = [r for r in rows if r["agent"] == "bo-plain" and search_best(r) is not None and not r.get("partial")]
    if not plain:
        return ""
    level = statistics.mean(search_best(r) for r in plain)
    out = [f"bo-plain's final best {100 * level:.1f}% (mean of {len(plain)} finished seeds)"]
    for agent in agents:
        rs = [r for r in rows if r["agent"] == agent and r.get("curve")]
        if not rs:
            continue
        reach = []
        for r in rs:
            n = evals_to_reach(r["curve"], level)
            note = f" (seed {r['seed']}{', stopped after ' + str(len(r['curve'])) if r.get('partial') else ''})"
            reach.append(("never" if not r.get("partial") else "not yet") + note if n is None else f"{n}{note}")
        done = [search_best(r) for r in rs if not r.get("partial") and search_best(r) is not None]
        sd = f"; final best s.d. {statistics.stdev(done) * 100:.2f} points" if len(done) > 1 else ""
        out.append(f"{agent} reaches it after " + ", ".join(reach) + " evaluations" + sd)
    return "; ".join(out)


def plot_curves(rows: list[dict], models: list[str], agents: list[str], path: Path, args,
                level: float | None = None) -> None:
    """One panel per model: every agent's best feasible so far (mean over seeds, band min..max); ``level``:
    bo-plain's final best from elsewhere (--reference), when ``rows`` hold no finished bo-plain run."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5 * len(models), 4.8), dpi=100)
    FigureCanvasAgg(fig)
    colours = dict(zip(AGENTS + tuple(VARIANTS), ("#1f77b4", "#d62728", "#7f7f7f", "#2ca02c", "#9467bd",
                                                  "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")))
    for i, name in enumerate(models):
        ax = fig.add_subplot(1, len(models), i + 1)
        for agent in agents:
            rs = [r for r in rows if r["model"] == name and r["agent"] == agent and search_best(r) is not None]
            if not rs:
                continue
            for r in rs:
                if r.get("partial"):  # a run stopped half-way: its own dashed line, not in the mean
                    ax.plot(np.arange(1, len(r["curve"]) + 1), [100 * (b or 0.0) for b in r["curve"]],
                            color=colours.get(agent), lw=1, ls="--", alpha=0.8,
                            label=f"{agent} seed {r['seed']} ({'read from its store to' if r.get('reconstructed') else 'stopped after'} "
                                  f"{len(r['curve'])})")
            rs = [r for r in rs if not r.get("partial")]
            if not rs:
                continue
            n = min(len(r["curve"]) for r in rs)
            # Before a seed's first feasible candidate its best-so-far is undefined: drawn as 0 (as in the table).
            ys = np.array([[100 * (b or 0.0) for b in r["curve"][:n]] for r in rs])
            x = np.arange(1, n + 1)
            c = colours.get(agent)
            for y in ys:
                ax.plot(x, y, color=c, lw=0.6, alpha=0.35)
            ax.plot(x, ys.mean(0), color=c, lw=2, label=f"{agent} (mean of {len(rs)} seeds)")
            ax.fill_between(x, ys.min(0), ys.max(0), color=c, alpha=0.12, lw=0)
        plain = [search_best(r) for r in rows if r["model"] == name and r["agent"] == "bo-plain"
                 and search_best(r) is not None and not r.get("partial")]
        if plain or level is not None:
            ax.axhline(100 * (statistics.mean(plain) if plain else level), color="#d62728", ls=":", lw=1,
                       label=f"bo-plain's final best after {args.budget} (mean)")
        if args.budget > 50:
            ax.axvline(50, color="#555555", ls="--", lw=0.8, label="50 evaluations (the claim)")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best feasible search accuracy so far (%)")
        first = f"first {args.stop_after} evaluations of " if getattr(args, "stop_after", None) else ""
        ax.set_title(f"{name}: target {args.latency_target}, {first}budget {args.budget}, data {args.data}")
        lo = [100 * search_best(r) for r in rows if r["model"] == name and search_best(r) is not None]
        if lo:
            ax.set_ylim(max(0.0, min(lo) - 15), min(100.0, max(lo) + 3))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight", facecolor="white")


if __name__ == "__main__":
    main()
