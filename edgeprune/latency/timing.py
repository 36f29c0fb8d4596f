"""Interleaved timing and its statistics, shared by the local meter and the device server (no torch).

Back-to-back medians mis-rank candidates under load (docs/design/STACK.md: Spearman 0.15–0.69). What
holds: sessions kept open, candidates and the baseline interleaved in short rounds, a low percentile (p10)
of the pooled per-run times, and ratios to the baseline measured in the same rounds. The meter also
watches its own conditions: the baseline's per-round p10 should not move much across rounds; when it does,
more rounds are measured, and a result that never settles is marked ``noisy``.
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
              where: str, baseline_ms: np.ndarray | None = None) -> Measurement:
    """Statistics of pooled per-run times (ms); ratios and noise use the baseline's times from the same
    rounds."""
    p10, med, p90 = np.percentile(times_ms, [settings.percentile, 50, 90])
    ratio = med_ratio = noise = None
    noisy = False
    if baseline_ms is not None:
        ratio = float(p10 / np.percentile(baseline_ms, settings.percentile))
        med_ratio = float(med / np.median(baseline_ms))
        noise = round_noise(baseline_ms, settings.runs_per_round, settings.percentile)
        noisy = noise > settings.max_noise
    return Measurement(median_ms=float(med), p10_ms=float(p10), p90_ms=float(p90), min_ms=float(times_ms.min()),
                       spread=float((p90 - p10) / med), repeats=int(times_ms.size), warmup=settings.warmup,
                       rounds=rounds, threads=settings.threads, backend=backend, backend_version=version,
                       where=where, ratio_to_baseline=ratio, baseline_median_ratio=med_ratio, noise=noise,
                       noisy=noisy)


TimeFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


def timed_until_steady(time_fn: TimeFn, rounds: int, settings: MeasureSettings) -> tuple[np.ndarray, np.ndarray, int]:
    """Call ``time_fn(rounds)`` → (candidate ms, baseline ms), and again while the baseline's per-round
    noise exceeds ``settings.max_noise``, up to ``max_rounds_factor × rounds`` rounds in all. Returns the
    pooled (candidate ms, baseline ms, rounds measured)."""
    t_c, t_b = time_fn(rounds)
    total = rounds
    while (round_noise(t_b, settings.runs_per_round, settings.percentile) > settings.max_noise
           and total + rounds <= settings.max_rounds_factor * rounds):
        c, b = time_fn(rounds)
        t_c, t_b, total = np.concatenate([t_c, c]), np.concatenate([t_b, b]), total + rounds
    return t_c, t_b, total
