import numpy as np
import pytest
import torch

from edgeprune.errors import TargetError
from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, LocalMeter, MeasureSettings, Meter, get_backend
from edgeprune.latency.timing import round_noise, summarise, timed_until_steady
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
    meter = LocalMeter(get_backend("onnxruntime"), Artifact(base), x[:1].numpy(), MeasureSettings(rounds=6), "host")
    assert isinstance(meter, Meter)
    m_small, m_base = meter.measure(Artifact(small_bytes))
    m_self, _ = meter.measure(Artifact(base))
    # 6 rounds of 15, or a multiple when the shared machine was noisy and the meter added rounds
    assert m_small.repeats == m_small.rounds * 15 and m_small.rounds % 6 == 0 and m_small.noise is not None
    assert m_small.backend == "onnxruntime" and m_small.where == "host"
    assert m_small.ratio_to_baseline < 0.8
    assert 0.7 < m_self.ratio_to_baseline < 1.4
    assert m_base.ratio_to_baseline == pytest.approx(1.0)


def test_tvm_backend_times_compiled_models_in_the_same_rounds():
    """The TVM backend compiles each model for this CPU; a pruned ResNet-20 must measure faster than its parent."""
    base, small_bytes, x = _resnet20_and_smallest()
    settings = MeasureSettings(warmup=2, rounds=3, runs_per_round=3)
    meter = LocalMeter(get_backend("tvm"), Artifact(base), x[:1].numpy(), settings, "host")
    m_small, m_base = meter.measure(Artifact(small_bytes))
    assert m_small.backend == "tvm" and m_small.backend_version.startswith("0.27") and m_small.repeats % 9 == 0
    assert m_small.ratio_to_baseline < 0.8 and m_base.ratio_to_baseline == pytest.approx(1.0)


def test_round_noise_is_the_variation_of_per_round_percentiles():
    steady = np.tile(np.arange(1.0, 11.0), 4)  # 4 identical rounds of 10 runs
    assert round_noise(steady, 10, 10) == pytest.approx(0.0)
    drifting = np.concatenate([np.full(10, 1.0), np.full(10, 2.0)])
    assert round_noise(drifting, 10, 10) == pytest.approx(1 / 3)


def test_a_noisy_machine_gets_more_rounds_and_a_noisy_label():
    """The meter watches the baseline across rounds: while its per-round p10 moves more than max_noise it
    measures again (up to max_rounds_factor × the plan), and says so when it never settles."""
    s = MeasureSettings(runs_per_round=5, rounds=2, max_noise=0.05, max_rounds_factor=3)
    calls = []

    def always_noisy(n):  # the baseline's speed halves every other round
        calls.append(n)
        b = np.concatenate([np.full(5, 1.0 + (r % 2)) for r in range(n)])
        return b * 0.5, b

    t_c, t_b, total = timed_until_steady(always_noisy, 2, s)
    assert calls == [2, 2, 2] and total == 6 and t_b.size == 30
    m = summarise(t_c, settings=s, rounds=total, backend="b", version="1", where="x", baseline_ms=t_b)
    assert m.noisy and m.noise > 0.05 and m.rounds == 6

    calls.clear()
    t_c, t_b, total = timed_until_steady(lambda n: (calls.append(n), (np.ones(5 * n), np.ones(5 * n)))[1], 2, s)
    assert calls == [2] and total == 2
    assert not summarise(t_c, settings=s, rounds=total, backend="b", version="1", where="x", baseline_ms=t_b).noisy


def test_noise_settings_are_validated():
    with pytest.raises(ValueError):
        MeasureSettings(max_noise=0)
    with pytest.raises(ValueError):
        MeasureSettings(max_rounds_factor=0)
