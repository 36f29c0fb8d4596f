"""Screened proposals: what each agent does when told one, and the screen's refit."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprune.model.prune import analyse
from edgeprune.search.agents import make_agent
from edgeprune.search.screen import LatencyScreen
from edgeprune.search.space import SearchSpace
from edgeprune.types import Candidate, EvalResult, Measurement
from tests.conftest import tiny_resnet
from tests.latency.test_predictor import synthetic_predictor

SHAPE = (3, 32, 32)


def result(acc: float, ratio: float) -> EvalResult:
    m = Measurement(median_ms=ratio, p10_ms=ratio, p90_ms=ratio, min_ms=ratio, spread=0, repeats=1, warmup=0,
                    rounds=1, threads=1, backend="fake", backend_version="0", where="test", ratio_to_baseline=ratio)
    return EvalResult(accuracy=acc, latency_ms=ratio, measurement=m, macs=0, params=0, feasible=ratio <= 0.5)


@pytest.fixture()
def space():
    model = tiny_resnet()
    return SearchSpace.of(analyse(model, SHAPE, round_to=8))


def test_random_moves_on_after_a_screened_proposal(space):
    agent = make_agent("random", space, budget=10, seed=0, latency_ratio=0.5)
    first = agent.ask()
    agent.tell_screened(first, 0.9)
    assert agent.ask().key != first.key


def test_uniform_bisects_downwards_from_a_screened_proposal(space):
    agent = make_agent("uniform", space, budget=10, seed=0, latency_ratio=0.7)
    first = agent.ask()
    agent.tell_screened(first, 0.95)
    assert agent.ask().keep[0] < first.keep[0]


def test_bo_never_proposes_a_screened_point_again_and_models_it_as_infeasible(space):
    agent = make_agent("bo", space, budget=12, seed=0, latency_ratio=0.5)
    rng = np.random.default_rng(0)
    screened = set()
    for i in range(10):
        cand = agent.ask()
        assert cand.key not in screened
        if i % 2:  # every other proposal is screened
            agent.tell_screened(cand, 0.9)
            screened.add(cand.key)
        else:
            agent.tell(cand, result(float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.3, 0.7))))
    assert len(agent.s_keeps) == 5 and len(agent.keeps) == 5  # screened points are not accuracy observations


def test_the_screen_rejects_over_the_margin_and_refits_on_measurements(tmp_path):
    model = tiny_resnet()
    analysis = analyse(model, SHAPE, round_to=8)
    pred = synthetic_predictor(model, analysis, tmp_path)
    screen = LatencyScreen(pred, target=0.8, margin=0.1, baseline_ms=2.0)  # screens above 0.88x
    full = Candidate(tuple(pred.kmap.full))
    smallest = Candidate(tuple(pred.kmap.smallest))
    assert screen.rejects(full) == pytest.approx(1.0) and screen.rejects(smallest) is None
    # Measured latency = 0.5 ms + 3 x kernel sum: after two measurements the fit has it.
    for w in (smallest.widths, tuple(g.width(0.6) for g in analysis.groups)):
        screen.observe(Candidate(w), result(0.5, 0.5 + 3 * pred.kernel_sum(w)))
    assert pred.fitted and screen.describe()["fit_samples"] == 3
