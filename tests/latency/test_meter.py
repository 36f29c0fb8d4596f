import numpy as np
import pytest
import torch

from edgeprune.errors import TargetError
from edgeprune.export.onnx import export_verified
from edgeprune.latency import Artifact, LocalMeter, MeasureSettings, Meter, get_backend
from edgeprune.latency.timing import QuietReference, round_noise, summarise, timed_until_steady
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


def _slow_then_quiet(slow_calls: int, calls: list):
    """A fake machine: the first ``slow_calls`` chunks run 20% slower (candidate and baseline alike,
    plus a fixed 0.3 ms on the candidate: small models suffer most), then it is quiet."""
    def time_fn(n):
        calls.append(n)
        slow = len(calls) <= slow_calls
        b = np.full(5 * n, 1.2 if slow else 1.0)
        return b * 0.4 + (0.3 if slow else 0.0), b
    return time_fn


def test_a_slow_spell_is_waited_out_and_pooled_with_the_quiet_rounds():
    s = MeasureSettings(runs_per_round=5, rounds=2, max_drift=0.05, drift_chunks=8, drift_pause_s=0.5)
    calls, pauses = [], []
    t_c, t_b, total = timed_until_steady(_slow_then_quiet(2, calls), 2, s, reference_ms=1.0, sleep=pauses.append)
    assert calls == [2, 2, 2] and pauses == [0.5, 0.5] and total == 6
    m = summarise(t_c, settings=s, rounds=total, backend="b", version="1", where="x", baseline_ms=t_b,
                  reference_ms=1.0)
    # The pooled p10 comes from the quiet rounds: the ratio the quiet machine has, not the slow spell's.
    assert m.ratio_to_baseline == pytest.approx(0.4) and m.drift == pytest.approx(0.0) and not m.noisy

    # Without a reference (or with the check off) the slow spell decides the ratio: 0.78/1.2 = 0.65.
    calls.clear()
    t_c, t_b, total = timed_until_steady(_slow_then_quiet(2, calls), 2, s, reference_ms=None, sleep=pauses.append)
    assert calls == [2] and np.percentile(t_c, 10) / np.percentile(t_b, 10) == pytest.approx(0.65)


def test_a_machine_that_stays_slow_is_measured_drift_chunks_times_and_labelled_noisy():
    s = MeasureSettings(runs_per_round=5, rounds=2, max_drift=0.05, drift_chunks=3, drift_pause_s=0.0)
    calls = []
    t_c, t_b, total = timed_until_steady(_slow_then_quiet(99, calls), 2, s, reference_ms=1.0, sleep=lambda _: None)
    assert calls == [2, 2, 2] and total == 6
    m = summarise(t_c, settings=s, rounds=total, backend="b", version="1", where="x", baseline_ms=t_b,
                  reference_ms=1.0)
    assert m.drift == pytest.approx(0.2) and m.noisy
    with pytest.raises(ValueError):
        MeasureSettings(max_drift=0)
    with pytest.raises(ValueError):
        MeasureSettings(drift_chunks=0)


def test_the_quiet_reference_is_the_low_percentile_of_per_round_p10s():
    q = QuietReference(per_round=5, percentile=10, min_rounds=4)
    q.add(np.full(15, 1.0))
    assert q.ms is None  # 3 rounds: too few
    q.add(np.concatenate([np.full(5 * 8, 1.3), np.full(5 * 2, 1.0)]))  # a slow spell, then quiet
    assert q.ms == pytest.approx(1.0)  # 5 of 13 rounds quiet: the quiet speed, not the spell's


def test_the_local_meter_measures_against_the_run_s_quiet_reference():
    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(4, *SHAPE)
    base, _, _ = export_verified(model, SHAPE, x)
    s = MeasureSettings(warmup=2, rounds=3, runs_per_round=5, final_rounds=24, drift_pause_s=0.01)
    meter = LocalMeter(get_backend("onnxruntime"), Artifact(base), x[:1].numpy(), s, "host")
    cand, b = meter.measure(Artifact(base))  # a first measurement measures the reference first
    assert meter.reference.ms is not None and cand.drift is not None and cand.rounds % 3 == 0
    assert Measurement.from_dict(cand.to_dict()) == cand


class _ScriptedMeter:
    """Logic only: a meter whose successive measurements have the given p10 ratios (the real meters are
    tested above; this checks the retry rule, which has to see a miss on demand)."""

    def __init__(self, ratios):
        self.ratios, self.calls = list(ratios), 0

    def measure(self, artifact, *, rounds=None):
        from edgeprune.latency.meter import Pair

        r = self.ratios[self.calls]
        self.calls += 1
        m = Measurement(r, r, r, r, 0.0, 1, 0, rounds or 1, 1, "b", "1", "here", ratio_to_baseline=r)
        return Pair(m, Measurement(1, 1, 1, 1, 0.0, 1, 0, rounds or 1, 1, "b", "1", "here"))


def test_a_final_miss_is_measured_twice_more_and_the_median_decides():
    from edgeprune.latency.meter import measure_confirmed

    art = Artifact(b"", label="final")
    met = _ScriptedMeter([0.55])
    pair, tries = measure_confirmed(met, art, rounds=3, ratio=0.6)
    assert met.calls == 1 and tries == (0.55,) and pair.candidate.ratio_to_baseline == 0.55
    slow_once = _ScriptedMeter([0.61, 0.55, 0.57])
    pair, tries = measure_confirmed(slow_once, art, rounds=3, ratio=0.6)
    assert slow_once.calls == 3 and tries == (0.61, 0.55, 0.57) and pair.candidate.ratio_to_baseline == 0.57
    truly_slow = _ScriptedMeter([0.61, 0.59, 0.64])
    pair, _ = measure_confirmed(truly_slow, art, rounds=3, ratio=0.6)
    assert pair.candidate.ratio_to_baseline == 0.61  # one low measurement does not pass a model that misses
