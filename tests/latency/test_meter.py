import numpy as np
import pytest
import torch

from edgeprune.errors import TargetError
from edgeprune.export.onnx import export_verified
from edgeprune.latency import LatencyMeter, MeasureSettings, get_backend
from edgeprune.latency.meter import summarise
from edgeprune.model.prune import analyse, prune
from edgeprune.model.zoo import resnet20
from edgeprune.types import Measurement

SHAPE = (3, 32, 32)


def test_summarise_statistics_and_ratios():
    s = MeasureSettings(percentile=10)
    t = np.arange(1, 101, dtype=float)  # 1..100 ms
    m = summarise(t, settings=s, rounds=4, backend="b", version="1", where="here", baseline_ms=t * 2)
    assert m.median_ms == pytest.approx(50.5) and m.p10_ms == pytest.approx(10.9)
    assert m.ratio_to_baseline == pytest.approx(0.5) and m.baseline_median_ratio == pytest.approx(0.5)
    assert Measurement.from_dict(m.to_dict()) == m


def test_settings_are_validated():
    with pytest.raises(ValueError):
        MeasureSettings(rounds=0)
    with pytest.raises(ValueError):
        MeasureSettings(percentile=80)


def test_unknown_backend():
    with pytest.raises(TargetError, match="onnxruntime"):
        get_backend("nope")


def _resnet20_and_smallest():
    """ONNX bytes of a seeded ResNet-20 and of its narrowest pruning (~1/10 of the MACs), and inputs."""
    model = resnet20().eval()
    x = torch.randn(4, *SHAPE)
    base, _, _ = export_verified(model, SHAPE, x)
    a = analyse(model, SHAPE)
    small, _ = prune(model, SHAPE, a, tuple(g.choices[0] for g in a.groups))
    return base, export_verified(small, SHAPE, x)[0], x


def test_interleaved_measurement_ranks_a_much_smaller_model_faster():
    """Correctness of the meter, not a speed test: a model with ~1/10 of the MACs must not be measured
    slower than its parent, and the parent against itself must come out near 1."""
    base, small_bytes, x = _resnet20_and_smallest()
    meter = LatencyMeter(get_backend("onnxruntime"), base, x[:1].numpy(), MeasureSettings(rounds=6), "host")
    m_small, m_base = meter.measure(small_bytes)
    m_self, _ = meter.measure(base)
    assert m_small.repeats == 6 * 15 and m_small.backend == "onnxruntime" and m_small.where == "host"
    assert m_small.ratio_to_baseline < 0.8
    assert 0.7 < m_self.ratio_to_baseline < 1.4
    assert m_base.ratio_to_baseline == pytest.approx(1.0)


def test_tvm_backend_times_compiled_models_in_the_same_rounds():
    """The TVM backend compiles each model for this CPU; a pruned ResNet-20 must measure faster than its parent."""
    base, small_bytes, x = _resnet20_and_smallest()
    settings = MeasureSettings(warmup=2, rounds=3, runs_per_round=3)
    meter = LatencyMeter(get_backend("tvm"), base, x[:1].numpy(), settings, "host")
    m_small, m_base = meter.measure(small_bytes)
    assert m_small.backend == "tvm" and m_small.backend_version.startswith("0.27") and m_small.repeats == 9
    assert m_small.ratio_to_baseline < 0.8 and m_base.ratio_to_baseline == pytest.approx(1.0)
