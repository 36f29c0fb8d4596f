"""The search loop: ask the agent, evaluate, store, tell — resumable from the run store."""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgeprune.search.agents import Agent
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.screen import LatencyScreen
from edgeprune.search.store import RunStore
from edgeprune.types import Candidate, EvalResult, Evaluation


# Screened proposals allowed per unit of budget before they count against the ask limit (4 per unit).
SCREEN_CAP = 20


@dataclass(frozen=True)
class SearchOutcome:
    """Every evaluation of the run in order (stored ones first on resume), how many were measured in this
    session, and the search loop's wall time (agent overhead included), in seconds."""

    evaluations: tuple[Evaluation, ...]
    evaluated_now: int
    seconds: float


def most_accurate(evaluations, agent: Agent) -> list[Evaluation]:
    """The agent's feasible evaluations (``bo-flops`` constrains MACs), most accurate first (ties: faster)."""
    return sorted((e for e in evaluations if agent.feasible(e.result)),
                  key=lambda e: (-e.result.accuracy, e.result.latency_ms))


def run_search(agent: Agent, evaluator: CandidateEvaluator, store: RunStore, run_id: str, budget: int,
               reporter, screen: LatencyScreen | None = None) -> SearchOutcome:
    """Ask/evaluate/tell until ``budget`` distinct candidates are evaluated or the agent stops.

    A resumed run first tells the agent every stored evaluation, in order, without re-measuring it; agents
    derive their next proposal from their seed and what they were told, so the search continues where it
    stopped. A candidate whose widths were already evaluated reuses that result and costs no budget
    (bounded, so an agent stuck on one point cannot loop forever). With several devices, an agent's batch
    (``agent.batch`` proposals) is measured in parallel. Each batch is evaluated against the best feasible
    accuracy so far, so a candidate clearly below it stops its accuracy early (``search.accuracy``).

    With a ``screen`` (and an agent that takes ``tell_screened``), a proposal predicted far over the
    latency target is not evaluated (``search.screen``); screened proposals are stored with the number of
    evaluations before them, and a resumed run tells them again in the same order.
    """
    # The screen predicts latency: agents constrained by MACs (bo-flops) are not screened.
    screening = (screen is not None and hasattr(agent, "tell_screened")
                 and getattr(agent, "constraint", "latency") == "latency")
    evaluations: list[Evaluation] = []
    evaluated_now = 0
    t0 = time.perf_counter()
    seen: dict[str, EvalResult] = {}
    stored = store.evaluations(run_id)
    reporter.search_start(budget, len(stored))

    def record(e: Evaluation) -> None:
        seen.setdefault(e.candidate.key, e.result)
        if screening:
            screen.observe(e.candidate, e.result)
        agent.tell(e.candidate, e.result)
        evaluations.append(e)
        ranked = most_accurate(evaluations, agent)
        reporter.search_step(e.index, e.candidate, e.result, e.reused, ranked[0].result if ranked else None)

    pending_screened = list(store.screened(run_id)) if screening else []

    def replay_screened(upto: int) -> None:
        while pending_screened and pending_screened[0][0] <= upto:
            _, cand, predicted = pending_screened.pop(0)
            agent.tell_screened(cand, predicted)
            screen.screened += 1

    try:
        for idx, cand, result in stored[:budget]:
            replay_screened(idx)
            record(Evaluation(idx, cand, result, True))
        replay_screened(len(evaluations))
        asks = 0
        parallel = agent.batch if evaluator.meter.parallel > 1 else 1
        while len(evaluations) < budget and asks < 4 * budget:
            batch: list[Candidate] = []
            while len(batch) < min(parallel, budget - len(evaluations)) and asks < 4 * budget:
                asks += 1
                cand = agent.ask()
                if cand is None:
                    break
                if cand.key in seen:
                    agent.tell(cand, seen[cand.key])
                    continue
                if screening and (predicted := screen.rejects(cand)) is not None:
                    agent.tell_screened(cand, predicted)
                    store.append_screened(run_id, len(evaluations), cand, predicted)
                    screen.screened += 1
                    # A screened proposal costs microseconds, not an evaluation: it gets its own, larger cap.
                    asks -= screen.screened <= SCREEN_CAP * budget
                    continue
                if all(c.key != cand.key for c in batch):
                    batch.append(cand)
            if not batch:
                break
            # The incumbent's accuracy: a candidate clearly below it is evaluated on fewer images.
            ranked = most_accurate(evaluations, agent)
            bar = ranked[0].result.accuracy if ranked else None
            for cand, result in zip(batch, evaluator.evaluate_many(batch, bar=bar)):
                idx = len(evaluations)
                store.append(run_id, idx, cand, result)
                evaluated_now += 1
                record(Evaluation(idx, cand, result, False))
    finally:
        reporter.search_end()
    return SearchOutcome(tuple(evaluations), evaluated_now, round(time.perf_counter() - t0, 2))
