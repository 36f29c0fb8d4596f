"""The final choice: confirmations with headroom first, then any that met the target."""

from __future__ import annotations

from edgeprune.search.select import select
from edgeprune.types import Candidate, Evaluation
from tests.search.test_screen import result


class Agent:
    constraint = "latency"

    def feasible(self, r):
        return r.feasible


class Evaluator:
    """Re-measures each candidate at a given ratio (by its first width)."""

    def __init__(self, ratios):
        self.ratios = ratios

    def remeasure(self, candidate, rounds):
        return result(0.5, self.ratios[candidate.widths[0]]).measurement


def evaluations(accs):
    return [Evaluation(i, Candidate((i,)), result(a, 0.45)) for i, a in enumerate(accs)]


def test_the_first_confirmation_with_headroom_wins():
    s = select(evaluations([0.9, 0.8]), Evaluator({0: 0.499, 1: 0.48}), Agent(), ratio=0.5, rounds=1)
    assert s.confirmed and s.chosen.index == 1 and len(s.confirmations) == 2


def test_without_headroom_the_first_that_met_the_target_wins():
    s = select(evaluations([0.9, 0.8]), Evaluator({0: 0.499, 1: 0.51}), Agent(), ratio=0.5, rounds=1)
    assert s.confirmed and s.chosen.index == 0


def test_none_confirmed_gives_the_closest_unconfirmed():
    s = select(evaluations([0.9, 0.8]), Evaluator({0: 0.53, 1: 0.51}), Agent(), ratio=0.5, rounds=1)
    assert not s.confirmed and s.chosen.index == 1
