"""MetaSchedule tuning of a compiled model, with a persistent database reused across runs.

The database lives in ``~/.cache/edgeprune/tuning/<target hash>/`` (override: ``EDGEPRUNE_TUNING_DB``);
MetaSchedule matches records by the structural hash of each task, so an identical layer (same shapes)
in a later run, of this model or another, reuses what was tuned. When every task already has a record
no trial is run. Tuning measures on this machine, so it is only offered for a target that is local.

Builder timeout: each builder worker spends 20–29 s importing ``tvm.s_tir.tensor_intrin`` here, past the
stock 30 s timeout, so every candidate failed (STACK.md); the builder gets ``BUILDER_TIMEOUT_S``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edgeprune.targets.profile import TvmSettings

BUILDER_TIMEOUT_S = 120.0
RUNNER_TIMEOUT_S = 60.0


def database_dir(settings: TvmSettings) -> Path:
    from edgeprune.compile.tvm import make_target

    root = Path(os.environ.get("EDGEPRUNE_TUNING_DB", Path.home() / ".cache" / "edgeprune" / "tuning"))
    target = make_target(settings)
    key = hashlib.sha256(json.dumps(str(target), sort_keys=True).encode()).hexdigest()[:16]
    return root / key


@dataclass(frozen=True)
class TuneResult:
    trials_requested: int
    tasks: int
    tasks_from_database: int  # tasks that already had a record before this run
    seconds: float
    database: str
    cost_model: str

    def to_dict(self) -> dict:
        return {"trials_requested": self.trials_requested, "tasks": self.tasks,
                "tasks_from_database": self.tasks_from_database, "seconds": round(self.seconds, 1),
                "database": self.database, "cost_model": self.cost_model}


def _cost_model() -> str:
    try:
        import xgboost  # noqa: F401

        return "xgb"
    except ImportError:
        return "random"


def _fused(mod, target):
    """Legalise and fuse to the TIR functions MetaSchedule tunes (the first half of TVM's tuning pipeline)."""
    from tvm import relax

    from edgeprune.compile.tvm import _tvm

    tvm = _tvm()
    t = relax.transform
    with target:
        return tvm.transform.Sequential([t.DecomposeOpsForInference(), t.CanonicalizeBindings(), t.LegalizeOps(),
                                         t.AnnotateTIROpPattern(), t.FoldConstant(), t.FuseOps(), t.FuseTIR()])(mod)


def tune(model_proto, input_shape: tuple[int, ...], settings: TvmSettings, trials: int, *, seed: int = 0,
         db_dir: str | Path | None = None):
    """Tune and compile. Returns (``relax.VMExecutable``, ``TuneResult``)."""
    import logging

    import tvm.s_tir.meta_schedule as ms

    from edgeprune.compile.tvm import _tvm, import_onnx, make_target

    tvm = _tvm()
    t0 = time.perf_counter()
    target = make_target(settings)
    raw = import_onnx(model_proto, input_shape)
    mod = _fused(raw, target)
    work = Path(db_dir) if db_dir else database_dir(settings)
    work.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(work))
    tasks = ms.relax_integration.extract_tasks(mod, target)
    known = sum(1 for t in tasks if db.has_workload(t.dispatched[0]))
    cost_model = _cost_model()
    # MetaSchedule logs every task table and trial at INFO on the console; the log files in the database
    # folder keep them. Progress is reported by the caller.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    if known < len(tasks) and trials > 0:
        db = ms.relax_integration.tune_relax(
            mod, params={}, target=target, work_dir=str(work), max_trials_global=trials,
            num_trials_per_iter=min(64, max(1, trials // max(1, len(tasks)) or 1) * 4),
            builder=ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S),
            runner=ms.runner.LocalRunner(timeout_sec=RUNNER_TIMEOUT_S), database=db, cost_model=cost_model,
            seed=seed)
    # compile_relax legalises and fuses itself: give it the module as imported, or the fused functions
    # it makes differ from the tuned ones and no record applies (tuned code came out as slow as untuned).
    with tvm.transform.PassContext(opt_level=3):
        ex = ms.relax_integration.compile_relax(db, raw, target, params=None)
    return ex, TuneResult(trials, len(tasks), known, time.perf_counter() - t0, str(work), cost_model)
