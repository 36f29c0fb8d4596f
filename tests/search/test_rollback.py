import numpy as np
import pytest

from edgeprune.search.rollback import initial_phase, narrowed_phase


def test_phase_round_trip_and_shared_ratios():
    ph = initial_phase(np.array([0, 0, 1, 2, 1]))
    x = np.array([0.2, 0.5, 0.9])
    full = ph.to_full(x)
    assert full.tolist() == pytest.approx([0.2, 0.2, 0.5, 0.9, 0.5])
    assert ph.from_full(full) == pytest.approx(x)


def test_bounds_narrow_to_the_best_strategies_with_margin_and_minimum_width():
    assign = np.array([0, 0, 1, 1])
    best = np.array([[0.30, 0.40, 0.80, 0.80],
                     [0.35, 0.50, 0.80, 0.80]])
    ph = narrowed_phase(assign, best, margin=0.05, min_width=0.1)
    assert ph.lower[0] == pytest.approx(0.25) and ph.upper[0] == pytest.approx(0.55)
    assert ph.lower[1] == pytest.approx(0.75) and ph.upper[1] == pytest.approx(0.85)  # widened to 0.1
    edge = narrowed_phase(np.array([0]), np.array([[0.99]]), margin=0.05, min_width=0.2)
    assert edge.upper[0] == 1.0 and edge.lower[0] == pytest.approx(0.8)  # shifted inside [0, 1]


def test_observations_map_into_the_expanded_space():
    coarse = initial_phase(np.array([0, 0, 0, 1, 1, 1]))
    obs_full = coarse.to_full(np.array([[0.4, 0.6], [0.5, 0.7]]))
    fine = narrowed_phase(np.array([0, 0, 1, 2, 2, 3]), obs_full)
    x = fine.from_full(obs_full)
    assert x.shape == (2, 4)
    # Mapping back gives the same full strategies: nothing measured is lost across the expansion.
    assert fine.to_full(x) == pytest.approx(obs_full)
