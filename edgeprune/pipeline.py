"""load → analyse → baseline → search → select → finish → deploy → write.

``compile_model(cfg)`` is the whole job, callable from Python with the same settings as the CLI. Each
stage is a function in its own module (``edgeprune.stages``, ``edgeprune.search``, ``edgeprune.deploy``,
``edgeprune.report``) that takes and returns frozen dataclasses; this module only runs them in order,
keeps the run store, and turns a stop into the right report and exit code.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from edgeprune.config import CompileConfig
from edgeprune.data.normalisation import LEGACY
from edgeprune.deploy.stage import deploy
from edgeprune.errors import (DeviceError, EdgePruneError, InfeasibleTargetError, Interrupted, RunStoreError,
                              VerificationError)
from edgeprune.latency.where import open_meters
from edgeprune.model.depth import dropped_blocks
from edgeprune.model.evaluate import accuracy
from edgeprune.progress import RecordingReporter, Reporter
from edgeprune.report import build_report, write_failure, write_success
from edgeprune.search.agents import make_agent
from edgeprune.search.accuracy import EarlyStop
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.loop import run_search
from edgeprune.stages.calibrate import open_screen
from edgeprune.search.select import select
from edgeprune.search.store import RunStore
from edgeprune.stages.analyse import analyse_model, cluster_by_sensitivity
from edgeprune.stages.baseline import check_reachable, measure_baseline
from edgeprune.stages.finish import finish
from edgeprune.stages.gdp import gdp_stage
from edgeprune.stages.history import prior_for, record as record_history
from edgeprune.stages.gates import GateError, check_gates, enforce
from edgeprune.stages.load import Inputs, agent_options, load
from edgeprune.stages.quantize import quantize_final


@dataclass(frozen=True)
class CompileResult:
    run_id: str
    out_dir: Path
    report: dict


def _open_run(store: RunStore, inputs: Inputs) -> str:
    cfg = inputs.cfg
    norm = inputs.data.normalisation.for_channels(inputs.shape[0])
    config = dict(cfg.to_dict(), model_sha256=inputs.model_sha256,
                  normalisation={"mean": list(norm.mean), "std": list(norm.std)})
    if not cfg.resume:
        return store.new_run(config)
    old = store.config(cfg.resume)
    if "normalisation" not in old:  # a run stored before normalisation was a choice used the legacy one
        legacy = LEGACY.for_channels(inputs.shape[0])
        old = dict(old, normalisation={"mean": list(legacy.mean), "std": list(legacy.std)})
    keys = CompileConfig.SEARCH_KEYS + ("model_sha256", "normalisation")
    # Settings a run stored before they existed lacks: it searched widths only, measured the float form, and
    # goes on with today's evaluation speed-ups.
    old = {"depth": False, "quantize_in_search": False, "search_bn_samples": config["search_bn_samples"],
           "early_stop": config["early_stop"], **old}
    diff = [k for k in keys if old.get(k) != config.get(k)]
    if diff:
        raise RunStoreError(f"run {cfg.resume} was started with different settings ({', '.join(diff)}); "
                            "resume with the same model, data, normalisation, target, agent, seed and latency "
                            "target")
    if store.status(cfg.resume) == "done" and not cfg.overwrite:
        raise RunStoreError(f"run {cfg.resume} is finished and its artifacts are in "
                            f"{inputs.out_root / inputs.loaded.name}; resuming it would fine-tune and write them "
                            f"again: add --overwrite to replace them")
    return cfg.resume


def compile_model(cfg: CompileConfig, *, reporter: Reporter | None = None, command: str = "",
                  opener=open_meters) -> CompileResult:
    """Run the whole job; raises an ``EdgePruneError`` subclass on bad input, an unmet latency target
    (``InfeasibleTargetError``, exit 3) or a failed verification (``VerificationError``, exit 4).

    ``opener`` opens the meters (``latency.where.open_meters``'s signature); tests pass a fake one.
    torch's thread count and random state are restored on return.
    """
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    try:
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        return _run(cfg, RecordingReporter(reporter or Reporter()), command, opener)
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(rng)


def _run(cfg: CompileConfig, rep: RecordingReporter, command: str, opener) -> CompileResult:
    t_start = time.time()
    inputs = load(cfg, rep)
    if inputs.loaded.arch is None:
        rep.warn(f"{cfg.model} is a pickled module (no architecture to rebuild it from), so model.pt will be one "
                 "too: loading it runs code, and needs --trust-model-code (load_model(path, trust_code=True)); "
                 "a state dict with --arch gives a model.pt that loads with weights only")
    store = RunStore(inputs.out_root / "runs.sqlite")
    run_id = None
    state: dict = {}  # the stages reached so far, for the report of a run that stops
    try:
        run_id = _open_run(store, inputs)
        rep.info(f"run {run_id} ({'resumed' if cfg.resume else 'new'}); store {store.path}")
        analysed = state["analysed"] = analyse_model(inputs, rep)
        data, shape, model = inputs.data, inputs.shape, inputs.loaded.model
        calib = data.calib[0][: cfg.calib_samples]
        val_search = (data.val[0][: cfg.search_val_samples], data.val[1][: cfg.search_val_samples])
        baseline = state["baseline"] = measure_baseline(inputs, store, run_id, calib, rep, opener=opener)
        meter = baseline.meters.search
        evaluator = CandidateEvaluator(model, shape, analysed.analysis, val_search, calib, meter, baseline.ratio,
                                       baseline.reference.p10_ms, device=inputs.train_device,
                                       bn_samples=cfg.search_bn_samples, early=EarlyStop(enabled=cfg.early_stop),
                                       threads=cfg.torch_threads, quantize=cfg.quantize_in_search)
        if cfg.quantize_in_search and meter.runtime != "onnxruntime":
            raise EdgePruneError(f"--quantize-in-search measures INT8 (QDQ) models, which run in ONNX Runtime; "
                                 f"this target's search measures with {meter.runtime}")
        state["base_accuracy"] = accuracy(model, *data.val, device=inputs.train_device)
        if cfg.cluster_by == "sensitivity" and cfg.method != "gdp":
            analysed = state["analysed"] = cluster_by_sensitivity(analysed, evaluator, model, rep,
                                                                  device=inputs.train_device)
        if cfg.method == "gdp":
            gdp = state["gdp"] = gdp_stage(inputs, analysed, evaluator, baseline, run_id, rep)
            pruned, history, index, widths = gdp.pruned, gdp.history, -1, gdp.widths
            chosen_at = f"GDP predicted it at {gdp.predicted_ratio:.3f}x"
        else:
            pruned, history, index, widths, chosen_at = _search_and_choose(inputs, analysed, evaluator, baseline,
                                                                           store, run_id, state, rep)
        if dropped := dropped_blocks(history):
            rep.info(f"depth pruning: {len(dropped)} of {len(analysed.analysis.blocks)} residual blocks dropped "
                     f"({', '.join(dropped)})")
        try:
            final = state["final"] = finish(
                pruned=pruned, history=history, teacher=model, data=data, shape=shape, calib=calib, meter=meter,
                rounds=inputs.plan.profile.measurement.final_rounds, ratio=baseline.ratio,
                epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, distill=cfg.distill, seed=cfg.seed,
                candidate_index=index, widths=widths, rep=rep,
                baseline_onnx=baseline.onnx_bytes, device=inputs.train_device)
        except KeyboardInterrupt:
            done = len(state["outcome"].evaluations) if "outcome" in state else 0
            raise Interrupted(f"interrupted while fine-tuning run {run_id}; its {done} evaluations are stored in "
                              f"{store.path}; continue with the same command plus --resume {run_id}") from None
        if not cfg.quantize_in_search:
            _check_final(final.pair, baseline.ratio, chosen_at, cfg, rep, form="final model",
                         tries=final.measured_ratios)
        if cfg.quantize:
            state["quantized"] = quantize_final(
                fp32_bytes=final.onnx_bytes, fp32_pair=final.pair, data=data, calib=calib, meter=meter,
                rounds=inputs.plan.profile.measurement.final_rounds, max_drop=cfg.int8_max_drop, rep=rep)
        q = state.get("quantized")
        int8 = q is not None and q.deployed
        if cfg.quantize_in_search:  # the search chose by the INT8 form: the deployed form must meet the target
            _check_final(q.pair if int8 else final.pair, baseline.ratio, chosen_at, cfg, rep,
                         form="final INT8 model" if int8 else f"final float model (INT8 not deployed: {q.reason})")
        # Gates judge the deployed form: the INT8 model when it is the one deployed.
        gates = state["gates"] = check_gates(
            cfg, latency_median_ms=(q.pair.candidate.median_ms if int8 else final.pair.candidate.median_ms),
            accuracy=q.check["int8_accuracy"] if int8 else final.accuracy, base_accuracy=state["base_accuracy"])
        enforce(gates)
        verify_pool = _verify_pool(cfg, inputs)
        with tempfile.TemporaryDirectory(prefix="edgeprune-deploy-") as work:
            try:
                deployment = state["deployment"] = deploy(
                    profile=inputs.profile, plan=inputs.plan, meters=baseline.meters, onnx_bytes=final.onnx_bytes,
                    search_pair=final.pair, calib=calib.numpy(), work=Path(work), tvm_problem=baseline.tvm_problem,
                    tune_trials=cfg.tune_trials, seed=cfg.seed, verify_pool=verify_pool, rep=rep)
            finally:
                if verify_pool is not None:
                    verify_pool.close()
            report = _report("ok", None, inputs, run_id, t_start, state, rep)
            out_dir = write_success(report, inputs=inputs, final=final, deployment=deployment, calib=calib,
                                    command=command, quantized=state.get("quantized"))
        store.set_status(run_id, "done")
        return CompileResult(run_id, out_dir, report.to_dict())
    except (InfeasibleTargetError, VerificationError) as e:
        if run_id is not None:
            status = ("gate_failed" if isinstance(e, GateError) else
                      "infeasible" if isinstance(e, InfeasibleTargetError) else "failed")
            store.set_status(run_id, status)
            path = write_failure(_report(status, str(e), inputs, run_id, t_start, state, rep), inputs)
            e.args = (f"{e}; report in {path}",)
        raise
    finally:
        if "baseline" in state:
            state["baseline"].meters.close()
        store.close()


def _search_and_choose(inputs, analysed, evaluator, baseline, store, run_id, state, rep):
    """The search and the final choice: (pruned model, history, candidate index, widths, how it was chosen)."""
    cfg = inputs.cfg
    prior, state["history"] = prior_for(inputs, analysed, baseline, store, run_id, rep)
    options = dict(agent_options(cfg), **({"prior": prior} if prior else {}))
    agent = state["agent"] = make_agent(cfg.agent, analysed.space, budget=cfg.budget, seed=cfg.seed,
                                        latency_ratio=baseline.ratio, **options)
    if agent.constraint == "latency" and not store.evaluations(run_id):
        check_reachable(evaluator, analysed.smallest(), baseline.ratio, rep)
    screen = None
    if cfg.latency_screen is not None:
        screen = state["screen"] = open_screen(inputs, analysed, evaluator.meter, baseline, agent, rep)
    outcome = state["outcome"] = _search(agent, evaluator, store, run_id, cfg, rep, screen)
    state["history"]["recorded"] = record_history(inputs, analysed, baseline, run_id, outcome.evaluations, rep)
    if screen is not None:
        rep.info(f"latency screen: {screen.screened} proposals predicted above "
                 f"{screen.target * (1 + screen.margin):.3f}x were not evaluated")
    selection = state["selection"] = select(outcome.evaluations, evaluator, agent, ratio=baseline.ratio,
                                            rounds=inputs.plan.profile.measurement.final_rounds)
    chosen = _check_selection(selection, outcome, baseline, cfg)
    if not selection.confirmed:
        rep.warn(f"no candidate confirmed under the target; --accept-closest: deploying candidate "
                 f"{chosen.index}, the closest")
    r = chosen.result
    rep.info(f"chosen: candidate {chosen.index}, accuracy {r.accuracy:.3f} (search subset), {r.latency_ms:.3f} ms "
             f"({r.measurement.ratio_to_baseline:.3f}x); fine-tuning")
    pruned, history = evaluator.build(chosen.candidate)
    return (pruned, history, chosen.index, chosen.candidate.widths,
            f"it was chosen at {r.measurement.ratio_to_baseline:.3f}x")


def _check_final(pair, ratio: float, chosen_at: str, cfg: CompileConfig, rep, *, form: str,
                 tries: tuple[float, ...] = ()) -> None:
    """Exit 3 (``InfeasibleTargetError``) when ``pair``'s p10 ratio misses the target ``ratio``, unless
    ``--accept-closest``, which deploys it with a warning. ``tries``: every ratio measured (the median decided)."""
    if pair.candidate.ratio_to_baseline <= ratio:
        return
    of = f", the median of {', '.join(f'{t:.3f}' for t in tries)}" if len(tries) > 1 else ""
    msg = (f"the {form} re-measured at {pair.candidate.ratio_to_baseline:.3f}x the baseline (p10{of}), above the "
           f"target {ratio:.3f}x; {chosen_at}")
    if not cfg.accept_closest:
        raise InfeasibleTargetError(f"{msg}; no artifact written (add --accept-closest to deploy it anyway)")
    rep.warn(f"{msg}; --accept-closest: deploying it")


def _search(agent, evaluator, store: RunStore, run_id: str, cfg: CompileConfig, rep, screen=None):
    try:
        return run_search(agent, evaluator, store, run_id, cfg.budget, rep, screen)
    except DeviceError as e:
        n = len(store.evaluations(run_id))
        raise DeviceError(f"{e}. {n} evaluations are stored in {store.path}; when the devices are back, continue "
                          f"with the same command plus --resume {run_id}") from None
    except KeyboardInterrupt:
        n = len(store.evaluations(run_id))
        raise Interrupted(f"interrupted; {n} evaluations are stored in {store.path}; continue with the same "
                          f"command plus --resume {run_id}") from None


def _check_selection(selection, outcome, baseline, cfg: CompileConfig):
    """The evaluation to finish, or an ``InfeasibleTargetError`` (exit 3) naming the closest one."""
    if selection.chosen is None:
        if not outcome.evaluations:
            raise InfeasibleTargetError(f"the agent {cfg.agent!r} proposed no candidate to evaluate")
        fastest = min(outcome.evaluations, key=lambda e: e.result.latency_ms)
        f = fastest.result
        raise InfeasibleTargetError(
            f"no candidate met the latency target ({baseline.ratio:.3f}x, {baseline.target_ms:.3f} ms) in "
            f"{len(outcome.evaluations)} evaluations; fastest found: {f.latency_ms:.3f} ms "
            f"({f.measurement.ratio_to_baseline:.3f}x, accuracy {f.accuracy:.3f}, widths {fastest.candidate.key})",
            fastest=f)
    if not selection.confirmed and not cfg.accept_closest:
        c = min(selection.confirmations, key=lambda c: c["confirmed_ratio"])
        raise InfeasibleTargetError(
            f"none of the {len(selection.confirmations)} most accurate feasible candidates re-measured under the "
            f"target {baseline.ratio:.3f}x with the long plan; closest: candidate {c['index']} at "
            f"{c['confirmed_ratio']:.3f}x (searched at {c['search_ratio']:.3f}x); no artifact written (add "
            f"--accept-closest to deploy it anyway)", fastest=selection.chosen.result)
    return selection.chosen


def _report(status, reason, inputs, run_id, t_start, state, rep):
    return build_report(status=status, reason=reason, run_id=run_id, inputs=inputs, t_start=t_start,
                        analysed=state.get("analysed"), baseline=state.get("baseline"),
                        base_accuracy=state.get("base_accuracy"), agent=state.get("agent"),
                        outcome=state.get("outcome"), selection=state.get("selection"), final=state.get("final"),
                        deployment=state.get("deployment"), gates=state.get("gates", ()),
                        quantized=state.get("quantized"), screen=state.get("screen"), gdp=state.get("gdp"),
                        history=state.get("history"),
                        warnings_seen=rep.warnings)


def _verify_pool(cfg: CompileConfig, inputs: Inputs):
    """``--verify-device KEY``: devices (may be emulated) that check the TVM library's numerics."""
    if not cfg.verify_device:
        return None
    from edgeprune.latency.rpc import DevicePool

    remote = inputs.plan.remote
    tracker = cfg.tracker or (remote.tracker if remote else None) or "127.0.0.1:9190"
    return DevicePool(tracker, cfg.verify_device, session_timeout_s=600)


__all__ = ["CompileResult", "compile_model", "EdgePruneError"]
