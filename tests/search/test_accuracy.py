"""The search accuracy: the sequential early-stop test, on ONNX Runtime and in the candidate evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, LocalMeter, get_backend
from edgeprune.model.evaluate import accuracy
from edgeprune.model.prune import analyse
from edgeprune.search.accuracy import EarlyStop, ort_predictor, search_accuracy
from edgeprune.search.evaluate import CandidateEvaluator
from edgeprune.search.space import SearchSpace
from edgeprune.targets import load_target
from edgeprune.types import MeasureSettings
from tests.conftest import tiny_resnet


def oracle(correct: np.ndarray, classes: int = 10):
    """A predictor whose image ``i`` (its first feature holds i) is right exactly where ``correct[i]``."""
    def predict(xb):
        idx = xb[:, 0].astype(int)
        logits = np.zeros((len(xb), classes), dtype=np.float32)
        logits[np.arange(len(xb)), np.where(correct[idx], 0, 1)] = 1.0
        return logits
    return predict


def images(n):
    return np.arange(n, dtype=np.float32)[:, None], np.zeros(n, dtype=np.int64)


def test_bound_stops_only_what_is_clearly_below():
    e = EarlyStop(every=200, z=3.0)
    assert e.clearly_below(100, 200, 1000, 0.9)  # 50% seen, incumbent 90%
    assert not e.clearly_below(170, 200, 1000, 0.9)  # 85%: within three standard errors of 90%
    assert e.clearly_below(170 * 4, 800, 1000, 0.9)  # 85% after 800 of 1000: the rest cannot make up 5 points
    assert not e.clearly_below(100, 200, 1000, None)  # no incumbent yet
    assert not e.clearly_below(0, 1000, 1000, 0.9)  # nothing left to save
    assert not EarlyStop(enabled=False).clearly_below(0, 200, 1000, 0.9)
    with pytest.raises(ValueError):
        EarlyStop(every=0)


def test_search_accuracy_counts_exactly_and_stops_at_a_look():
    rng = np.random.default_rng(0)
    x, y = images(1000)
    good = rng.random(1000) < 0.9
    full = search_accuracy(oracle(good), x, y, bar=None)
    assert (full.images, full.total) == (1000, 1000) and not full.stopped_early
    assert full.accuracy == pytest.approx(good.mean())
    bad = rng.random(1000) < 0.4
    r = search_accuracy(oracle(bad), x, y, bar=0.9, batch=64)
    assert r.stopped_early and r.images == 200  # the first look, whatever the batch size
    assert r.accuracy == pytest.approx(bad[:200].mean())
    above = search_accuracy(oracle(good), x, y, bar=float(good.mean()) - 0.01)
    assert above.images == 1000  # above the bar: never stopped (here its first 200 images are at 85%)


def test_a_candidate_as_good_as_the_incumbent_is_rarely_stopped():
    """On a finite subset, a candidate whose accuracy equals the bar (exactly k of N right, in random
    order) must be stopped in well under 1% of the orders (the docstring's bound: ≤ 0.6%)."""
    rng = np.random.default_rng(1)
    x, y = images(1000)
    stops = 0
    trials = 2000
    for t in range(trials):
        p = rng.uniform(0.3, 0.97)
        correct = np.zeros(1000, dtype=bool)
        correct[: int(round(p * 1000))] = True
        rng.shuffle(correct)
        r = search_accuracy(oracle(correct), x, y, bar=float(correct.mean()))
        stops += r.stopped_early
    assert stops / trials < 0.01
    # and one 10 points worse is nearly always stopped
    worse = 0
    for t in range(200):
        correct = rng.random(1000) < 0.75
        worse += search_accuracy(oracle(correct), x, y, bar=0.85).stopped_early
    assert worse / 200 > 0.95


def test_onnx_runtime_accuracy_matches_torch():
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    x = torch.randn(300, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::3] = (y[::3] + 1) % 10  # a third wrong on purpose
    onnx_bytes, _, _ = export_verified(model, (3, 32, 32), x[:4])
    r = search_accuracy(ort_predictor(onnx_bytes, threads=2), x.numpy(), y.numpy(), bar=None)
    assert r.images == 300
    assert r.accuracy == pytest.approx(accuracy(model, x, y), abs=1 / 300)  # argmax ties aside
    assert r.accuracy == pytest.approx(2 / 3, abs=0.01)


def _evaluator(model, val, calib, **kw):
    shape = (3, 32, 32)
    profile = load_target("host")
    base, _, _ = export_verified(model, shape, calib[:4])
    settings = MeasureSettings(warmup=1, rounds=2, runs_per_round=2)
    meter = LocalMeter(get_backend("onnxruntime", profile), Artifact(base), calib[:1].numpy(), settings,
                       profile.where())
    ref = meter.baseline()
    analysis = analyse(model, shape, round_to=8)
    ev = CandidateEvaluator(model, shape, analysis, val, calib, meter, 0.9, ref.p10_ms, **kw)
    return ev, SearchSpace(analysis.groups)


def _task(n: int):
    """A tiny ResNet, ``n`` random images labelled by its own predictions, 100 calibration images."""
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    x = torch.randn(n, 3, 32, 32)
    calib = torch.randn(100, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, calib


def test_evaluator_stops_a_candidate_clearly_below_the_incumbent():
    """Through the real candidate evaluator (ONNX Runtime accuracy and latency): with no incumbent every
    image counts; with an unreachable incumbent the candidate stops at the first look, and its accuracy
    is that of the images seen."""
    model, x, y, calib = _task(600)
    ev, space = _evaluator(model, (x, y), calib, bn_samples=50, early=EarlyStop(every=200))
    cand = space.candidate([0.5] * space.dim)
    free = ev.evaluate_many([cand])[0]
    assert free.accuracy_images == 600 and 0 <= free.accuracy < 0.95  # half the channels: not the model itself
    stopped = ev.evaluate_many([cand], bar=1.0)[0]
    assert stopped.accuracy_images == 200
    pruned, _ = ev.build(cand)
    assert stopped.accuracy == pytest.approx(accuracy(pruned, x[:200], y[:200]), abs=1 / 200)
    # the torch path gives the same full accuracy as ONNX Runtime
    ev_t, _ = _evaluator(model, (x, y), calib, bn_samples=50, accuracy_on="torch")
    assert ev_t.evaluate(cand).accuracy == pytest.approx(free.accuracy, abs=2 / 600)
    # and BN statistics come from the first bn_samples calibration images only
    pruned, _ = ev.build(cand)
    bn = next(m for m in pruned.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 1  # 50 images, one batch of at most 100


def test_evaluator_with_quantize_measures_and_scores_the_int8_model():
    """--quantize-in-search: the candidate's accuracy is the INT8 model's in ONNX Runtime (same quantization,
    same images), and a quantize stage is timed."""
    from edgeprune.export.quantize import quantize_int8

    model, x, y, calib = _task(200)
    ev, space = _evaluator(model, (x, y), calib, bn_samples=50, quantize=True, quantize_calib=32)
    cand = space.candidate([0.5] * space.dim)
    r = ev.evaluate(cand)
    assert "quantize" in r.seconds and r.accuracy_images == 200
    pruned, _ = ev.build(cand)
    fp32, _, _ = export_verified(pruned, (3, 32, 32), calib[:4])
    int8 = quantize_int8(fp32, calib[:32].numpy())
    expect = search_accuracy(ort_predictor(int8, 2), x.numpy(), y.numpy()).accuracy
    assert r.accuracy == pytest.approx(expect, abs=1e-9)
    assert ev.remeasure(cand, rounds=2).ratio_to_baseline > 0
