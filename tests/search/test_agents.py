"""Agent logic in isolation, on a synthetic objective (a fake evaluator: latency = mean(keep)²)."""

import numpy as np
import pytest

from edgeprune.errors import EdgePruneError
from edgeprune.model.prune import PrunableGroup
from edgeprune.search.agents import make_agent
from edgeprune.search.space import SearchSpace
from edgeprune.types import EvalResult, Measurement

SPACE = SearchSpace(tuple(PrunableGroup(f"g{i}", 64, tuple(range(8, 65, 8))) for i in range(4)))


def fake_result(candidate, target):
    lat = float(np.mean([w / 64 for w in candidate.widths]) ** 2)
    m = Measurement(lat, lat, lat, lat, 0.0, 1, 0, 1, 1, "fake", "0", "test", lat, lat)
    return EvalResult(accuracy=float(np.mean(candidate.widths)) / 64, latency_ms=lat, measurement=m,
                      macs=0, params=0, feasible=lat <= target)


def run(agent, target, budget):
    seen = []
    for _ in range(budget):
        c = agent.ask()
        if c is None:
            break
        r = fake_result(c, target)
        agent.tell(c, r)
        seen.append((c, r))
    return seen


def test_uniform_bisects_to_the_widest_feasible_uniform_width():
    target = 0.3  # feasible iff keep <= sqrt(0.3) = 0.548 -> widest allowed width 32 of 64 (0.5)
    seen = run(make_agent("uniform", SPACE, budget=20, seed=0, latency_ratio=target), target, 20)
    best = max((c for c, r in seen if r.feasible), key=lambda c: c.widths[0])
    assert best.widths == (32,) * 4
    assert len(seen) < 10  # stops by itself once the width grid is resolved
    assert len({c.key for c, _ in seen}) == len(seen)  # never asks the same widths twice


def test_random_is_deterministic_per_seed_and_covers_the_space():
    a = run(make_agent("random", SPACE, budget=30, seed=1, latency_ratio=0.5), 0.5, 30)
    b = run(make_agent("random", SPACE, budget=30, seed=1, latency_ratio=0.5), 0.5, 30)
    c = run(make_agent("random", SPACE, budget=30, seed=2, latency_ratio=0.5), 0.5, 30)
    assert [x.key for x, _ in a] == [x.key for x, _ in b] != [x.key for x, _ in c]
    assert any(r.feasible for _, r in a) and any(not r.feasible for _, r in a)


def test_unknown_agent():
    with pytest.raises(EdgePruneError, match="uniform"):
        make_agent("nope", SPACE, budget=1, seed=0, latency_ratio=0.5)
