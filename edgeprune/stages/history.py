"""History in a compile run (``--history off|auto|PATH``, ``edgeprune.history``): the prior the agent gets
before it proposes anything, and the run's evaluations recorded for later runs.

A resumed run gets exactly the rows its first session got (their keys are kept in the run store), so its
agent replays the same way even when other runs added history in between.
"""

from __future__ import annotations

from edgeprune.history import History, HistoryError, annotate, history_path, rows_of_run
from edgeprune.search.agents.base import agent_options as taken_options


def context(inputs, analysed, baseline) -> dict:
    """What makes this run's evaluations comparable with others' (see ``edgeprune.history``)."""
    from edgeprune.search.agents.rl import group_infos

    cfg, ref = inputs.cfg, baseline.reference
    return {"model": f"{inputs.model_sha256[:16]}:{cfg.data}:{cfg.search_val_samples}",
            "arch": inputs.loaded.arch or cfg.arch or "?",
            "groups": [g.to_list() for g in group_infos(analysed.space)],
            "target": inputs.profile.name,
            "conditions": {"runtime": ref.backend, "version": ref.backend_version, "threads": ref.threads,
                           "where": ref.where},
            "latency_target": baseline.ratio}


def prior_for(inputs, analysed, baseline, store, run_id: str, rep) -> tuple[list | None, dict]:
    """(rows for the agent's ``prior`` option or None, facts for the report). None when history is off,
    the agent takes no ``prior``, or there is none."""
    cfg = inputs.cfg
    path = history_path(cfg.history)
    info = {"setting": cfg.history, "path": str(path) if path else None, "rows": 0}
    taken = taken_options(cfg.agent)
    if path is None or (taken is not None and "prior" not in taken):
        if path is not None:
            info["unused"] = f"agent {cfg.agent!r} takes no history"
        return None, info
    if not path.exists() and not store.get_meta(run_id, "history_rows"):
        return None, info
    try:
        with History(path) as h:
            keys = store.get_meta(run_id, "history_rows")
            rows = h.rows(keys=keys) if keys is not None else h.rows(exclude_run=run_id)
    except HistoryError as e:
        rep.warn(f"history not used: {e}")
        return None, dict(info, error=str(e))
    if keys is None:
        store.put_meta(run_id, "history_rows", [[r["run_id"], r["idx"]] for r in rows])
    elif len(rows) < len(keys):
        rep.warn(f"history: {len(keys) - len(rows)} of the {len(keys)} rows this run started with are no longer "
                 f"in {path}; going on with {len(rows)}")
    ctx = context(inputs, analysed, baseline)
    rows = annotate(rows, model=ctx["model"], target=ctx["target"], conditions=ctx["conditions"])
    same_model = sum(r["same_model"] for r in rows)
    same_cond = sum(r["same_conditions"] for r in rows)
    info.update(rows=len(rows), runs=len({r["run_id"] for r in rows}), same_model=same_model,
                same_model_and_conditions=same_cond)
    if rows:
        rep.info(f"history: {len(rows)} evaluations of {info['runs']} earlier runs from {path} ({same_model} of "
                 f"this model, {same_cond} of them on this target and conditions)")
    return (rows or None), info


def record(inputs, analysed, baseline, run_id: str, evaluations, rep) -> int:
    """Add the run's evaluations to history (rows already there are kept); returns how many were new."""
    path = history_path(inputs.cfg.history)
    if path is None or not evaluations:
        return 0
    try:
        with History(path) as h:
            return h.add(rows_of_run(run_id, context(inputs, analysed, baseline), evaluations))
    except HistoryError as e:
        rep.warn(f"the run's evaluations were not added to history: {e}")
        return 0
