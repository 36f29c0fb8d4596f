"""Plain value types passed between mechanism, policy and measurement."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One pruning strategy: kept output channels per prunable group, in the order of the analysis.

    ``widths[i]`` is a channel count (a multiple of the target's ``round_to`` or the group's full width).
    ``keep`` is the agent's continuous point in [0, 1]^d that produced it (kept for the agent, not for pruning).
    """

    widths: tuple[int, ...]
    keep: tuple[float, ...] = ()
    origin: str = ""

    @property
    def key(self) -> str:
        return ",".join(str(w) for w in self.widths)

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "keep": list(self.keep), "origin": self.origin}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Candidate":
        return cls(tuple(int(w) for w in d["widths"]), tuple(float(k) for k in d.get("keep", ())), d.get("origin", ""))


@dataclass(frozen=True)
class Measurement:
    """A latency measurement of one model in milliseconds, with the conditions it was taken under.

    ``p10_ms`` of the pooled per-run times is the robust statistic used for ranking; ``median_ms`` and
    ``p90_ms`` describe the spread. ``ratio_to_baseline`` compares ``p10_ms`` with the baseline measured
    interleaved in the same rounds (None when no baseline was measured alongside).
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    spread: float  # (p90 - p10) / median, dimensionless
    repeats: int  # timed runs pooled
    warmup: int
    rounds: int
    threads: int
    backend: str
    backend_version: str
    where: str  # e.g. "host (x86_64, local)"
    ratio_to_baseline: float | None = None
    baseline_median_ratio: float | None = None  # median / baseline median, same run
    # Conditions: the coefficient of variation of the baseline's per-round p10 across the rounds (how much
    # the machine's speed moved while measuring), and whether it stayed above the settings' ``max_noise``
    # even after the meter added rounds (the number then ranks candidates less reliably).
    noise: float | None = None
    noisy: bool = False
    # How much slower the baseline ran in these rounds than the run's reference baseline (p10 / reference
    # − 1; latency.timing); above the settings' ``max_drift`` after the meter's pauses it counts as noisy.
    drift: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        return cls(**d)


@dataclass(frozen=True)
class MeasureSettings:
    """Timing plan (a target profile's ``[measurement]``). Each model gets ``warmup`` untimed runs, then
    ``rounds`` × ``runs_per_round`` timed runs, the models taking turns round by round; ``final_rounds`` is
    used for the final comparison. When the baseline's per-round p10 varies across rounds by more than
    ``max_noise`` (coefficient of variation), the meter measures the same number of rounds again, up to
    ``max_rounds_factor`` times the plan, and marks the result ``noisy`` if it never settles. While the
    baseline runs more than ``max_drift`` slower than the run's reference baseline, the meter pauses
    ``drift_pause_s`` seconds and measures the rounds again, up to ``drift_chunks`` times the plan."""

    threads: int = 1
    warmup: int = 20
    rounds: int = 8
    runs_per_round: int = 15
    final_rounds: int = 40
    percentile: float = 10.0
    max_noise: float = 0.10
    max_rounds_factor: int = 4
    max_drift: float = 0.05
    drift_chunks: int = 8
    drift_pause_s: float = 0.25

    def __post_init__(self):
        if self.threads < 1 or self.warmup < 0 or self.rounds < 1 or self.runs_per_round < 1 or self.final_rounds < 1:
            raise ValueError(f"invalid measurement settings: {self}")
        if not 0 <= self.percentile <= 50:
            raise ValueError("percentile must be in [0, 50]")
        if self.max_noise <= 0 or self.max_rounds_factor < 1:
            raise ValueError("max_noise must be > 0 and max_rounds_factor at least 1")
        if self.max_drift <= 0 or self.drift_chunks < 1 or self.drift_pause_s < 0:
            raise ValueError("max_drift must be > 0, drift_chunks at least 1 and drift_pause_s ≥ 0")


@dataclass(frozen=True)
class EvalResult:
    """What evaluating one candidate produced. ``latency_ms`` is the estimate compared with the target:
    the baseline's reference latency times the candidate's interleaved ratio to it."""

    accuracy: float  # fraction in [0, 1] on the search validation subset, after BN recalibration
    latency_ms: float
    measurement: Measurement
    macs: int
    params: int
    feasible: bool
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    # Validation images ``accuracy`` was computed on: fewer than the search subset when the candidate was
    # stopped early as clearly below the incumbent (search.accuracy); 0 for runs stored before this was kept.
    accuracy_images: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measurement"] = self.measurement.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
        d = dict(d)
        d["measurement"] = Measurement.from_dict(d["measurement"])
        return cls(**d)


@dataclass(frozen=True)
class Evaluation:
    """One evaluated candidate of a run: its position in the run, and whether it came from the run store
    (a resumed run) instead of being measured in this session."""

    index: int
    candidate: Candidate
    result: EvalResult
    reused: bool = False
