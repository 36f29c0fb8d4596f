"""Interleaved latency measurement that can be trusted on a shared machine.

Back-to-back medians mis-rank candidates under load (STACK.md: Spearman 0.15–0.69). What holds:
sessions kept open, candidates and the baseline interleaved in short rounds, a low percentile (p10)
of the pooled per-run times, and ratios to the baseline measured in the same rounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgeprune.latency.base import LatencyBackend
from edgeprune.types import Measurement


@dataclass(frozen=True)
class MeasureSettings:
    """Timing plan. Each model gets ``warmup`` untimed runs, then ``rounds`` × ``runs_per_round`` timed
    runs, the models taking turns round by round. ``final_rounds`` is used for the final comparison."""

    threads: int = 1
    warmup: int = 20
    rounds: int = 8
    runs_per_round: int = 15
    final_rounds: int = 40
    percentile: float = 10.0

    def __post_init__(self):
        if self.threads < 1 or self.warmup < 0 or self.rounds < 1 or self.runs_per_round < 1 or self.final_rounds < 1:
            raise ValueError(f"invalid measurement settings: {self}")
        if not 0 <= self.percentile <= 50:
            raise ValueError("percentile must be in [0, 50]")


def summarise(times_ms: np.ndarray, *, settings: MeasureSettings, rounds: int, backend: str, version: str,
              where: str, baseline_ms: np.ndarray | None = None) -> Measurement:
    """Statistics of pooled per-run times (ms); ratios use the baseline's times from the same rounds."""
    p10, med, p90 = np.percentile(times_ms, [settings.percentile, 50, 90])
    ratio = med_ratio = None
    if baseline_ms is not None:
        ratio = float(p10 / np.percentile(baseline_ms, settings.percentile))
        med_ratio = float(med / np.median(baseline_ms))
    return Measurement(median_ms=float(med), p10_ms=float(p10), p90_ms=float(p90), min_ms=float(times_ms.min()),
                       spread=float((p90 - p10) / med), repeats=int(times_ms.size), warmup=settings.warmup,
                       rounds=rounds, threads=settings.threads, backend=backend, backend_version=version,
                       where=where, ratio_to_baseline=ratio, baseline_median_ratio=med_ratio)


def _interleave(runners: list[Callable[[], None]], rounds: int, per_round: int, warmup: int) -> list[np.ndarray]:
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


class LatencyMeter:
    """Measures models against one baseline whose session stays open for the whole run.

    ``example`` is one real input (1×C×H×W float32). ``where`` labels every Measurement.
    """

    def __init__(self, backend: LatencyBackend, baseline_bytes: bytes, example: np.ndarray,
                 settings: MeasureSettings, where: str):
        self.backend, self.settings, self.where, self.example = backend, settings, where, example
        self._version = backend.version()
        self._baseline = backend.open(baseline_bytes, example, threads=settings.threads)

    def _summ(self, t, rounds, base=None) -> Measurement:
        return summarise(t, settings=self.settings, rounds=rounds, backend=self.backend.name,
                         version=self._version, where=self.where, baseline_ms=base)

    def baseline(self, rounds: int | None = None) -> Measurement:
        """The baseline alone, ``rounds`` rounds (default: ``final_rounds``)."""
        rounds = rounds or self.settings.final_rounds
        (t,) = _interleave([self._baseline], rounds, self.settings.runs_per_round, self.settings.warmup)
        return self._summ(t, rounds)

    def measure(self, model_bytes: bytes, *, rounds: int | None = None) -> tuple[Measurement, Measurement]:
        """Time ``model_bytes`` interleaved with the baseline. Returns (candidate, baseline) Measurements;
        the candidate's ``ratio_to_baseline`` is p10 / baseline p10 from the same rounds."""
        run = self.backend.open(model_bytes, self.example, threads=self.settings.threads)
        return self.measure_runner(run, rounds=rounds)

    def measure_runner(self, run: Callable[[], None], *, rounds: int | None = None) -> tuple[Measurement, Measurement]:
        """As ``measure`` for a model already opened (e.g. a compiled library): ``run`` does one inference."""
        s = self.settings
        rounds = rounds or s.rounds
        t_c, t_b = _interleave([run, self._baseline], rounds, s.runs_per_round, s.warmup)
        return self._summ(t_c, rounds, t_b), self._summ(t_b, rounds, t_b)
