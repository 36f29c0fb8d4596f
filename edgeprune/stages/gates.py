"""CI gates on the final model: thresholds a release must meet, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprune.config import CompileConfig
from edgeprune.errors import InfeasibleTargetError


class GateError(InfeasibleTargetError):
    """The final model misses a CI gate (``--max-latency-ms``, ``--min-accuracy``, ``--max-accuracy-drop``)."""


@dataclass(frozen=True)
class GateResult:
    """One gate: its name, the threshold, the final model's value, and whether it passed."""

    name: str
    threshold: float
    value: float
    passed: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "value": self.value, "passed": self.passed}

    def __str__(self) -> str:
        if self.name == "max_latency_ms":
            return f"latency {self.value:.3f} ms (median) > --max-latency-ms {self.threshold:g}"
        if self.name == "min_accuracy":
            return f"accuracy {self.value:.2%} < --min-accuracy {self.threshold:.2%}"
        return f"accuracy drop {self.value * 100:.2f} points > --max-accuracy-drop {self.threshold * 100:.2f} points"


def check_gates(cfg: CompileConfig, *, latency_median_ms: float, accuracy: float, base_accuracy: float) -> tuple[GateResult, ...]:
    """Every gate the user set, evaluated on the final model (latency in ms, accuracies as fractions)."""
    out = []
    if cfg.max_latency_ms is not None:
        out.append(GateResult("max_latency_ms", cfg.max_latency_ms, latency_median_ms,
                              latency_median_ms <= cfg.max_latency_ms))
    if cfg.min_accuracy is not None:
        out.append(GateResult("min_accuracy", cfg.min_accuracy, accuracy, accuracy >= cfg.min_accuracy))
    if cfg.max_accuracy_drop is not None:
        drop = base_accuracy - accuracy
        out.append(GateResult("max_accuracy_drop", cfg.max_accuracy_drop, drop, drop <= cfg.max_accuracy_drop))
    return tuple(out)


def enforce(gates: tuple[GateResult, ...]) -> None:
    """Raise ``GateError`` (exit 3) naming every missed gate."""
    failed = [g for g in gates if not g.passed]
    if failed:
        raise GateError("the final model misses the CI gate(s): " + "; ".join(map(str, failed)) + "; no artifact written")
