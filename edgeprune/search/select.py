"""The final choice: the most accurate feasible candidates re-measured with the long plan."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.search.agents import Agent
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.loop import most_accurate
from edgeprune.types import Evaluation

CONFIRM_TOP = 5  # feasible candidates re-measured before the final choice
# Headroom a confirmation should leave: the fine-tuned model is measured once more, and the same model
# re-measured moves by about a percent here (a quick start confirmed at 0.499x re-measured at 0.502x).
CONFIRM_HEADROOM = 0.01


@dataclass(frozen=True)
class Selection:
    """The chosen evaluation and the re-measurements behind the choice.

    ``confirmed`` is True when the chosen candidate's long re-measurement met the latency target (always
    True for agents whose constraint is not latency). When none confirmed, ``chosen`` is the candidate that
    came closest (or None when nothing was feasible at all) and ``confirmed`` is False.
    """

    chosen: Evaluation | None
    confirmations: tuple[dict, ...]
    confirmed: bool


def select(evaluations, evaluator: CandidateEvaluator, agent: Agent, *, ratio: float, rounds: int) -> Selection:
    """Re-measure the most accurate feasible candidates with ``rounds`` rounds and choose the first whose
    confirmed ratio still meets ``ratio`` (the target as a fraction of the baseline).

    The search keeps whatever measured under the target once; near the boundary that favours candidates
    whose one measurement happened to be low (the winner's curse), and the final re-measurement then lands
    above the target. So the first candidate confirmed with ``CONFIRM_HEADROOM`` below the target wins;
    when none has that headroom, the first that confirmed under the target at all.
    """
    pool = most_accurate(evaluations, agent)
    confirmations = []
    for e in pool[:CONFIRM_TOP]:
        m = evaluator.remeasure(e.candidate, rounds=rounds)
        confirmations.append({"index": e.index, "search_ratio": e.result.measurement.ratio_to_baseline,
                              "confirmed_ratio": m.ratio_to_baseline, "accuracy": e.result.accuracy,
                              "noise": m.noise, "noisy": m.noisy})
        if agent.constraint != "latency" or m.ratio_to_baseline <= ratio * (1 - CONFIRM_HEADROOM):
            return Selection(e, tuple(confirmations), True)
    if not confirmations:
        return Selection(None, (), False)
    met = next((c for c in confirmations if c["confirmed_ratio"] <= ratio), None)
    if met is not None:
        return Selection(next(e for e in pool if e.index == met["index"]), tuple(confirmations), True)
    closest = min(confirmations, key=lambda c: c["confirmed_ratio"])
    return Selection(next(e for e in pool if e.index == closest["index"]), tuple(confirmations), False)
