"""load → analyse → measure baseline → search → fine-tune → export → verify → report.

``compile_model(cfg)`` is the whole job, callable from Python with the same settings as the CLI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgeprune.config import CompileConfig, LatencyTarget
from edgeprune.data import load_data
from edgeprune.errors import DataError, InfeasibleTargetError, InputShapeError, RunStoreError
from edgeprune.export.onnx import export_verified
from edgeprune.latency import LatencyMeter, get_backend
from edgeprune.model.evaluate import accuracy, count_macs_params
from edgeprune.model.finetune import TrainConfig, train
from edgeprune.model.load import LoadedModel, check_input_shape, load_model
from edgeprune.model.prune import analyse, channel_counts
from edgeprune.progress import Reporter
from edgeprune.report import sha256_file, write_outputs
from edgeprune.search.agents import make_agent
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.space import SearchSpace
from edgeprune.search.store import RunStore
from edgeprune.targets import load_target
from edgeprune.types import Candidate, EvalResult, Measurement

FINAL_VERIFY_SAMPLES = 200  # calibration images compared between ONNX Runtime and PyTorch


@dataclass
class SearchOutcome:
    evaluations: list[tuple[int, Candidate, EvalResult, bool]] = field(default_factory=list)  # (idx, cand, result, reused)
    evaluated_now: int = 0


@dataclass
class CompileResult:
    run_id: str
    out_dir: Path
    report: dict


def _best(evals, *, feasible: bool):
    """The most accurate feasible evaluation (ties: the faster), or with ``feasible=False`` the fastest one."""
    if not feasible:
        return min(evals, key=lambda e: e[2].latency_ms, default=None)
    return max((e for e in evals if e[2].feasible), key=lambda e: (e[2].accuracy, -e[2].latency_ms), default=None)


def _check_fit(loaded: LoadedModel, data) -> None:
    if tuple(data.input_shape) != tuple(loaded.input_shape):
        raise InputShapeError(f"data {data.name!r} has inputs {tuple(data.input_shape)} but the model expects "
                              f"{tuple(loaded.input_shape)}")
    n_out = check_input_shape(loaded.model, loaded.input_shape)
    if n_out != data.num_classes:
        raise DataError(f"data {data.name!r} has {data.num_classes} classes but the model outputs {n_out}")


def _open_run(store: RunStore, cfg: CompileConfig, model_sha: str) -> str:
    config = dict(cfg.to_dict(), model_sha256=model_sha)
    if not cfg.resume:
        return store.new_run(config)
    old = store.config(cfg.resume)
    keys = CompileConfig.SEARCH_KEYS + ("model_sha256",)
    diff = [k for k in keys if old.get(k) != config.get(k)]
    if diff:
        raise RunStoreError(f"run {cfg.resume} was started with different settings ({', '.join(diff)}); "
                            "resume with the same model, data, target, agent, seed and latency target")
    return cfg.resume


def search(agent, evaluator: CandidateEvaluator, store: RunStore, run_id: str, budget: int,
           reporter: Reporter) -> SearchOutcome:
    """Ask/evaluate/tell for up to ``budget`` evaluations. Stored evaluations of a resumed run are replayed
    (the agent is deterministic, so it asks the same candidates); duplicates reuse their first result."""
    stored = {idx: (c, r) for idx, c, r in store.evaluations(run_id)}
    seen: dict[str, EvalResult] = {}
    out = SearchOutcome()
    reporter.search_start(budget, len(stored))
    try:
        for idx in range(budget):
            cand = agent.ask()
            if cand is None:
                break
            reused = True
            if idx in stored and stored[idx][0].key == cand.key:
                result = stored[idx][1]
            elif cand.key in seen:
                result = seen[cand.key]
                store.append(run_id, idx, cand, result)
            else:
                result = evaluator.evaluate(cand)
                store.append(run_id, idx, cand, result)
                reused = False
                out.evaluated_now += 1
            seen.setdefault(cand.key, result)
            agent.tell(cand, result)
            out.evaluations.append((idx, cand, result, reused))
            best = _best(out.evaluations, feasible=True)
            reporter.search_step(idx, cand, result, reused, best[2] if best else None)
    finally:
        reporter.search_end()
    return out


def compile_model(cfg: CompileConfig, *, reporter: Reporter | None = None, command: str = "") -> CompileResult:
    """Run the whole job; raises an ``EdgePruneError`` subclass on bad input or an infeasible target."""
    rep = reporter or Reporter()
    t_start = time.time()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    profile = load_target(cfg.target)
    target = LatencyTarget.parse(cfg.latency_target)
    loaded = load_model(cfg.model, arch=cfg.arch, input_shape=cfg.input_shape, trust_code=cfg.trust_model_code)
    data = load_data(cfg.data)
    _check_fit(loaded, data)
    model, shape = loaded.model, loaded.input_shape
    model_sha = sha256_file(cfg.model)

    out_root = Path(cfg.out)
    store = RunStore(out_root / "runs.sqlite")
    run_id = _open_run(store, cfg, model_sha)
    rep.info(f"run {run_id} ({'resumed' if cfg.resume else 'new'}); store {store.path}")

    analysis = analyse(model, shape, round_to=profile.round_to)
    if analysis.unsupported:
        rep.warn(f"left unpruned (unsupported layers): {', '.join(analysis.unsupported)}")
    if not analysis.groups:
        raise InfeasibleTargetError("the model has no prunable channel groups")
    rep.info(f"{len(analysis.groups)} prunable groups; output layers kept whole: {', '.join(analysis.ignored)}")

    calib = data.calib[0][: cfg.calib_samples]
    val_search = (data.val[0][: cfg.search_val_samples], data.val[1][: cfg.search_val_samples])
    base_bytes, _, base_verdict = export_verified(model, shape, calib[:16], full_check=True)
    where = profile.where()
    meter = LatencyMeter(get_backend(profile.backend), base_bytes, calib[:1].numpy(), profile.measurement, where)
    stored_ref = store.get_meta(run_id, "baseline_reference")
    baseline_ref = Measurement.from_dict(stored_ref) if stored_ref else meter.baseline()
    store.put_meta(run_id, "baseline_reference", baseline_ref.to_dict())
    ratio = target.ratio(baseline_ref.p10_ms)
    rep.info(f"baseline {baseline_ref.p10_ms:.3f} ms (p10; median {baseline_ref.median_ms:.3f} ms) on {where}; "
             f"target {target} = {ratio:.3f}x = {ratio * baseline_ref.p10_ms:.3f} ms")

    evaluator = CandidateEvaluator(model, shape, analysis, val_search, calib, meter, ratio, baseline_ref.p10_ms)
    space = SearchSpace(analysis.groups)
    agent = make_agent(cfg.agent, space, budget=cfg.budget, seed=cfg.seed, latency_ratio=ratio)
    outcome = search(agent, evaluator, store, run_id, cfg.budget, rep)

    base_macs, base_params = count_macs_params(model, shape)
    base_acc = accuracy(model, *data.val)
    common = dict(cfg=cfg, profile=profile, loaded=loaded, data=data, analysis=analysis, outcome=outcome,
                  run_id=run_id, baseline_ref=baseline_ref, target=target, ratio=ratio, command=command,
                  baseline={"accuracy": base_acc, "macs": base_macs, "params": base_params,
                            "channels": channel_counts(model), "onnx_verification": base_verdict.to_dict()},
                  t_start=t_start)
    best = _best(outcome.evaluations, feasible=True)
    if best is None:
        fastest = _best(outcome.evaluations, feasible=False)
        report = write_outputs(status="infeasible", final=None, **common)
        store.set_status(run_id, "infeasible")
        f = fastest[2]
        raise InfeasibleTargetError(
            f"no candidate met the latency target {target} ({ratio * baseline_ref.p10_ms:.3f} ms) in "
            f"{len(outcome.evaluations)} evaluations; fastest found: {f.latency_ms:.3f} ms "
            f"({f.measurement.ratio_to_baseline:.3f}x, accuracy {f.accuracy:.3f}, widths {fastest[1].key}); "
            f"report in {report['out_dir']}", fastest=f)

    idx, cand, res, _ = best
    rep.info(f"best feasible: candidate {idx}, accuracy {res.accuracy:.3f} (search subset), "
             f"{res.latency_ms:.3f} ms ({res.measurement.ratio_to_baseline:.3f}x); fine-tuning")
    pruned, history = evaluator.build(cand)
    acc_before_ft = accuracy(pruned, *data.val)
    tcfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, distill=cfg.distill, seed=cfg.seed)
    steps = cfg.finetune_epochs * -(-len(data.train[1]) // tcfg.batch_size)
    rep.train_start(steps)
    try:
        train(pruned, *data.train, tcfg, teacher=model if cfg.distill else None, on_step=rep.train_step)
    finally:
        rep.train_end()
    final_acc = accuracy(pruned, *data.val)
    final_bytes, simplifier, verdict = export_verified(pruned, shape, calib[:FINAL_VERIFY_SAMPLES], full_check=True)
    final_m, base_m = meter.measure(final_bytes, rounds=profile.measurement.final_rounds)
    macs, params = count_macs_params(pruned, shape)
    final = {"candidate_index": idx, "widths": list(cand.widths), "accuracy_before_finetune": acc_before_ft,
             "accuracy": final_acc, "macs": macs, "params": params, "channels": channel_counts(pruned),
             "latency": final_m.to_dict(), "baseline_latency_same_run": base_m.to_dict(),
             "speedup_median": base_m.median_ms / final_m.median_ms, "simplifier": simplifier,
             "onnx_verification": verdict.to_dict(), "finetune": {"epochs": tcfg.epochs, "lr": tcfg.lr,
                                                                  "distill": tcfg.distill}}
    report = write_outputs(status="ok", final=final, pruned=pruned, history=history, onnx_bytes=final_bytes, **common)
    store.set_status(run_id, "done")
    store.close()
    return CompileResult(run_id, Path(report["out_dir"]), report)
