"""load → analyse → measure baseline → search → fine-tune → export → verify → report.

``compile_model(cfg)`` is the whole job, callable from Python with the same settings as the CLI.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgeprune.config import CompileConfig, LatencyTarget
from edgeprune.data import load_data
from edgeprune.deploy.stage import (build_artifact, check_tvm_importable, compare_final, deploy_runtimes,
                                    measuring_profile, open_meters, tvm_skip_reason)
from edgeprune.errors import DataError, DeviceError, InfeasibleTargetError, InputShapeError, Interrupted, RunStoreError, TargetError
from edgeprune.export.onnx import export_verified
from edgeprune.latency import LatencyMeter
from edgeprune.model.evaluate import accuracy, count_macs_params
from edgeprune.model.finetune import TrainConfig, train
from edgeprune.model.load import LoadedModel, check_input_shape, load_model
from edgeprune.model.prune import analyse, channel_counts
from edgeprune.progress import Reporter
from edgeprune.report import sha256_file, write_outputs
from edgeprune.search.agents import agent_info, make_agent
from edgeprune.search.cluster import group_features
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.space import SearchSpace
from edgeprune.search.store import RunStore
from edgeprune.targets import load_target
from edgeprune.types import Candidate, EvalResult, Measurement

FINAL_VERIFY_SAMPLES = 200  # calibration images compared between ONNX Runtime and PyTorch
TVM_VERIFY_SAMPLES = 50  # calibration images compared between the TVM library and ONNX Runtime


@dataclass
class SearchOutcome:
    evaluations: list[tuple[int, Candidate, EvalResult, bool]] = field(default_factory=list)  # (idx, cand, result, reused)
    evaluated_now: int = 0
    agent_info: dict = field(default_factory=dict)
    confirmations: list[dict] = field(default_factory=list)  # re-measurements of the top candidates
    seconds: float = 0.0  # wall time of the search loop, agent overhead included


@dataclass
class CompileResult:
    run_id: str
    out_dir: Path
    report: dict


def _feasible(r: EvalResult) -> bool:
    return r.feasible


def _most_accurate(evals, is_feasible=_feasible):
    """Feasible evaluations, most accurate first (ties: the faster). ``is_feasible`` is the agent's own
    notion when it has one (``bo-flops`` constrains MACs)."""
    return sorted((e for e in evals if is_feasible(e[2])), key=lambda e: (-e[2].accuracy, e[2].latency_ms))


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
           reporter: Reporter, is_feasible=_feasible) -> SearchOutcome:
    """Ask/evaluate/tell until ``budget`` distinct candidates are evaluated or the agent stops.

    A resumed run first tells the agent every stored evaluation, in order, without re-measuring it; agents
    derive their next proposal from their seed and what they were told, so the search continues where it
    stopped. A candidate whose widths were already evaluated reuses that result and costs no budget
    (bounded, so an agent stuck on one point cannot loop forever).
    """
    out = SearchOutcome()
    t0 = time.perf_counter()
    seen: dict[str, EvalResult] = {}
    stored = store.evaluations(run_id)
    reporter.search_start(budget, len(stored))

    def record(idx, cand, result, reused):
        seen.setdefault(cand.key, result)
        agent.tell(cand, result)
        out.evaluations.append((idx, cand, result, reused))
        ranked = _most_accurate(out.evaluations, is_feasible)
        reporter.search_step(idx, cand, result, reused, ranked[0][2] if ranked else None)

    try:
        for idx, cand, result in stored[:budget]:
            record(idx, cand, result, True)
        asks = 0
        # With several devices, an agent's batch (q proposals) is measured in parallel.
        parallel = getattr(agent, "batch", 1) if hasattr(evaluator.meter, "measure_many") else 1
        while len(out.evaluations) < budget and asks < 4 * budget:
            batch: list[Candidate] = []
            while len(batch) < min(parallel, budget - len(out.evaluations)) and asks < 4 * budget:
                asks += 1
                cand = agent.ask()
                if cand is None:
                    break
                if cand.key in seen:
                    agent.tell(cand, seen[cand.key])
                    continue
                if all(c.key != cand.key for c in batch):
                    batch.append(cand)
            if not batch:
                break
            for cand, result in zip(batch, evaluator.evaluate_many(batch)):
                idx = len(out.evaluations)
                store.append(run_id, idx, cand, result)
                out.evaluated_now += 1
                record(idx, cand, result, False)
    finally:
        reporter.search_end()
        out.seconds = round(time.perf_counter() - t0, 2)
    return out


CONFIRM_TOP = 5  # feasible candidates re-measured before the final choice


def confirm_best(evaluations, evaluator: CandidateEvaluator, *, ratio: float, rounds: int, is_feasible=_feasible,
                 constrain_latency: bool = True):
    """Re-measure the most accurate feasible candidates with the long (final) plan and return the first
    whose confirmed ratio still meets the target, with the list of confirmations for the report.

    The search keeps whatever measured under the target once; near the boundary that favours candidates
    whose one measurement happened to be low (the winner's curse), and the final re-measurement then lands
    above the target. When no candidate confirms, the one that came closest is returned.
    """
    pool = _most_accurate(evaluations, is_feasible)
    confirmations = []
    for e in pool[:CONFIRM_TOP]:
        m = evaluator.remeasure(e[1], rounds=rounds)
        confirmations.append({"index": e[0], "search_ratio": e[2].measurement.ratio_to_baseline,
                              "confirmed_ratio": m.ratio_to_baseline, "accuracy": e[2].accuracy})
        if not constrain_latency or m.ratio_to_baseline <= ratio:
            return e, confirmations
    if not confirmations:
        return None, confirmations
    closest = min(confirmations, key=lambda c: c["confirmed_ratio"])
    return next(e for e in pool if e[0] == closest["index"]), confirmations


def finish(cfg: CompileConfig, pruned, teacher, data, shape, calib, meter: LatencyMeter, rep: Reporter, *,
           rounds: int) -> dict:
    """Fine-tune the chosen pruned model in place, export and verify it (full ONNX check, outputs against
    PyTorch on calibration images), and measure it against the baseline in the same rounds."""
    acc_before = accuracy(pruned, *data.val)
    tcfg = TrainConfig(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, distill=cfg.distill, seed=cfg.seed)
    rep.train_start(cfg.finetune_epochs * -(-len(data.train[1]) // tcfg.batch_size))
    try:
        train(pruned, *data.train, tcfg, teacher=teacher if cfg.distill else None, on_step=rep.train_step)
    finally:
        rep.train_end()
    onnx_bytes, simplifier, verdict = export_verified(pruned, shape, calib[:FINAL_VERIFY_SAMPLES], full_check=True)
    final_m, base_m = meter.measure(onnx_bytes, rounds=rounds)
    macs, params = count_macs_params(pruned, shape)
    return {"accuracy_before_finetune": acc_before, "accuracy": accuracy(pruned, *data.val), "macs": macs,
            "params": params, "channels": channel_counts(pruned), "latency": final_m.to_dict(),
            "baseline_latency_same_run": base_m.to_dict(), "speedup_median": base_m.median_ms / final_m.median_ms,
            "simplifier": simplifier, "onnx_verification": verdict.to_dict(), "onnx_bytes": onnx_bytes,
            "finetune": {"epochs": tcfg.epochs, "lr": tcfg.lr, "distill": tcfg.distill}}


def _verify_pool(cfg: CompileConfig, plan, meters: dict, rep: Reporter):
    """Devices that can run the target's library: ``--verify-device KEY``, else the measuring devices."""
    if cfg.verify_device:
        from edgeprune.remote.client import DevicePool

        tracker = cfg.tracker or (plan.remote.tracker if plan.remote else None) or "127.0.0.1:9190"
        return DevicePool(tracker, cfg.verify_device, session_timeout_s=600, on_event=rep.warn)
    return next((m.pool for m in meters.values() if hasattr(m, "pool")), None)


def deploy_stage(cfg: CompileConfig, profile, plan, meters: dict, search_rt: str, onnx_bytes: bytes, final: dict,
                 shape, calib, work: Path, rep: Reporter, tvm_problem: str | None) -> dict:
    """Compile the final model with TVM for the target (checked, verified where it runs here, tuned on
    request) and time it in every deployable runtime. The library stays in ``work`` until the report is written."""
    import onnx

    art = None
    if "tvm" in deploy_runtimes(profile, tvm_problem):  # built for the device whoever measures
        rep.info(f"compiling the final model with TVM for {profile.name}")
        art = build_artifact(onnx.load_from_string(onnx_bytes), shape, onnx_bytes, profile,
                             calib[:TVM_VERIFY_SAMPLES].numpy(), work, tune_trials=cfg.tune_trials, seed=cfg.seed, rep=rep,
                             device_pool=_verify_pool(cfg, plan, meters, rep))
    skip = None if art else (tvm_skip_reason(profile) or tvm_problem or "the profile's runtime is onnxruntime")
    search_pair = (Measurement.from_dict(final["latency"]), Measurement.from_dict(final["baseline_latency_same_run"]))
    rounds = plan.profile.measurement.rounds
    cmp = compare_final(meters, onnx_bytes, art, plan, search_rt, search_pair, calib[:1].numpy(), rounds, profile.backend)
    rep.info("final model per runtime (median, same-run baseline): " + ", ".join(
        f"{rt} {r['latency']['median_ms']:.3f} ms vs {r['baseline_same_run']['median_ms']:.3f} ms"
        for rt, r in cmp["runtimes"].items()) + f"; deploying {cmp['deployed_runtime']}")
    cmp["tvm"] = dict(art.to_dict(), built=True) if art else {"built": False, "reason": skip}
    cmp["tvm_library_path"] = str(art.path) if art else None
    pool = next((m.pool for m in meters.values() if hasattr(m, "pool")), None)
    if pool is not None:
        cmp["remote"] = {"tracker": pool.tracker, "key": pool.key, "parallel": pool.size, "failures": pool.failures}
    return cmp


def compile_model(cfg: CompileConfig, *, reporter: Reporter | None = None, command: str = "") -> CompileResult:
    """Run the whole job; raises an ``EdgePruneError`` subclass on bad input or an infeasible target."""
    rep = reporter or Reporter()
    t_start = time.time()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    profile = load_target(cfg.target)
    plan = measuring_profile(profile, cfg.measure_on, tracker=cfg.tracker, device_key=cfg.device_key)
    if cfg.tune_trials and (plan.stand_in or plan.remote is not None or not profile.is_local):
        raise TargetError(f"--tune-trials tunes on this machine, so only for a target that is this machine; target "
                          f"{profile.name} is not (tuning on a stand-in would tune for the wrong CPU, and tuning "
                          f"through TVM RPC devices is not supported yet)")
    if profile.unsupported:
        rep.warn(f"{profile.name}: {profile.unsupported}")
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
    import onnx

    # Before the search: a model TVM cannot import is said now, not after minutes of search.
    tvm_problem = check_tvm_importable(onnx.load_from_string(base_bytes), profile)
    if tvm_problem:
        rep.warn(f"{tvm_problem}; no TVM library, ONNX Runtime only")
    where = plan.where
    meters, search_rt, runtime_choice = open_meters(plan, deploy_runtimes(profile, tvm_problem), base_bytes,
                                                    calib[:1].numpy(), store.get_meta(run_id, "search_runtime"), rep,
                                                    parallel=cfg.batch, target=profile)
    store.put_meta(run_id, "search_runtime", search_rt)
    meter = meters[search_rt]
    stored_ref = store.get_meta(run_id, "baseline_reference")
    baseline_ref = Measurement.from_dict(stored_ref) if stored_ref else meter.baseline()
    store.put_meta(run_id, "baseline_reference", baseline_ref.to_dict())
    ratio = target.ratio(baseline_ref.p10_ms)
    rep.info(f"baseline {baseline_ref.p10_ms:.3f} ms (p10; median {baseline_ref.median_ms:.3f} ms) on {where}; "
             f"target {target} = {ratio:.3f}x = {ratio * baseline_ref.p10_ms:.3f} ms")

    evaluator = CandidateEvaluator(model, shape, analysis, val_search, calib, meter, ratio, baseline_ref.p10_ms)
    base_macs, base_params = count_macs_params(model, shape)
    features = group_features(model, shape, analysis)
    space = SearchSpace(analysis.groups, tuple(map(tuple, features.tolist())), base_macs)
    agent = make_agent(cfg.agent, space, budget=cfg.budget, seed=cfg.seed, latency_ratio=ratio,
                       clusters=cfg.clusters, batch=cfg.batch)
    is_feasible = getattr(agent, "feasible", _feasible)
    try:
        outcome = search(agent, evaluator, store, run_id, cfg.budget, rep, is_feasible)
    except DeviceError as e:
        n = len(store.evaluations(run_id))
        store.close()
        raise DeviceError(f"{e}. {n} evaluations are stored in {store.path}; when the devices are back, continue "
                          f"with the same command plus --resume {run_id}") from None
    except KeyboardInterrupt:
        n = len(store.evaluations(run_id))
        store.close()
        raise Interrupted(f"interrupted; {n} evaluations are stored in {store.path}; continue with the same "
                          f"command plus --resume {run_id}") from None
    outcome.agent_info = agent_info(agent)

    base_acc = accuracy(model, *data.val)
    common = dict(cfg=cfg, profile=profile, plan=plan, loaded=loaded, data=data, analysis=analysis, outcome=outcome,
                  run_id=run_id, baseline_ref=baseline_ref, target=target, ratio=ratio, command=command,
                  baseline={"accuracy": base_acc, "macs": base_macs, "params": base_params,
                            "channels": channel_counts(model), "onnx_verification": base_verdict.to_dict()},
                  t_start=t_start)
    best, confirmations = confirm_best(outcome.evaluations, evaluator, ratio=ratio,
                                       rounds=plan.profile.measurement.final_rounds, is_feasible=is_feasible,
                                       constrain_latency=getattr(agent, "constraint", "latency") == "latency")
    outcome.confirmations = confirmations
    if best is None:
        fastest = min(outcome.evaluations, key=lambda e: e[2].latency_ms)
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
    final = finish(cfg, pruned, model, data, shape, calib, meter, rep, rounds=plan.profile.measurement.final_rounds)
    final.update(candidate_index=idx, widths=list(cand.widths), meets_latency_target=final["latency"]["ratio_to_baseline"] <= ratio)
    if not final["meets_latency_target"]:
        # The search keeps what measured under the target; a re-measurement near the boundary can land above it.
        rep.warn(f"final model re-measured at {final['latency']['ratio_to_baseline']:.3f}x the baseline (p10), above "
                 f"the target {ratio:.3f}x; it was chosen at {res.measurement.ratio_to_baseline:.3f}x")
    onnx_bytes = final.pop("onnx_bytes")
    with tempfile.TemporaryDirectory(prefix="edgeprune-deploy-") as work:
        deploy = deploy_stage(cfg, profile, plan, meters, search_rt, onnx_bytes, final, shape, calib, Path(work), rep,
                              tvm_problem)
        deploy["search_runtime"], deploy["baseline_per_runtime"] = search_rt, runtime_choice
        report = write_outputs(status="ok", final=final, pruned=pruned, history=history, onnx_bytes=onnx_bytes,
                               deploy=deploy, **common)
    store.set_status(run_id, "done")
    store.close()
    return CompileResult(run_id, Path(report["out_dir"]), report)
