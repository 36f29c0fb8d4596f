"""``edgeprune calibrate``: the kernel table a model needs on a target, the model's fit, and its accuracy.

1. Measure the kernels of the model's layers on their channel grids (``latency.predictor``), appending to
   the (target, runtime, version, threads) table; kernels already there, from this model or another, are
   not measured again.
2. Measure whole random candidates of the search space the usual way (interleaved with the baseline,
   ``repeats`` times, the median ratio), alternating between the fit set and the held-back set so a drift in
   the machine's conditions falls on both alike. Each is appended to ``models/<signature>.samples.jsonl`` as
   it is measured: a killed calibration resumes without measuring it again.
3. Fit the latency to ``Σ kernels`` on the fit set (linear or power, ``LatencyPredictor.fit``) and report,
   on the held-back set, how many predicted ratios fall within ±10% of the measured ones — for the kernel
   sum alone, for each form's fit and for the chosen one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from edgeprune.config import CompileConfig
from edgeprune.errors import TargetError
from edgeprune.export.onnx import export_verified
from edgeprune.latency.artifact import Artifact
from edgeprune.latency.base import get_backend
from edgeprune.latency.kernels import KernelMap
from edgeprune.latency.predictor import (KernelTable, KernelTimer, LatencyPredictor, TableConditions,
                                         FORMS, append_jsonl, calibration_dir, read_jsonl, within)
from edgeprune.latency.where import open_meters, runtimes_for
from edgeprune.model.prune import prune
from edgeprune.progress import Reporter
from edgeprune.search.agents.random import random_keep
from edgeprune.stages.analyse import analyse_model
from edgeprune.stages.load import load


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` did: the table and fit files, kernels measured now and in all, and the predictor's
    accuracy on the held-back candidates (``within``'s dicts), kernel sum alone, fitted (the form chosen on the
    fit set), and each form's fit."""

    model: str
    target: str
    where: str
    runtime: str
    table: str
    fit_file: str
    kernels_measured: int
    kernels_in_table: int
    fit: dict
    kernel_only: dict
    fitted: dict
    holdout: list  # [{"widths", "measured", "kernel_only", "fitted"}]
    by_form: dict  # {form: held-back accuracy of that form's fit} (``fitted`` is the chosen form's)

    def to_dict(self) -> dict:
        return asdict(self)


def table_version(runtime: str, backend) -> str:
    """The runtime version a kernel table holds for. TVM's kernels are edgeprune's own default schedule,
    so its tables also carry that schedule's version: tables timed with another schedule (TVM's
    unscheduled lowering, before it) are not reused. Kernels are compiled with the target's tuning database
    where it has records (``compile.tune.database_for``), so a table also names the database's size: once
    more kernels are tuned, the table is timed again."""
    if runtime == "tvm":
        from edgeprune.compile.schedule import SCHEDULE_VERSION
        from edgeprune.compile.tune import database_for
        from edgeprune.compile.tuning_db import RECORDS

        version = f"{backend.version()}+{SCHEDULE_VERSION}"
        settings = getattr(backend, "settings", None)
        db = database_for(settings) if settings is not None else None
        if db is not None:
            records = sum(1 for line in (db / RECORDS).read_text().splitlines() if line.strip())
            version += f"+db{db.name}.{records}"
        return version
    return backend.version()


def predictor_for(model, shape, analysis, cond: TableConditions, *, root=None, grid: int = 9,
                  align: int = 8) -> LatencyPredictor:
    """The predictor of ``model`` over ``analysis`` with the table for ``cond`` (kernels not measured yet:
    ``.missing()``), with the model's stored fit when a calibration wrote one."""
    kmap = KernelMap.build(model, shape, analysis)
    pred = LatencyPredictor.for_model(kmap, KernelTable(calibration_dir(root), cond), grid=grid, align=align)
    fit_file = pred.table.dir / "models" / f"{kmap.signature()}.json"
    if fit_file.is_file():
        try:
            stored = json.loads(fit_file.read_text())["fit"]
            pred.a, pred.b, pred.fitted = float(stored["a_ms"]), float(stored["b"]), bool(stored["fitted"])
            pred.form = stored.get("form", "linear")  # fits stored before the power form were all linear
        except (KeyError, ValueError, json.JSONDecodeError):
            pass  # an unreadable fit is made again by the next calibration; the kernel sum still predicts
    return pred


def calibrate(cfg: CompileConfig, *, root=None, grid: int = 9, fit_samples: int = 12, holdout: int = 30,
              repeats: int = 3, seed: int = 0, rep: Reporter | None = None, opener=open_meters) -> Calibration:
    """Calibrate ``cfg.model`` on ``cfg.target`` (see the module docstring). ``root``: the calibration folder
    (default ``calibration_dir()``)."""
    rep = rep or Reporter()
    inputs = load(cfg, rep)
    if inputs.plan.remote is not None:
        raise TargetError("edgeprune calibrate measures kernels on this machine only: kernel tables over TVM "
                          "RPC are not built yet; run it on the device itself, or pass --measure-on host for a "
                          "stand-in table (labelled as such)")
    analysed = analyse_model(inputs, rep)
    model, shape, profile = inputs.loaded.model, inputs.shape, inputs.plan.profile
    calib = inputs.data.calib[0][: cfg.calib_samples]
    base_bytes, _, _ = export_verified(model, shape, calib[:4])
    meters = opener(inputs.plan, runtimes_for(inputs.profile), Artifact(base_bytes, label="baseline"),
                    calib[:1].numpy(), None, rep, target=inputs.profile)
    try:
        runtime = meters.search_runtime
        backend = get_backend(runtime, profile)
        threads = profile.measurement.threads
        cond = TableConditions(inputs.profile.name, runtime, table_version(runtime, backend), threads,
                               inputs.plan.where, inputs.plan.stand_in)
        pred = predictor_for(model, shape, analysed.analysis, cond, root=root, grid=grid, align=profile.round_to)
        pred.a, pred.b, pred.fitted, pred.form = 0.0, 1.0, False, "linear"
        todo = len(pred.missing())
        rep.info(f"kernel table {pred.table.path}: {len(pred.table)} kernels stored, {todo} to measure "
                 f"({len(pred.grids)} layers, grid {grid})")
        step = max(1, todo // 10)
        measured = pred.calibrate(KernelTimer(backend, threads=threads),
                                  progress=lambda n, total, k, ms: n % step == 0 and rep.info(
                                      f"kernels {n}/{total}: {k.key} {ms * 1e3:.1f} µs"))
        kernel_a = pred.a
        reference = meters.search.baseline()
        fit_file = pred.table.dir / "models" / f"{pred.kmap.signature()}.json"
        sample_file = fit_file.with_suffix(".samples.jsonl")
        stored = {r["key"]: r for r in read_jsonl(sample_file)}  # a cut line: measured again
        rng = np.random.default_rng(seed)
        space = analysed.space
        roles, f, h = [], fit_samples, holdout
        while f or h:  # alternate fit / held-back, so a drift in the machine's conditions falls on both alike
            if f and (len(roles) % 2 == 0 or not h):
                roles.append("fit")
                f -= 1
            else:
                roles.append("holdout")
                h -= 1
        plan = []
        for role in roles:
            _, keep = random_keep(rng, space.dim)
            plan.append((role, space.candidate(keep.tolist(), origin=f"calibration {role}")))
        rows = []
        for n, (role, cand) in enumerate(plan, 1):
            row = stored.get(cand.key)
            if row is None:
                pruned, _ = prune(model, shape, analysed.analysis, cand.widths)
                onnx_bytes, _, _ = export_verified(pruned, shape, calib[:4])
                ratios = [meters.search.measure(Artifact(onnx_bytes, label=cand.key)).candidate.ratio_to_baseline
                          for _ in range(repeats)]
                row = {"key": cand.key, "widths": list(cand.widths), "role": role,
                       "ratio": float(np.median(ratios)), "ratios": ratios, "baseline_p10_ms": reference.p10_ms}
                append_jsonl(sample_file, row)
            rows.append({**row, "role": role})
            if n % 5 == 0:
                rep.info(f"candidates measured {n}/{len(plan)}")
        full = pred.full_widths()
        fit_rows = [r for r in rows if r["role"] == "fit"]
        hold_rows = [r for r in rows if r["role"] == "holdout"]
        kernel_only = [pred.predict_ratio(r["widths"]) for r in hold_rows]
        # The baseline is a sample too: its ratio is 1 by definition, in every round.
        fit_set = [(full, reference.p10_ms)] + [(tuple(r["widths"]), r["ratio"] * reference.p10_ms) for r in fit_rows]
        measured_h = [r["ratio"] for r in hold_rows]
        by_form = {}
        for form in FORMS:  # each form's held-back accuracy, for the record (the choice does not see these)
            try:
                pred.fit(fit_set, form=form)
            except ValueError:
                continue
            by_form[form] = within([pred.predict_ratio(r["widths"]) for r in hold_rows], measured_h)
        pred.fit(fit_set)
        fitted = [pred.predict_ratio(r["widths"]) for r in hold_rows]
        result = Calibration(
            model=str(cfg.model), target=inputs.profile.name, where=inputs.plan.where, runtime=runtime,
            table=str(pred.table.path), fit_file=str(fit_file), kernels_measured=measured,
            kernels_in_table=len(pred.table), fit={**pred.to_dict(), "kernel_only_a_ms": kernel_a},
            kernel_only=within(kernel_only, measured_h), fitted=within(fitted, measured_h), by_form=by_form,
            holdout=[{"widths": r["widths"], "measured": m, "kernel_only": k, "fitted": f}
                     for r, m, k, f in zip(hold_rows, measured_h, kernel_only, fitted)])
        fit_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = fit_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"model": str(cfg.model), "conditions": cond.__dict__, "fit": result.fit,
                                   "kernel_only": result.kernel_only, "fitted": result.fitted}, indent=2))
        tmp.replace(fit_file)
        return result
    finally:
        meters.close()


def run_predictor(inputs, analysed, meter, rep, *, why: str):
    """The latency predictor of a compile run's model for the search runtime's kernel table; kernels it
    lacks are measured now (ONNX Runtime on this machine: seconds), else a clear error naming ``why``."""
    from edgeprune.errors import EdgePruneError

    cfg, plan = inputs.cfg, inputs.plan
    runtime = meter.runtime
    backend = get_backend(runtime, plan.profile)
    cond = TableConditions(inputs.profile.name, runtime, table_version(runtime, backend),
                           plan.profile.measurement.threads, plan.where, plan.stand_in)
    pred = predictor_for(inputs.loaded.model, inputs.shape, analysed.analysis, cond, root=cfg.calibration_dir,
                         align=plan.profile.round_to)
    missing = pred.missing()
    if missing:
        if plan.remote is not None or runtime != "onnxruntime":
            raise EdgePruneError(
                f"{why}: the kernel table {pred.table.path} lacks {len(missing)} kernels of this model and they "
                f"cannot be measured here ({runtime}{' over TVM RPC' if plan.remote else ''}); run edgeprune "
                f"calibrate on the target first")
        rep.info(f"latency predictor: measuring {len(missing)} kernels into {pred.table.path}")
        pred.calibrate(KernelTimer(backend, threads=plan.profile.measurement.threads))
    return pred


def open_screen(inputs, analysed, meter, baseline, agent, rep):
    """The latency screen of a compile run (``--latency-screen``), fitted on the run's measured evaluations
    as they come (``search.screen``)."""
    from edgeprune.errors import EdgePruneError
    from edgeprune.search.screen import LatencyScreen

    if getattr(agent, "constraint", "latency") != "latency" or not hasattr(agent, "tell_screened"):
        raise EdgePruneError(f"--latency-screen: agent {agent.name!r} does not take screened proposals "
                             f"(tell_screened) or is not constrained by latency")
    pred = run_predictor(inputs, analysed, meter, rep, why="--latency-screen")
    return LatencyScreen(pred, baseline.ratio, float(inputs.cfg.latency_screen), baseline.reference.p10_ms)
