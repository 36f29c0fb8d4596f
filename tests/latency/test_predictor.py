"""The latency predictor: grid interpolation, the fit, the stored table, and real ONNX Runtime kernels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgeprune.latency.backends.onnxruntime import OnnxRuntimeBackend
from edgeprune.latency.kernels import CONV, Kernel, KernelMap
from edgeprune.latency.predictor import (KernelTable, KernelTimer, LatencyPredictor, TableConditions, _axis,
                                         within)
from edgeprune.model.prune import analyse
from tests.conftest import tiny_resnet

SHAPE = (3, 32, 32)
COND = TableConditions("fakebox", "onnxruntime", "1.0", 1, "test")


def synthetic(k: Kernel) -> float:
    """An affine-in-(cin, cout, cin·cout) kernel time (ms): bilinear interpolation is exact for it."""
    return 1e-3 + 2e-6 * k.cin + 3e-6 * k.cout + 4e-8 * k.cin * k.cout * k.k[0] * k.k[1] * k.h * k.w / 1024


def synthetic_predictor(model, analysis, root, grid: int = 3) -> LatencyPredictor:
    """The model's predictor over a table filled with ``synthetic`` kernel times (nothing measured)."""
    pred = LatencyPredictor.for_model(KernelMap.build(model, SHAPE, analysis), KernelTable(root, COND), grid=grid)
    for k in pred.missing():
        pred.table.add(k, synthetic(k))
    return pred


@pytest.fixture()
def setup(tmp_path):
    model = tiny_resnet()
    analysis = analyse(model, SHAPE, round_to=8)
    kmap = KernelMap.build(model, SHAPE, analysis)
    table = KernelTable(tmp_path, COND)
    pred = LatencyPredictor.for_model(kmap, table, grid=3)
    for k in pred.missing():
        table.add(k, synthetic(k))
    return model, analysis, kmap, pred, tmp_path


def test_the_grid_interpolates_off_grid_widths_exactly_for_a_bilinear_cost(setup):
    _, analysis, kmap, pred, _ = setup
    assert any(len(g.cin) < len(analysis.groups[0].choices) for g in pred.grids)  # some widths are off-grid
    rng = np.random.default_rng(0)
    for _ in range(5):
        widths = [g.width(rng.uniform(0, 1)) for g in analysis.groups]
        exact = sum(synthetic(k) for k in kmap.kernels(widths))
        assert pred.kernel_sum(widths) == pytest.approx(exact, rel=1e-9)


def test_the_fit_recovers_a_known_relation_and_predicts_ratios(setup):
    _, analysis, _, pred, _ = setup
    rng = np.random.default_rng(1)
    cands = [tuple(g.width(rng.uniform(0, 1)) for g in analysis.groups) for _ in range(6)]
    pred.fit([(w, 0.05 + 1.7 * pred.kernel_sum(w)) for w in cands])
    assert (pred.a, pred.b, pred.fitted) == (pytest.approx(0.05), pytest.approx(1.7), True)
    w = cands[0]
    assert pred.predict_ratio(w) == pytest.approx((0.05 + 1.7 * pred.kernel_sum(w))
                                                  / (0.05 + 1.7 * pred.kernel_sum(pred.full_widths())))
    with pytest.raises(ValueError, match="two measured"):
        pred.fit([(cands[0], 1.0)])


def test_a_power_relation_is_recovered_and_chosen_over_a_line_by_leave_one_out_error(setup):
    _, analysis, _, pred, _ = setup
    rng = np.random.default_rng(2)
    cands = [tuple(g.width(rng.uniform(0, 1)) for g in analysis.groups) for _ in range(8)]
    pred.fit([(w, 0.3 * pred.kernel_sum(w) ** 1.4) for w in cands])
    assert (pred.form, pred.a, pred.b) == ("power", pytest.approx(0.3), pytest.approx(1.4))
    assert pred.loo["power"] < 1e-9 < pred.loo["linear"]
    w = cands[0]
    assert pred.predict_ratio(w) == pytest.approx((pred.kernel_sum(w) / pred.kernel_sum(pred.full_widths())) ** 1.4)
    assert "^1.400" in pred.formula() and pred.to_dict()["form"] == "power"
    # A straight line with an intercept stays a line; too few samples to choose from: a line.
    pred.fit([(w, 0.05 + 1.7 * pred.kernel_sum(w)) for w in cands])
    assert (pred.form, pred.a, pred.b) == ("linear", pytest.approx(0.05), pytest.approx(1.7))
    pred.fit([(w, 0.3 * pred.kernel_sum(w) ** 1.4) for w in cands[:3]])
    assert pred.form == "linear" and pred.loo == {}
    pred.fit([(w, 0.3 * pred.kernel_sum(w) ** 1.4) for w in cands[:3]], form="power")
    assert (pred.form, pred.b) == ("power", pytest.approx(1.4))
    with pytest.raises(ValueError, match="positive"):
        pred.fit([(cands[0], 1.0), (cands[1], -1.0)], form="power")
    with pytest.raises(ValueError, match="unknown fit form"):
        pred.fit([(cands[0], 1.0), (cands[1], 2.0)], form="cubic")


def test_the_table_persists_and_a_line_cut_by_a_kill_is_measured_again(setup):
    model, analysis, kmap, pred, root = setup
    n = len(pred.table)
    lines = pred.table.path.read_text().splitlines()
    assert json.loads(lines[0])["conditions"]["runtime"] == "onnxruntime"
    pred.table.path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # the last kernel half written
    again = LatencyPredictor.for_model(kmap, KernelTable(root, COND), grid=3)
    assert len(again.table) == n - 1 and len(again.missing()) == 1
    other = LatencyPredictor.for_model(kmap, KernelTable(root, TableConditions("fakebox", "onnxruntime", "1.0", 2,
                                                                                 "test")), grid=3)
    assert len(other.table) == 0  # another thread count is another table


def test_axes_span_the_space_in_aligned_steps():
    axis = _axis(8, 64, 5, 8)
    assert axis[0] == 8 and axis[-1] == 64 and len(axis) == 5 and all(v % 8 == 0 for v in axis)
    assert _axis(16, 16, 5, 8) == (16,)


def test_within_counts_relative_errors():
    acc = within([1.0, 1.2, 0.5], [1.0, 1.0, 1.0])
    assert acc["within"] == pytest.approx(1 / 3) and acc["max_error"] == pytest.approx(0.5)


def test_real_onnx_runtime_kernels_order_by_size_and_fit_real_measurements(tmp_path):
    """Against the real runtime: a 64→64 3×3 conv at 32×32 (38 MMACs) takes longer than an 8→8 1×1 at 8×8
    (4 kMACs); the tiny ResNet's smallest candidate is predicted faster than the full model."""
    timer = KernelTimer(OnnxRuntimeBackend(), runs=40, warmup=5)
    big = Kernel(CONV, 64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, 32, 32)
    small = Kernel(CONV, 8, 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, 8, 8)
    times = {k.key: ms for k, ms, _ in timer.time([big, small])}
    assert times[big.key] > 5 * times[small.key] > 0
    model = tiny_resnet()
    analysis = analyse(model, SHAPE, round_to=8)
    pred = LatencyPredictor.for_model(KernelMap.build(model, SHAPE, analysis), KernelTable(tmp_path, COND), grid=3)
    assert pred.calibrate(timer) == len(pred.table) > 0 and not pred.missing()
    smallest = tuple(g.choices[0] for g in analysis.groups)
    assert pred.predict_ratio(smallest) < 0.9
