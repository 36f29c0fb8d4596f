"""The final choice: the most accurate feasible candidates re-measured with the long plan."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.search.agents import Agent
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.loop import most_accurate
from edgeprune.types import Evaluation

CONFIRM_TOP = 5  # feasible candidates re-measured before the final choice


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
    above the target.
    """
    pool = most_accurate(evaluations, agent)
    confirmations = []
    for e in pool[:CONFIRM_TOP]:
        m = evaluator.remeasure(e.candidate, rounds=rounds)
        confirmations.append({"index": e.index, "search_ratio": e.result.measurement.ratio_to_baseline,
                              "confirmed_ratio": m.ratio_to_baseline, "accuracy": e.result.accuracy,
                              "noise": m.noise, "noisy": m.noisy})
        if agent.constraint != "latency" or m.ratio_to_baseline <= ratio:
            return Selection(e, tuple(confirmations), True)
    if not confirmations:
        return Selection(None, (), False)
    closest = min(confirmations, key=lambda c: c["confirmed_ratio"])
    return Selection(next(e for e in pool if e.index == closest["index"]), tuple(confirmations), False)
