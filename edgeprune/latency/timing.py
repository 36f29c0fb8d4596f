"""Interleaved timing and its statistics, shared by the local meter and the device server (no torch).

Back-to-back medians mis-rank candidates under load (docs/design/STACK.md: Spearman 0.15–0.69). What
holds: sessions kept open, candidates and the baseline interleaved in short rounds, a low percentile (p10)
of the pooled per-run times, and ratios to the baseline measured in the same rounds. The meter also
watches its own conditions: the baseline's per-round p10 should not move much across rounds; when it does,
more rounds are measured, and a result that never settles is marked ``noisy``.

It also watches the machine's speed against the run's reference baseline (``reference_ms``). A shared
machine can slow down for seconds at a time, and not uniformly: on the 2-core build machine the smallest
ResNet-20 candidate ran at 0.38x the baseline in quiet periods and 0.52x in slow ones, which came and went
in periods of 0.02–3 s (docs/benchmarks.md, "Measuring on a shared machine"). A measurement that fell wholly
inside a slow period ranked candidates differently and failed final checks that the same model passed a
second later. So while the baseline's pooled p10 is more than ``max_drift`` above the reference, the meter
pauses ``drift_pause_s`` and measures the same rounds again (up to ``drift_chunks`` times), pooling them:
the low percentile then comes from the quiet rounds, as it does when the machine is quiet throughout.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgeprune.types import Measurement, MeasureSettings


def interleave(runners: list[Callable[[], None]], rounds: int, per_round: int, warmup: int) -> list[np.ndarray]:
    """Run each runner ``warmup`` times, then ``rounds`` rounds of ``per_round`` timed runs each, the runners
    taking turns round by round (order alternating). Returns per-run times in ms, round-major
    (``rounds * per_round`` each)."""
    for run in runners:
        for _ in range(warmup):
            run()
    times = [np.empty(rounds * per_round) for _ in runners]
    clock = time.perf_counter_ns
    for r in range(rounds):
        # Alternate the order each round so neither model always runs right after the other's cache state.
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            run, out, base = runners[i], times[i], r * per_round
            for k in range(per_round):
                t0 = clock()
                run()
                out[base + k] = clock() - t0
    return [t / 1e6 for t in times]


def round_noise(times_ms: np.ndarray, per_round: int, percentile: float) -> float:
    """Coefficient of variation of the per-round ``percentile`` of ``times_ms`` (round-major) across rounds."""
    rounds = times_ms.size // per_round
    if rounds < 2:
        return 0.0
    per = np.percentile(times_ms[: rounds * per_round].reshape(rounds, per_round), percentile, axis=1)
    return float(per.std() / per.mean())


def summarise(times_ms: np.ndarray, *, settings: MeasureSettings, rounds: int, backend: str, version: str,
              where: str, baseline_ms: np.ndarray | None = None, reference_ms: float | None = None) -> Measurement:
    """Statistics of pooled per-run times (ms); ratios and noise use the baseline's times from the same
    rounds; ``drift`` compares the baseline's percentile with the run's ``reference_ms``."""
    p10, med, p90 = np.percentile(times_ms, [settings.percentile, 50, 90])
    ratio = med_ratio = noise = drifted = None
    noisy = False
    if baseline_ms is not None:
        ratio = float(p10 / np.percentile(baseline_ms, settings.percentile))
        med_ratio = float(med / np.median(baseline_ms))
        noise = round_noise(baseline_ms, settings.runs_per_round, settings.percentile)
        drifted = drift(baseline_ms, reference_ms, settings.percentile)
        noisy = noise > settings.max_noise or (drifted is not None and drifted > settings.max_drift)
    return Measurement(median_ms=float(med), p10_ms=float(p10), p90_ms=float(p90), min_ms=float(times_ms.min()),
                       spread=float((p90 - p10) / med), repeats=int(times_ms.size), warmup=settings.warmup,
                       rounds=rounds, threads=settings.threads, backend=backend, backend_version=version,
                       where=where, ratio_to_baseline=ratio, baseline_median_ratio=med_ratio, noise=noise,
                       noisy=noisy, drift=drifted)


TimeFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


class QuietReference:
    """The machine's quiet speed for the baseline: the ``percentile`` of the per-round p10s of every round
    of the baseline measured so far in the run (the last ``keep`` rounds). Per-round values, not the lowest
    of many pooled measurements, which sits below the usual quiet speed; and over the whole run, not the
    first measurement, which may fall in a slow spell (both measured: tools/bench_measure.py)."""

    def __init__(self, per_round: int, percentile: float, *, min_rounds: int = 20, keep: int = 4000):
        self.per_round, self.percentile, self.min_rounds, self.keep = per_round, percentile, min_rounds, keep
        self._rounds = np.empty(0)

    def add(self, baseline_ms: np.ndarray) -> None:
        n = baseline_ms.size // self.per_round
        if n:
            per = np.percentile(baseline_ms[: n * self.per_round].reshape(n, self.per_round), self.percentile, axis=1)
            self._rounds = np.concatenate([self._rounds, per])[-self.keep:]

    @property
    def ms(self) -> float | None:
        if self._rounds.size < self.min_rounds:
            return None
        return float(np.percentile(self._rounds, self.percentile))


def drift(baseline_ms: np.ndarray, reference_ms: float | None, percentile: float) -> float | None:
    """How much slower the baseline ran than the run's reference: its ``percentile`` / ``reference_ms`` − 1."""
    if reference_ms is None or baseline_ms.size == 0:
        return None
    return float(np.percentile(baseline_ms, percentile) / reference_ms - 1)


def timed_until_steady(time_fn: TimeFn, rounds: int, settings: MeasureSettings, *, reference_ms: float | None = None,
                       sleep: Callable[[float], None] = time.sleep) -> tuple[np.ndarray, np.ndarray, int]:
    """Call ``time_fn(rounds)`` → (candidate ms, baseline ms), and again while the baseline's per-round
    noise exceeds ``settings.max_noise`` (up to ``max_rounds_factor × rounds`` rounds in all), or while its
    pooled percentile is more than ``max_drift`` above ``reference_ms`` (after a pause of ``drift_pause_s``,
    up to ``drift_chunks × rounds`` rounds in all). Returns the pooled (candidate ms, baseline ms, rounds
    measured)."""
    s = settings
    t_c, t_b = time_fn(rounds)
    total = rounds
    while True:
        noisy = (round_noise(t_b, s.runs_per_round, s.percentile) > s.max_noise
                 and total + rounds <= s.max_rounds_factor * rounds)
        d = drift(t_b, reference_ms, s.percentile)
        slow = d is not None and d > s.max_drift and total + rounds <= s.drift_chunks * rounds
        if not (noisy or slow):
            return t_c, t_b, total
        if slow:
            sleep(s.drift_pause_s)  # let a slow period pass rather than measure through it
        c, b = time_fn(rounds)
        t_c, t_b, total = np.concatenate([t_c, c]), np.concatenate([t_b, b]), total + rounds
