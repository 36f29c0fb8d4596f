"""MetaSchedule tuning of a compiled model, with a persistent database reused across runs.

The database lives in ``~/.cache/edgeprune/tuning/<target hash>/`` (override: ``EDGEPRUNE_TUNING_DB``);
MetaSchedule matches records by the structural hash of each task, so an identical layer (same shapes)
in a later run, of this model or another, reuses what was tuned. When every task already has a record,
only the trials the database does not hold yet are run (none when it holds as many as asked): a tuning
stopped half-way resumes, and asking for more trials later adds them. Trials are timed on this machine
for a local target, or on the device itself through TVM RPC (``remote``: ``compile.tune_remote``),
built here for the device.
Before tuning, every task without a record gets the default schedule as its first, measured record
(``seed_default_schedules``): tuned never ends slower than untuned, task by task.

Builders: MetaSchedule's default build imports ``tvm.s_tir.tensor_intrin`` in every builder worker (20–29 s
here idle, past the stock 30 s timeout, so every candidate failed: docs/design/STACK.md; under load past
any timeout, since a timed-out worker is replaced by one that imports again), and its builder starts new
workers for every batch of trials. ``build_trial`` is that build without the import: the intrinsics are
needed where a schedule tensorizes (the search, in this process), not to lower a scheduled module. The
builder also gets ``BUILDER_TIMEOUT_S``.

In this process the same import is made cheap (``import_tensor_intrinsics``): it parses ~250 TVMScript
functions, each taking ``inspect.stack()``, and ``inspect.getmodule`` scans every loaded module for every
frame whose file is not a module's (import machinery, Cython): with torch loaded, 44 s of the 60 s that
tuning a tiny ResNet took with 8 trials (78 s in the CLI); memoised per file name while importing, 5 s.

Worker processes: the builders and the runner are TVM popen workers. They are started with
``edgeprune.children.die_with_parent`` (the kernel kills them when this process ends, however it ends),
and the ones still alive when tuning returns or fails are terminated.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from edgeprune.compile.tvm import fused
from edgeprune.targets.profile import TvmSettings

BUILDER_TIMEOUT_S = 120.0
RUNNER_TIMEOUT_S = 60.0


def database_dir(settings: TvmSettings) -> Path:
    from edgeprune.compile.tvm import make_target

    from edgeprune.compile.tuning_db import root

    target = make_target(settings)
    key = hashlib.sha256(json.dumps(str(target), sort_keys=True).encode()).hexdigest()[:16]
    return root() / key


@dataclass(frozen=True)
class TuneResult:
    trials_requested: int
    tasks: int
    tasks_from_database: int  # tasks that already had a record before this run
    seconds: float
    database: str
    cost_model: str
    seeded: int = 0  # tasks given the default schedule, measured where trials are, as their first record
    timed_on: dict | None = None  # the devices trials were timed on ({"tracker", "key"}); None: this machine
    seed_failures: tuple[str, ...] = ()  # why a task's default schedule could not be timed on the device
    trials_before: int = 0  # trials the database already held for these tasks
    trials_run: int = 0  # trials asked of MetaSchedule in this run (the request less trials_before, or all of it)

    def to_dict(self) -> dict:
        return {"trials_requested": self.trials_requested, "tasks": self.tasks,
                "tasks_from_database": self.tasks_from_database, "seeded_with_default_schedule": self.seeded,
                "seconds": round(self.seconds, 1), "database": self.database, "cost_model": self.cost_model,
                "timed_on": self.timed_on or "this machine", "seed_failures": list(self.seed_failures),
                "trials_in_database_before": self.trials_before, "trials_run": self.trials_run}


def _cost_model() -> str:
    try:
        import xgboost  # noqa: F401

        return "xgb"
    except ImportError:
        return "random"


def build_trial(mod, target, _params=None):
    """MetaSchedule's default builder function (``s_tir.meta_schedule.builder.default_build``) without its
    import of every tensor intrinsic (runs in the builder workers)."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod), target=target)


_INTRINSICS_IMPORTED = False


def import_tensor_intrinsics() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (MetaSchedule's ``TuneContext`` imports it on first use) with
    ``inspect.getmodule`` memoised per file name for objects without ``__module__`` (frames, code) while it
    runs. Why it is safe: the module found for a frame's file only serves to read that frame's source line
    (TVMScript's ``inspect.stack()``); a module is in ``sys.modules`` while its top level runs, so the first
    lookup of a file finds it, and later lookups give the same answer."""
    global _INTRINSICS_IMPORTED
    if _INTRINSICS_IMPORTED:
        return
    import inspect
    import sys

    if "tvm.s_tir.tensor_intrin" not in sys.modules:
        original, memo = inspect.getmodule, {}

        def getmodule(obj, _filename=None):
            if _filename is None or hasattr(obj, "__module__"):
                return original(obj, _filename)
            if _filename not in memo:
                memo[_filename] = original(obj, _filename)
            return memo[_filename]

        inspect.getmodule = getmodule
        try:
            import tvm.s_tir.tensor_intrin  # noqa: F401  (registers the intrinsics)
        finally:
            inspect.getmodule = original
    _INTRINSICS_IMPORTED = True


def _tune_with_workers(ms, mod, target, work: Path, db, trials: int, n_tasks: int, cost_model: str, seed: int,
                       *, remote=None, settings: TvmSettings | None = None, tasks=None) -> tuple:
    """``tune_relax`` with its builder and runner worker processes tied to this process: none outlives it.
    ``remote`` (a ``tune_remote.RemoteTuning``): trials built for ``settings``' machine and timed on its
    devices; the tasks without a record (``tasks``) are first seeded with the default schedule, timed there.
    Returns (database, tasks seeded, why seeding failed for the others)."""
    from edgeprune.children import descendants, is_popen_worker, kill_descendants, popen_workers_die_with_parent

    import_tensor_intrinsics()
    before = {p.pid for p in descendants()}
    runner, seeded, failures = None, 0, []
    try:
        with popen_workers_die_with_parent():
            if remote is not None:
                from edgeprune.compile import tune_remote

                build, runner = tune_remote.builder(ms, settings), tune_remote.runner(ms, remote)
                seeded = seed_default_schedules(db, tasks or [], target,
                                                measure=tune_remote.measure_with(ms, build, runner, target, failures))
            else:
                build = ms.builder.LocalBuilder(timeout_sec=BUILDER_TIMEOUT_S, f_build=build_trial)
                runner = ms.runner.LocalRunner(timeout_sec=RUNNER_TIMEOUT_S)  # starts its worker pool now
            db = ms.relax_integration.tune_relax(
                mod, params={}, target=target, work_dir=str(work), max_trials_global=trials,
                num_trials_per_iter=min(64, max(1, trials // max(1, n_tasks) or 1) * 4),
                builder=build, runner=runner, database=db, cost_model=cost_model, seed=seed)
            return db, seeded, failures
    finally:
        if runner is not None:  # the runner's pool otherwise lives until the object is garbage-collected
            runner.pool.shutdown(wait=False)
        kill_descendants(only=is_popen_worker, exclude=before)


def tune(model_proto, input_shape: tuple[int, ...], settings: TvmSettings, trials: int, *, seed: int = 0,
         db_dir: str | Path | None = None, remote=None):
    """Tune and compile. Returns (``relax.VMExecutable``, ``TuneResult``). ``remote``
    (``tune_remote.RemoteTuning``): trials timed on the devices of a tracker's key instead of here (check
    the device first: ``deploy.stage.check_tuning_device``)."""
    import logging

    import tvm.s_tir.meta_schedule as ms

    from edgeprune.compile.tvm import _tvm, import_onnx, make_target

    _tvm()
    t0 = time.perf_counter()
    target = make_target(settings)
    raw = import_onnx(model_proto, input_shape)
    mod = fused(raw, target)
    work = Path(db_dir) if db_dir else database_dir(settings)
    work.mkdir(parents=True, exist_ok=True)
    db = ms.database.JSONDatabase(work_dir=str(work))
    tasks = ms.relax_integration.extract_tasks(mod, target)
    known = sum(1 for t in tasks if has_record(db, t.dispatched[0]))
    # Trials already measured for these tasks (each task's records but its first, the seeded default): a
    # tuning stopped half-way (Ctrl-C: records are committed as they are measured) or asked for more trials
    # later runs only the rest.
    before = sum(max(0, record_count(db, t.dispatched[0]) - 1) for t in tasks)
    remaining = max(0, trials - before) if known == len(tasks) else trials
    seeded = seed_default_schedules(db, tasks, target) if remaining > 0 and remote is None else 0
    cost_model = _cost_model()
    # MetaSchedule logs every task table and trial at INFO on the console; the log files in the database
    # folder keep them. Progress is reported by the caller.
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    failures: list = []
    if remaining > 0:
        db, n, failures = _tune_with_workers(ms, mod, target, work, db, remaining, len(tasks), cost_model, seed,
                                             remote=remote, settings=settings, tasks=tasks)
        seeded += n
    ex = compile_with_database(db, raw, target)
    return ex, TuneResult(trials, len(tasks), known, time.perf_counter() - t0, str(work), cost_model, seeded,
                          remote.to_dict() if remote is not None else None, tuple(failures),
                          trials_before=before, trials_run=remaining)


def record_count(db, workload_mod) -> int:
    """How many measured records the database holds for this task (0 when it has none)."""
    if not db.has_workload(workload_mod):
        return 0
    return len(db.get_top_k(db.commit_workload(workload_mod), 1 << 20))


def has_record(db, workload_mod) -> bool:
    """Whether the database holds a measured schedule for this task (a workload alone is not one: a
    tuning that measured nothing for a task still commits its workload)."""
    return bool(db.has_workload(workload_mod) and db.get_top_k(db.commit_workload(workload_mod), 1))


SEED_MIN_REPEAT_MS = 20  # each of the 3 timed repeats of a seeded kernel runs at least this long


def seed_default_schedules(db, tasks, target, measure=None) -> int:
    """Give every task without a record the default schedule (``compile.schedule``; TVM's own lowering
    where the rule declines) as a record, with its run time measured. Returns how many.

    ``measure([(mod, args_info), ...]) -> [seconds per repeat, or None where it failed]``: where the
    kernels are timed (default: compiled and run here; ``tune_remote.measure_with``: built for a device and
    timed on it, all in one batch). A kernel that could not be timed gets no record (tuning still covers it).

    Why: the database's best record per task is then never slower than what ``edgeprune compile`` builds
    without tuning (8 trials of MetaSchedule's own search lost to the default schedule), and the
    evolutionary search starts from it, since it draws its first population from the database."""
    import tvm.s_tir.meta_schedule as ms
    from tvm import s_tir

    from edgeprune.compile.schedule import register_tiling

    measure = measure or _measure_here(target)
    rule, pending = register_tiling(), []
    for task in tasks:
        wmod = task.dispatched[0]
        if has_record(db, wmod):
            continue
        func = wmod["main"]
        sch = rule.apply(func, target, False)
        if sch is None:  # TVM's own lowering; the database skips records with an empty trace, so name a block
            sch = s_tir.Schedule(func)
            sch.get_child_blocks(sch.get_sblock("root"))
        pending.append((wmod, sch, ms.arg_info.ArgInfo.from_prim_func(func)))
    n = 0
    for (wmod, sch, args_info), secs in zip(pending, measure([(sch.mod, a) for _, sch, a in pending])):
        if secs:
            db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(wmod), secs, target,
                                                             args_info))
            n += 1
    return n


def _measure_here(target):
    """Compile each scheduled kernel module and time it on this machine (3 repeats of ≥ 20 ms, random inputs)."""
    import numpy as np

    from edgeprune.compile.tvm import _tvm

    tvm = _tvm()
    rng = np.random.default_rng(0)

    def measure(items) -> list:
        out = []
        for mod, args_info in items:
            args = [tvm.runtime.tensor(rng.uniform(-1, 1, [int(d) for d in a.shape]).astype(str(a.dtype)))
                    for a in args_info]
            kernel = tvm.compile(mod, target=target).jit()
            timer = kernel.time_evaluator("main", tvm.cpu(), number=1, repeat=3, min_repeat_ms=SEED_MIN_REPEAT_MS)
            out.append([float(x) for x in timer(*args).results])
        return out

    return measure


_OPEN: dict[Path, tuple[tuple, object]] = {}  # database folder → (state of its files, JSONDatabase)


def database_for(settings: TvmSettings) -> Path | None:
    """The target's tuning database when it holds at least one record, else None (also for a target that
    is not a CPU: records schedule ``llvm`` kernels only).

    Candidates in a ``runtime = "tvm"`` search and the final library are compiled with it
    (``compile.tvm.build(database=...)``), so a search ranks candidates by the latency of the code that is
    deployed: a task tuned in any earlier run (same shapes) gets its tuned schedule. To compile without
    it, point ``EDGEPRUNE_TUNING_DB`` at an empty folder."""
    from edgeprune.compile.tuning_db import RECORDS

    if settings.target.get("kind") != "llvm":
        return None
    path = database_dir(settings)
    records = path / RECORDS
    return path if records.is_file() and records.stat().st_size > 0 else None


def open_database(path: Path):
    """The ``JSONDatabase`` in ``path``, read once per process and again only when its files change
    (a search compiles hundreds of candidates against the same database)."""
    import tvm.s_tir.meta_schedule as ms

    from edgeprune.compile.tuning_db import RECORDS, WORKLOADS

    path = Path(path)
    state = tuple((f.stat().st_mtime_ns, f.stat().st_size) if f.is_file() else None
                  for f in (path / WORKLOADS, path / RECORDS))
    hit = _OPEN.get(path)
    if hit is None or hit[0] != state:
        hit = _OPEN[path] = (state, ms.database.JSONDatabase(work_dir=str(path)))
    return hit[1]


def compile_with_database(db, raw, target, stats: dict | None = None):
    """Compile ``raw`` (the Relax module as imported) with the database's best schedule for every task it
    holds and ``compile.schedule``'s default schedule for the rest. ``stats``, when given, receives
    ``kernels`` (fused TIR functions) and ``from_database`` (those a record scheduled).

    MetaSchedule's own ``compile_relax`` leaves the kernels without a record unscheduled (TVM's naive
    loops, tens of times slower than the default schedule); this is its pipeline with the default rule
    in that place. The module is fused here exactly as for task extraction (``fused``), or the fused
    functions differ from the tuned ones and no record applies."""
    import tvm.s_tir.dlight as dl
    from tvm import relax
    from tvm.relax import pipeline as stock
    from tvm.relax.transform import MetaScheduleApplyDatabase

    from edgeprune.compile.schedule import register_tiling
    from edgeprune.compile.tvm import _tvm

    tvm = _tvm()

    try:
        lower = stock.dataflow_lower_passes(target) + stock.finalize_passes(target)
    except AttributeError:  # TVM 0.27 looks these up on the cpu_generic package, which does not export them
        from tvm.relax.backend.cpu_generic import pipeline as cpu

        lower = cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)

    @tvm.transform.module_pass(opt_level=3)
    def pipeline(mod, _ctx):
        mod = MetaScheduleApplyDatabase()(fused(mod, target))
        if stats is not None:
            funcs = [f for _, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
            stats["kernels"] = len(funcs)
            stats["from_database"] = sum(1 for f in funcs if f.attrs is not None
                                         and int(f.attrs.get("tirx.is_scheduled", 0)) == 1)
        mod = dl.ApplyDefaultSchedule(register_tiling())(mod)
        return tvm.transform.Sequential(lower)(mod)

    with target, db, tvm.transform.PassContext(opt_level=3):
        return relax.build(raw, target=target, relax_pipeline=pipeline)
