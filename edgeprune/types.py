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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        return cls(**d)


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["measurement"] = self.measurement.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvalResult":
        d = dict(d)
        d["measurement"] = Measurement.from_dict(d["measurement"])
        return cls(**d)
